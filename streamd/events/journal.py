"""The event writer's on-disk journal: an append-only file of event changes not yet in SQL.

One JSON object per line: `{"seq": N, "change": {...}}` for a change, `{"ack": N}` once change N
is committed to the database. Changes are written with fsync (an operator was told they fired);
acks only with flush, because a lost ack merely replays a change the log already has, which the
event log takes as a no-op (`new`, `end`) or a repeated `update`. The file is deleted once every
change in it is acknowledged, so it exists only while a backlog does.

Recovery after a crash reads the unacknowledged changes back in order. A torn last line (the
crash hit mid-write) is ignored; a corrupt line elsewhere is skipped with a warning naming it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from pydantic import ValidationError

from streamd.errors import StreamdError
from streamd.events.change import PendingChange

log = logging.getLogger(__name__)

JOURNAL_NAME = "events.jsonl"
_LOCK_NAME = "journal.lock"


class JournalError(StreamdError):
    """The journal cannot be opened or written (the message names the file and the cause)."""


@dataclass(frozen=True, slots=True)
class JournalEntry:
    seq: int
    change: PendingChange
    offset: int  # where its line starts in the file


class Journal:
    """The journal file in `directory`, locked against a second daemon on the same data_dir."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / JOURNAL_NAME
        self._file: IO[bytes] | None = None
        self._lock: IO[bytes] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def lock(self) -> None:
        """Take the directory's lock; a second daemon on the same data_dir fails clearly."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            lock = (self.directory / _LOCK_NAME).open("a+b")
        except OSError as exc:
            raise JournalError(f"cannot open the event journal in {self.directory}: {exc}") from exc
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            lock.close()
            raise JournalError(
                f"event journal {self.directory} is in use by another streamd process "
                "(two daemons cannot share one data_dir)"
            ) from exc
        self._lock = lock

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.flush()
                os.fsync(self._file.fileno())
            except OSError as exc:
                log.warning("event journal %s: final flush failed: %s", self.path, exc)
            self._file.close()
            self._file = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    @property
    def active(self) -> bool:
        """Whether the journal file is open for appending (a backlog is being kept on disk)."""
        return self._file is not None

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    # -- recovery ----------------------------------------------------------------------------

    def recover(self) -> list[JournalEntry]:
        """The unacknowledged changes left by an earlier run, oldest first (reopens the file)."""
        if not self.path.exists():
            return []
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise JournalError(f"cannot read the event journal {self.path}: {exc}") from exc
        if data and not data.endswith(b"\n"):
            # A crash mid-write: drop the torn tail, or the next append would be glued to it.
            log.warning("event journal %s: torn last line ignored", self.path)
            data = data[: data.rfind(b"\n") + 1]
            try:
                os.truncate(self.path, len(data))
            except OSError as exc:
                raise JournalError(f"cannot repair the event journal {self.path}: {exc}") from exc
        entries: list[JournalEntry] = []
        acked = -1
        offset = 0
        lines = data.split(b"\n")
        for number, line in enumerate(lines, start=1):
            start, offset = offset, offset + len(line) + 1
            if not line.strip():
                continue
            parsed = _parse(line)
            if parsed is None:
                log.warning("event journal %s: corrupt line %d skipped", self.path, number)
                continue
            if isinstance(parsed, int):
                acked = max(acked, parsed)
            else:
                entries.append(JournalEntry(parsed[0], parsed[1], start))
        pending = [e for e in entries if e.seq > acked]
        if not pending:
            self.remove()
            return []
        self._open()
        return pending

    def read_from(self, offset: int, limit: int) -> tuple[list[JournalEntry], int]:
        """Up to `limit` changes whose lines start at or after `offset`; and where to go on.

        Used to refill memory when the backlog outgrew it: the caller knows every change from
        `offset` on is unacknowledged (acks are skipped).
        """
        if self._file is not None:
            self._file.flush()
        out: list[JournalEntry] = []
        with self.path.open("rb") as f:
            f.seek(offset)
            while len(out) < limit:
                line = f.readline()
                if not line.endswith(b"\n"):
                    break  # end of file (or a line still being written)
                start, offset = offset, offset + len(line)
                parsed = _parse(line)
                if isinstance(parsed, tuple):
                    out.append(JournalEntry(parsed[0], parsed[1], start))
        return out, offset

    # -- writing -----------------------------------------------------------------------------

    def append(self, items: Sequence[tuple[int, PendingChange]]) -> list[int]:
        """Append changes, fsync'd; returns the offset of each one's line."""
        f = self._open()
        offsets = []
        try:
            pos = f.seek(0, os.SEEK_END)
            for seq, change in items:
                line = b'{"seq":%d,"change":%s}\n' % (seq, change.model_dump_json().encode())
                offsets.append(pos)
                f.write(line)
                pos += len(line)
            f.flush()
            os.fsync(f.fileno())
        except OSError as exc:
            raise JournalError(f"cannot write the event journal {self.path}: {exc}") from exc
        return offsets

    def ack(self, seq: int) -> None:
        """Change `seq` (and every earlier one) is in the database."""
        if self._file is None:
            return
        try:
            self._file.write(b'{"ack":%d}\n' % seq)
            self._file.flush()
        except OSError as exc:
            # Harmless: at worst the change is replayed, which the event log tolerates.
            log.warning("event journal %s: ack not written: %s", self.path, exc)

    def remove(self) -> None:
        """Every change is in the database: the journal is no longer needed."""
        if self._file is not None:
            self._file.close()
            self._file = None
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("event journal %s: cannot delete: %s", self.path, exc)

    def _open(self) -> IO[bytes]:
        if self._file is None:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                created = not self.path.exists()
                self._file = self.path.open("ab")
                if created:
                    # The new file's directory entry must survive a power cut too.
                    fd = os.open(self.directory, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
            except OSError as exc:
                raise JournalError(f"cannot open the event journal {self.path}: {exc}") from exc
        return self._file


def _parse(line: bytes) -> int | tuple[int, PendingChange] | None:
    """An ack (its seq), a change (seq, change), or None for a line that is neither."""
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    if isinstance(doc.get("ack"), int):
        return int(doc["ack"])
    seq = doc.get("seq")
    if not isinstance(seq, int):
        return None
    try:
        return seq, PendingChange.model_validate(doc.get("change"))
    except ValidationError:
        return None
