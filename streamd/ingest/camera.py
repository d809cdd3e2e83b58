"""The async face of a camera: frames forever, across disconnects, with a stall watchdog."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from streamd.config import redact_url
from streamd.ingest.backoff import Backoff
from streamd.ingest.frame import Frame
from streamd.ingest.slot import LatestSlot
from streamd.ingest.source import SourceSpec, SourceStats, read_session

log = logging.getLogger(__name__)


@dataclass
class CameraHealth:
    online: bool = False
    reconnects: int = 0
    stalls: int = 0
    gated: int = 0
    analysed: int = 0


def _safe_error(exc: BaseException, spec: SourceSpec) -> str:
    text = f"{type(exc).__name__}: {exc}"
    if spec.url:
        # FFmpeg errors quote the URL they failed on, password included
        text = text.replace(spec.url, redact_url(spec.url))
    return text


# How long a camera whose packets keep coming may go without a decodable frame (waiting for a
# keyframe) before it is reconnected: a minute, as long as the decoder holds a GOP.
KEYFRAME_WAIT_S = 60.0


class Camera:
    """Runs read sessions in a worker thread and reconnects with jittered, capped backoff."""

    def __init__(
        self, spec: SourceSpec, *, stall_timeout_s: float = 10.0, backoff_max_s: float = 30.0
    ) -> None:
        self.spec = spec
        self.stall_timeout_s = stall_timeout_s
        self.backoff = Backoff(cap=backoff_max_s)
        self.stats = SourceStats()
        self.health = CameraHealth()
        self._slot: LatestSlot[Frame] | None = None

    def _waiting_for_keyframe(self, last_frame: float) -> bool:
        """Packets still arrive but no frame came: a long GOP (smart codecs stretch it past
        10 s) whose next keyframe is on its way, not a stall. Reconnecting would only join
        the stream mid-GOP again. Not for ever: a stream that sends packets nothing decodes is
        broken. `last_frame`: monotonic time of the last frame (or of the session's start)."""
        receiving = time.time() - self.stats.last_frame_at < self.stall_timeout_s
        return receiving and time.monotonic() - last_frame < KEYFRAME_WAIT_S

    @property
    def dropped(self) -> int:
        return self._slot.dropped if self._slot else 0

    async def frames(self) -> AsyncIterator[Frame]:
        loop = asyncio.get_running_loop()
        slot: LatestSlot[Frame] = LatestSlot(loop)
        self._slot = slot
        seq = 0
        last_logged: str | None = None
        while True:
            stop = threading.Event()
            done: asyncio.Future[BaseException | int] = loop.create_future()

            def worker(
                stop: threading.Event = stop,
                done: asyncio.Future[BaseException | int] = done,
                start: int = seq,
            ) -> None:
                result: BaseException | int
                try:
                    result = read_session(self.spec, slot, stop, self.stats, start)
                except Exception as exc:  # reported to the loop, which reconnects
                    result = exc

                def finish() -> None:
                    if not done.done():
                        done.set_result(result)

                with contextlib.suppress(RuntimeError):  # loop already closed
                    loop.call_soon_threadsafe(finish)

            thread = threading.Thread(target=worker, name=f"camera-{self.spec.camera}", daemon=True)
            thread.start()
            session_start = last_frame = time.monotonic()
            got_frames = 0
            stalled = False
            try:
                while True:
                    getter = asyncio.ensure_future(slot.get())
                    waitables: set[asyncio.Future[object]] = {getter, done}  # type: ignore[arg-type]
                    try:
                        finished, _ = await asyncio.wait(
                            waitables,
                            timeout=self.stall_timeout_s,
                            return_when=asyncio.FIRST_COMPLETED,
                        )
                    except asyncio.CancelledError:
                        getter.cancel()
                        raise
                    if getter in finished:
                        frame = getter.result()
                        if not self.health.online:
                            log.info("camera %s: receiving frames", self.spec.camera)
                            self.stats.last_error = ""  # recovered: the old fault is history
                            last_logged = None
                        self.health.online = True
                        got_frames += 1
                        last_frame = time.monotonic()
                        yield frame
                        continue
                    getter.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await getter
                    if not finished and self._waiting_for_keyframe(last_frame):
                        continue
                    if not finished:
                        stalled = True
                        self.health.stalls += 1
                        log.warning(
                            "camera %s: no frame for %.0f s, reconnecting",
                            self.spec.camera,
                            self.stall_timeout_s,
                        )
                    break
            finally:
                # The thread notices within its read timeout; it is a daemon thread and owns no
                # shared state beyond the slot, so it is never joined on the loop.
                stop.set()
            self.health.online = False
            outcome = done.result() if done.done() else None
            if isinstance(outcome, int):
                seq = outcome
            if isinstance(outcome, BaseException):
                self.stats.errors += 1
                self.stats.last_error = _safe_error(outcome, self.spec)
                # A camera that stays down is logged once per change of fault, not per retry.
                level = logging.WARNING if self.stats.last_error != last_logged else logging.DEBUG
                log.log(level, "camera %s: %s", self.spec.camera, self.stats.last_error)
                last_logged = self.stats.last_error
            elif not stalled:
                if not self.spec.is_live and not self.spec.loop:
                    log.info("camera %s: file ended", self.spec.camera)
                    return
                log.warning("camera %s: stream ended (%s)", self.spec.camera, self.spec.display)
            if got_frames and time.monotonic() - session_start > 10:
                self.backoff.reset()
            delay = self.backoff.next_delay()
            self.health.reconnects += 1
            log.log(
                logging.INFO if got_frames or self.health.reconnects == 1 else logging.DEBUG,
                "camera %s: reconnecting in %.1f s",
                self.spec.camera,
                delay,
            )
            await asyncio.sleep(delay)
