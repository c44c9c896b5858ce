"""A stub of one running service with a token minted for a role: call any
RPC as a method (`client.GetInvoice(request)`), wait for an operation."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Self

from google.longrunning import operations_pb2

from services.kit.clients import bearer, sync_channel
from services.kit.settings import Settings
from services.kit.tokens import mint_token


class Client:
    def __init__(
        self, settings: Settings, service: str, stub_type: type[Any], role: str, tenant: str = "", subject: str = ""
    ) -> None:
        self.channel = sync_channel(settings, service)
        self.stub = stub_type(self.channel)
        subject = subject or f"{role}-{tenant or 'bmc'}"
        self.metadata = bearer(mint_token(settings, subject=subject, roles=[role], tenant=tenant))

    def __getattr__(self, method: str) -> Any:
        rpc = getattr(self.stub, method)
        return lambda request, **kw: rpc(request, metadata=self.metadata, timeout=kw.pop("timeout", 30), **kw)

    def wait(self, name: str, timeout: float = 120) -> operations_pb2.Operation:
        """The operation `name` once done."""
        deadline = time.monotonic() + timeout
        while True:
            operation: operations_pb2.Operation = self.GetOperation(operations_pb2.GetOperationRequest(name=name))
            if operation.done:
                return operation
            assert time.monotonic() < deadline, f"operation {name} not done after {timeout}s"
            time.sleep(0.1)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_until(condition: Callable[[], object], timeout: float, what: str = "condition") -> None:
    """Polls `condition` until it holds; fails the test after `timeout` seconds, naming `what` was awaited."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not met within {timeout:.0f} s"
        time.sleep(0.1)
