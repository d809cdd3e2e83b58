"""Event ids that stay unique when several instances write one table.

Ids are `"<start epoch>-<6 random chars>"` (the contract): two instances collide only when two
events start in the same microsecond *and* draw the same 6 of 36 characters, about one in 2e9
even then. When it happens anyway, the later event must not be taken for a repeat of the earlier
(its `new` would be dropped as a retry). The event then moves to an id derived from its own, with
the same epoch and a suffix hashed from who it is: every later change of that event (also after a
restart, from the journal) derives the same id, so no in-memory map is needed.
"""

from __future__ import annotations

import hashlib
import string

from sqlalchemy.ext.asyncio import AsyncSession

from streamd.errors import StreamdError
from streamd.events.change import PendingChange
from streamd.events.models import Event
from streamd.events.record import to_epoch

_ALPHABET = string.ascii_lowercase + string.digits
_TRIES = 8


class IdCollision(StreamdError):
    """Every candidate id of an event belongs to another event (never seen in practice)."""


def derived_id(change: PendingChange, attempt: int) -> str:
    """The `attempt`-th alternative id of the event (attempt 0 is its own id)."""
    if attempt == 0:
        return change.event_id
    epoch = change.event_id.rpartition("-")[0] or f"{change.start_time:.6f}"
    seed = f"{change.event_id}|{change.instance}|{change.camera}|{change.rule_name}|{attempt}"
    digest = hashlib.sha256(seed.encode()).digest()
    return f"{epoch}-{''.join(_ALPHABET[b % len(_ALPHABET)] for b in digest[:6])}"


def same_event(row: Event, change: PendingChange) -> bool:
    return (
        row.camera == change.camera
        and row.rule == change.rule_name
        and row.instance == change.instance
        and abs(to_epoch(row.started_at) - change.start_time) < 1e-3
    )


async def resolve_id(session: AsyncSession, change: PendingChange) -> tuple[str, Event | None]:
    """The id this change's event has in the table, and its row (None: not recorded yet).

    Rows are locked as they are read (the caller's transaction then owns the answer).
    """
    for attempt in range(_TRIES):
        candidate = derived_id(change, attempt)
        row = await session.get(Event, candidate, with_for_update=True)
        if row is None or same_event(row, change):
            return candidate, row
    raise IdCollision(f"event {change.event_id}: {_TRIES} candidate ids all taken")
