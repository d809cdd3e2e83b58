"""Times users type: ISO 8601, epoch seconds, or a span ago ("90s", "15m", "2h", "1d")."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_AGO = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(value: str, now: datetime | None = None) -> datetime:
    """Parse `value` into an aware UTC datetime, or raise ValueError saying what is accepted."""
    v = value.strip()
    now = now or datetime.now(UTC)
    m = _AGO.match(v)
    if m:
        return now - timedelta(seconds=float(m.group(1)) * _UNIT[m.group(2)])
    try:
        return datetime.fromtimestamp(float(v), UTC)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(v)
    except ValueError:
        raise ValueError(
            f"cannot read time {value!r}: use ISO 8601 (2026-11-25T14:00:00Z), epoch seconds, "
            "or a span ago like 90s, 15m, 2h, 1d"
        ) from None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
