"""Time arguments of the CLI: an ISO date or date-time (UTC unless it says otherwise), or an age
such as ``90m``, ``24h`` or ``7d`` meaning that long ago."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from google.protobuf import timestamp_pb2

_AGE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """Raises ValueError with a message fit for the terminal."""
    age = _AGE.match(text.strip())
    if age:
        delta = timedelta(**{_UNITS[age.group(2)]: int(age.group(1))})
        return (now or datetime.now(UTC)) - delta
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use e.g. 2026-01-31, 2026-01-31T12:00, 30m, 24h or 7d"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def to_timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp
