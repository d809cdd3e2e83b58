"""The event writer: camera pipelines hand event changes here, and never see the database fail.

`EventWriter.submit` turns a change into plain data (writing its snapshot first) and queues it;
one task (`run`) writes the queue to SQL in order, one transaction per change. While the database
is reachable the queue is a few items in memory for a few milliseconds. When a write fails the
writer enters an outage:

- every waiting change, and every change submitted until the backlog is written, goes to the
  append-only journal in `<data_dir>/journal/` (fsync'd), so a crash or kill -9 during the outage
  loses nothing: the next start replays the journal before anything else;
- memory keeps at most `memory_max` changes; the rest of a long backlog stays only on disk and is
  read back in order;
- the write is retried with jittered, capped backoff; changes go to SQL in submit order;
- the outage is reported once: a WARNING when it starts and an INFO line with the count written
  when the backlog is in; the retained `<prefix>/database` MQTT message (see `DatabaseStatus`);
  and the metrics (`metrics()`).

Nothing is lost while the outage is younger than `budget_s` (database.outage_budget_s) and the
journal is below `journal_max_bytes`. Past the budget, new events and updates are dropped (counted
and logged once) while the `end` of every event already kept is still kept, so no event stays
open; past the journal size cap everything is dropped.

MQTT while the database is down: the outbox is in the database, so event messages wait with
their changes and go out in order once SQL is back (the publisher drains the outbox as ever).
Only the retained `<prefix>/database` status goes to the broker directly.

Why a log line only once a change is durable: "event new <id>" in the log (and on the way to
MQTT) is a promise; a change in memory alone would not survive a kill -9, one committed or in the
fsync'd journal does.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from streamd.events.change import EventChange, PendingChange
from streamd.events.db import DatabaseError
from streamd.events.journal import Journal, JournalEntry, JournalError
from streamd.events.outage import DatabaseStatus, Outage, WriterStats, metric_lines
from streamd.events.store import EventStore

log = logging.getLogger(__name__)

# A change that fails for a reason other than the database (a bug, bad data) is retried this
# often before it is dropped, so that it cannot block every later change forever.
_MAX_OTHER_FAILURES = 3


@dataclass(slots=True)
class _Item:
    seq: int
    change: PendingChange
    journaled: bool  # its line is in the journal (so its commit is acked there)
    announced: bool  # its log line is out
    failures: int = 0


StatusCallback = Callable[[DatabaseStatus], None]


class EventWriter:
    """Bounded, durable, ordered queue of event changes in front of the event log."""

    def __init__(
        self,
        store: EventStore,
        journal_dir: Path,
        *,
        budget_s: float = 600.0,
        journal_max_bytes: int = 256 * 1024 * 1024,
        memory_max: int = 1000,
        backoff_base_s: float = 0.25,
        backoff_cap_s: float = 5.0,
        on_status: StatusCallback | None = None,
    ) -> None:
        self.store = store
        self.journal = Journal(journal_dir)
        self.budget_s = budget_s
        self.journal_max_bytes = journal_max_bytes
        self.memory_max = memory_max
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.on_status = on_status
        self.stats = WriterStats()
        self._mem: deque[_Item] = deque()
        self._disk_only = 0  # changes after the last in memory, kept only in the journal
        self._disk_offset = 0  # where the first of them starts in the journal
        self._last_offset = 0  # where the last change appended to the journal starts
        self._next_seq = 0
        self._lock = asyncio.Lock()  # journal file and queue changes
        self._wake = asyncio.Event()
        self._outage: Outage | None = None
        self._dropped_ids: set[str] = set()
        self._since = time.time()

    @property
    def pending(self) -> int:
        return len(self._mem) + self._disk_only

    # -- start and stop ----------------------------------------------------------------------

    async def open(self) -> int:
        """Lock the journal and load what an earlier run left in it; returns how many changes."""
        self.journal.lock()
        entries = await asyncio.to_thread(self.journal.recover)
        if not entries:
            return 0
        head, rest = entries[: self.memory_max], entries[self.memory_max :]
        self._mem.extend(_Item(e.seq, e.change, journaled=True, announced=True) for e in head)
        if rest:
            self._disk_only, self._disk_offset = len(rest), rest[0].offset
        self._next_seq = entries[-1].seq + 1
        self.stats.journal_bytes = self.journal.size()
        log.info(
            "event journal %s: %d event changes from the previous run to write",
            self.journal.path,
            len(entries),
        )
        return len(entries)

    async def write_backlog(self) -> bool:
        """Write every waiting change now (the `run` task must not be running); True if all
        went in, False at the first database failure."""
        while (item := await self._head()) is not None:
            try:
                await self.store.apply(item.change)
            except DatabaseError as exc:
                self.stats.last_error = str(exc)
                return False
            async with self._lock:
                await self._done(item)
        return True

    async def shutdown(self, timeout: float) -> None:  # noqa: ASYNC109 (a hard shutdown bound)
        """Write what can be written within `timeout`, keep the rest in the journal, close."""
        written = False
        try:
            async with asyncio.timeout(timeout):
                written = await self.write_backlog()
        except TimeoutError:
            pass
        async with self._lock:
            left = [i for i in self._mem if not i.journaled]
            if left:
                try:
                    await asyncio.to_thread(self.journal.append, [(i.seq, i.change) for i in left])
                except JournalError as exc:
                    log.error("%s: %d event changes lost", exc, len(left))
            if not written and self.pending:
                log.warning(
                    "%d event changes not yet in the database are kept in %s for the next start",
                    self.pending,
                    self.journal.path,
                )
            self.journal.close()

    def close(self) -> None:
        """Release the journal (idempotent); `shutdown` is the orderly way, this the last resort."""
        self.journal.close()

    # -- submitting --------------------------------------------------------------------------

    async def submit(self, change: EventChange, severity: str = "warning") -> None:
        """Queue one change. Never raises for the database; a camera pipeline can rely on it."""
        pending = await self.store.prepare(change, severity)
        async with self._lock:
            if self._must_drop(pending):
                self._drop(pending, "dropped")
                return
            item = _Item(self._next_seq, pending, journaled=False, announced=False)
            self._next_seq += 1
            room = self._disk_only == 0 and len(self._mem) < self.memory_max
            if not self.journal.active and room:
                self._mem.append(item)  # the common case: written within milliseconds
            else:
                # A backlog: every waiting change goes to the journal, in order.
                batch = [i for i in self._mem if not i.journaled] + [item]
                if not await self._journal(batch):
                    if room:
                        self._mem.append(item)  # not durable, but not lost while we run
                    else:
                        self._drop(pending, "journal unwritable")
                        return
                elif room:
                    self._mem.append(item)
                else:
                    if self._disk_only == 0:
                        self._disk_offset = self._last_offset
                    self._disk_only += 1
        self._wake.set()

    async def _journal(self, batch: list[_Item]) -> bool:
        """Append `batch` to the journal (fsync'd); True when it is on disk."""
        try:
            offsets = await asyncio.to_thread(
                self.journal.append, [(i.seq, i.change) for i in batch]
            )
        except JournalError as exc:
            self.stats.last_error = str(exc)
            log.error("%s: event changes kept in memory only", exc)
            return False
        self._last_offset = offsets[-1]
        self.stats.journal_bytes = self.journal.size()
        for i in batch:
            i.journaled = True
            self.stats.buffered += 1
            if not i.announced:
                self._announce(i, buffered=True)
        return True

    def _must_drop(self, change: PendingChange) -> bool:
        if change.event_id in self._dropped_ids:
            return True  # its `new` was dropped: its updates and end have nothing to refer to
        outage = self._outage
        if outage is None:
            return False
        if self.stats.journal_bytes >= self.journal_max_bytes:
            if not outage.over_budget_logged:
                outage.over_budget_logged = True
                log.error(
                    "event journal full (%d bytes): dropping event changes until the database "
                    "is back",
                    self.stats.journal_bytes,
                )
            return True
        if time.monotonic() - outage.started <= self.budget_s or change.kind == "end":
            return False
        if not outage.over_budget_logged:
            outage.over_budget_logged = True
            log.error(
                "database unavailable for longer than its budget (%.0f s): dropping new events "
                "and updates until it is back (ends of open events are kept)",
                self.budget_s,
            )
        return True

    def _drop(self, change: PendingChange, why: str) -> None:
        if change.kind == "new":
            self._dropped_ids.add(change.event_id)
        self.store.discard(change)
        self.stats.dropped += 1
        if self._outage is not None:
            self._outage.dropped += 1
        log.debug("event %s: %s %s", change.event_id, change.kind, why)

    # -- writing -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Write queued changes in order, forever; returns only by cancellation."""
        attempt = 0
        while True:
            item = await self._head()
            if item is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                await self.store.apply(item.change)
            except DatabaseError as exc:
                await self._outage_begins(exc)
                await asyncio.sleep(self._backoff(attempt))
                attempt += 1
                continue
            except Exception:
                # Not the database: this change itself is the problem.
                item.failures += 1
                if item.failures < _MAX_OTHER_FAILURES:
                    log.warning("event %s: cannot be recorded; retrying", item.change.event_id)
                    await asyncio.sleep(self._backoff(item.failures))
                    continue
                log.exception(
                    "event %s: %s cannot be recorded; dropped",
                    item.change.event_id,
                    item.change.kind,
                )
                async with self._lock:
                    self._drop(item.change, "unrecordable")
                    await self._done(item, written=False)
                continue
            attempt = 0
            async with self._lock:
                await self._done(item)

    def _backoff(self, attempt: int) -> float:
        # Jittered (many daemons on one database do not retry in lockstep) and capped; never
        # near zero, because a refused connection fails at once and would spin.
        top = min(self.backoff_cap_s, self.backoff_base_s * 2 ** min(attempt, 16))
        return random.uniform(top / 2, top)

    async def _head(self) -> _Item | None:
        if not self._mem and self._disk_only:
            async with self._lock:
                await self._refill()
        return self._mem[0] if self._mem else None

    async def _refill(self) -> None:
        room = self.memory_max - len(self._mem)
        if room <= 0 or not self._disk_only:
            return
        try:
            entries, offset = await asyncio.to_thread(
                self.journal.read_from, self._disk_offset, min(room, self._disk_only)
            )
        except OSError as exc:
            entries, offset = [], self._disk_offset
            log.error("event journal %s: cannot read back: %s", self.journal.path, exc)
        if not entries:
            log.error("event journal %s: %d changes missing", self.journal.path, self._disk_only)
            self.stats.dropped += self._disk_only
            self._disk_only = 0
            return
        self._mem.extend(_from_entry(e) for e in entries)
        self._disk_only -= len(entries)
        self._disk_offset = offset

    async def _done(self, item: _Item, *, written: bool = True) -> None:
        """`item` (the head) is in the database, or given up: take it off the queue."""
        self._mem.popleft()
        if item.journaled:
            self.journal.ack(item.seq)
        if written:
            self.stats.written += 1
            if not item.announced:
                self._announce(item, buffered=False)
            if self._outage is not None:
                self._outage.written += 1
        if self.pending == 0:
            if self.journal.active:
                self.journal.remove()
                self.stats.journal_bytes = 0
            if self._outage is not None:
                self._outage_ends()

    # -- outage reporting --------------------------------------------------------------------

    async def _outage_begins(self, exc: DatabaseError) -> None:
        self.stats.last_error = str(exc)
        if self._outage is not None:
            return
        now = time.time()
        self._outage = Outage(time.monotonic(), now, str(exc))
        self._since = now
        self.stats.database_up = False
        self.stats.outages += 1
        log.warning(
            "database unavailable: %s; buffering event changes in %s (budget %.0f s)",
            exc,
            self.journal.path,
            self.budget_s,
        )
        async with self._lock:
            unjournaled = [i for i in self._mem if not i.journaled]
            if unjournaled:
                await self._journal(unjournaled)
        self._report()

    def _outage_ends(self) -> None:
        outage = self._outage
        assert outage is not None
        self._outage = None
        self._dropped_ids.clear()
        self._since = time.time()
        self.stats.database_up = True
        log.info(
            "database available again after %.1f s: wrote %d buffered event changes%s",
            time.monotonic() - outage.started,
            outage.written,
            f", {outage.dropped} dropped (over budget)" if outage.dropped else "",
        )
        self._report(written=outage.written, dropped=outage.dropped)

    def status(self, *, written: int = 0, dropped: int = 0) -> DatabaseStatus:
        outage = self._outage
        return DatabaseStatus(
            state="available" if outage is None else "unavailable",
            since=round(self._since, 3),
            reason=None if outage is None else outage.reason,
            pending=self.pending,
            written=written,
            dropped=dropped if outage is None else outage.dropped,
        )

    def _report(self, *, written: int = 0, dropped: int = 0) -> None:
        if self.on_status is not None:
            self.on_status(self.status(written=written, dropped=dropped))

    def _announce(self, item: _Item, *, buffered: bool) -> None:
        item.announced = True
        c = item.change
        log.info(
            "event %s %s camera=%s rule=%s start=%s score=%.2f%s",
            c.kind,
            c.event_id,
            c.camera,
            c.rule_name,
            datetime.fromtimestamp(c.start_time, UTC).isoformat(timespec="seconds"),
            c.score,
            " (buffered: database unavailable)" if buffered and self._outage else "",
        )

    def metrics(self) -> list[str]:
        """Prometheus text lines (the /metrics route adds them)."""
        return metric_lines(self.stats, self.pending)


def _from_entry(e: JournalEntry) -> _Item:
    return _Item(e.seq, e.change, journaled=True, announced=True)
