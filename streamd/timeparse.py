"""Times users type: ISO 8601, epoch seconds, or a span ago ("90s", "15m", "2h", "1d")."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

_AGO = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_ACCEPTED = (
    "use ISO 8601 (2026-11-25T14:00:00Z), epoch seconds, or a span ago like 90s, 15m, 2h, 1d"
)


def parse_time(value: str, now: datetime | None = None) -> datetime:
    """Parse `value` into an aware UTC datetime, or raise ValueError saying what is accepted."""
    v = value.strip()
    now = now or datetime.now(UTC)
    shown = value if len(value) <= 40 else value[:40] + "…"
    m = _AGO.match(v)
    try:
        if m:
            return now - timedelta(seconds=float(m.group(1)) * _UNIT[m.group(2)])
        try:
            epoch = float(v)
        except ValueError:
            epoch = None
        if epoch is not None:
            if not math.isfinite(epoch):
                raise ValueError(f"time {shown!r} is not a finite number of seconds")
            try:
                return datetime.fromtimestamp(epoch, UTC)
            except ValueError:  # "year 3170843 is out of range"
                raise OverflowError from None
    except (OverflowError, OSError):
        # datetime covers years 1..9999; fromtimestamp raises OverflowError or OSError beyond.
        raise ValueError(f"time {shown!r} is out of range (years 1 to 9999)") from None
    try:
        dt = datetime.fromisoformat(v)
    except ValueError:
        raise ValueError(f"cannot read time {shown!r}: {_ACCEPTED}") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
