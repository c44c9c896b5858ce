"""A circuit breaker for calls to another service: after `threshold`
consecutive failures it fails fast for `reset_seconds`, then lets exactly
one trial call through (half-open: the others still fail fast while it is
out); the trial's success closes it, its failure opens it again."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from services.kit.errors import Unavailable
from services.kit.metrics import BREAKER_OPENED, BREAKER_STATE, BREAKER_STATES

_T = TypeVar("_T")


class CircuitBreaker:
    def __init__(self, name: str, threshold: int = 5, reset_seconds: float = 10.0, dependency: str = "") -> None:
        """`dependency` names it in the metrics (a service's name; none: not reported)."""
        self.name, self.threshold, self.reset_seconds = name, threshold, reset_seconds
        self.failures = 0
        self.opened_at: float | None = None
        self._trial = False  # a half-open trial call is out
        self._dependency = dependency
        if dependency:
            BREAKER_STATE.labels(dependency).set_function(lambda: BREAKER_STATES[self.state])

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if time.monotonic() - self.opened_at >= self.reset_seconds else "open"

    async def call(
        self, action: Callable[[], Awaitable[_T]], failure: type[BaseException] | tuple[type[BaseException], ...]
    ) -> _T:
        """Runs `action`; exceptions of type `failure` count against the breaker."""
        state = self.state
        if state == "open" or (state == "half-open" and self._trial):
            raise Unavailable(
                f"{self.name} is unavailable (circuit open after {self.failures} failures); retry shortly",
                reason="CIRCUIT_OPEN",
                metadata={"dependency": self.name},
            )
        trial = state == "half-open"
        self._trial = self._trial or trial
        try:
            result = await action()
        except failure:
            self.failures += 1
            if self.failures >= self.threshold or trial:
                self.opened_at = time.monotonic()
                if self._dependency:
                    BREAKER_OPENED.labels(self._dependency).inc()
            raise
        finally:
            if trial:
                self._trial = False
        self.failures = 0
        self.opened_at = None
        return result
