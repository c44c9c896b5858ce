"""Filters built from optional conditions, with every value bound as a
`$n` parameter: only fixed SQL fragments are ever joined into the text."""

from __future__ import annotations

from typing import Any


class Where:
    def __init__(self) -> None:
        self.args: list[Any] = []
        self._clauses: list[str] = []

    def add(self, fragment: str, *values: Any) -> Where:
        """`fragment` with each `?` standing for the next of `values`."""
        parts = fragment.split("?")
        if len(parts) != len(values) + 1:
            raise ValueError(f"{fragment!r} needs {len(parts) - 1} values, got {len(values)}")
        text = parts[0]
        for value, rest in zip(values, parts[1:], strict=True):
            self.args.append(value)
            text += f"${len(self.args)}{rest}"
        self._clauses.append(text)
        return self

    def bind(self, value: Any) -> str:
        """A placeholder for a value used outside the conditions (a LIMIT)."""
        self.args.append(value)
        return f"${len(self.args)}"

    def query(self, select: str, tail: str) -> str:
        """`select`, the conditions, then `tail` (ORDER BY, LIMIT)."""
        where = f" WHERE {' AND '.join(self._clauses)}" if self._clauses else ""
        return f"{select}{where} {tail}"
