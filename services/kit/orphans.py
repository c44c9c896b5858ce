"""`python -m services.kit.orphans PROGRAM [ARGS...]` runs PROGRAM so that
the kernel kills it when the process that started it dies, even by SIGKILL
(PR_SET_PDEATHSIG survives exec). `bmc up` starts its services and Envoys
this way: a `bmc up` killed outright leaves nothing holding the ports.

It is a separate step rather than subprocess's `preexec_fn` because that
runs Python between fork and exec in a copy of a process with gRPC threads,
whose fork handlers can abort the child."""

from __future__ import annotations

import os
import sys

from services.kit.workers import die_with_parent

PARENT = "BMC_PARENT_PID"


def command(argv: list[str]) -> list[str]:
    """`argv`, to be started with `environment()` so that it dies with this process."""
    return [sys.executable, "-m", "services.kit.orphans", *argv]


def environment() -> dict[str, str]:
    return {PARENT: str(os.getpid())}


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: python -m services.kit.orphans PROGRAM [ARGS...]")
    die_with_parent()
    if os.environ.get(PARENT) and os.getppid() != int(os.environ[PARENT]):
        sys.exit(1)  # the parent died before the kernel was told: it would never be killed
    os.execvp(sys.argv[1], sys.argv[1:])  # noqa: S606 - PROGRAM and its arguments, as given, no shell


if __name__ == "__main__":
    main()
