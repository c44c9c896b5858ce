"""Colombian civil time: dates of registrations, periods and tariffs are
Colombian dates (UTC−5 all year, no daylight saving)."""

from __future__ import annotations

import datetime as dt

COLOMBIA = dt.timezone(dt.timedelta(hours=-5), "COT")


def today() -> dt.date:
    return dt.datetime.now(COLOMBIA).date()


def local_date(moment: dt.datetime) -> dt.date:
    """The Colombian date of an instant."""
    return moment.astimezone(COLOMBIA).date()
