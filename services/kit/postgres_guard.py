"""`python -m services.kit.postgres_guard PGDATA OWNER_PID` stops the embedded
PostgreSQL of PGDATA (a fast shutdown) once the process OWNER_PID, which
started it, has died, however it died (a `bmc up` killed outright left it
running, holding its memory and its data directory).

pg_ctl detaches PostgreSQL from the process that starts it, so unlike the
embedded Redis it cannot be made to die with its owner (`orphans`); and a
fast shutdown, not a kill, leaves its data needing no recovery. Standard
library only: a guard is one more process per embedded server."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path


def postmaster_pid(pgdata: Path) -> int | None:
    """The running postmaster of `pgdata`, if any."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, IndexError, ProcessLookupError):
        return None
    return pid


def stop_postgres(pgdata: Path, wait_seconds: float = 15.0) -> None:
    """A fast shutdown (open transactions rolled back), waiting for its end."""
    pid = postmaster_pid(pgdata)
    if pid is None:
        return
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: python -m services.kit.postgres_guard PGDATA OWNER_PID")
    pgdata, owner = Path(sys.argv[1]), int(sys.argv[2])
    while os.getppid() == owner:  # an orphan is adopted by another: its owner is gone
        time.sleep(0.5)
    stop_postgres(pgdata)


if __name__ == "__main__":
    main()
