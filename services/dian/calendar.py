"""Colombian civil time: dates of registrations, periods and tariffs are
Colombian dates (UTC−5 all year, no daylight saving)."""

from __future__ import annotations

import datetime as dt

COLOMBIA = dt.timezone(dt.timedelta(hours=-5), "COT")
_pinned: dt.date | None = None


def pin(date: dt.date | None) -> None:
    """Makes `today()` answer `date` (None: the real date again). A process
    pins it once at start-up (`BMC_CALENDAR_DATE`), so that a test or a
    replay of a given day sees that day, whatever the wall clock says."""
    global _pinned
    _pinned = date


def today() -> dt.date:
    """The Colombian date now, or the pinned one."""
    return _pinned or dt.datetime.now(COLOMBIA).date()


def local_date(moment: dt.datetime) -> dt.date:
    """The Colombian date of an instant."""
    return moment.astimezone(COLOMBIA).date()
