"""streamd's ingest alone, for bench/scale.py's floor: N RTSP cameras read exactly as the daemon
reads them (PyAV demux in a thread per camera, ingest/sampled.py's keyframe-only or GOP decode,
BGR conversion, a LatestSlot to the event loop), with nothing analysing the frames.

    python bench/ingest_only.py --fps 1 rtsp://127.0.0.1:8554/cam0 rtsp://...

Runs until SIGTERM or SIGINT, printing one JSON line a second: per camera, the demuxed /
decoded / sampled counts so far. What the daemon costs above this process is perception, rules
and the loop; what this process costs is the least any analyser decoding the same samples with
FFmpeg can cost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import threading

from streamd.ingest.frame import Frame
from streamd.ingest.slot import LatestSlot
from streamd.ingest.source import SourceSpec, SourceStats, read_session


def counts(stats: dict[str, SourceStats]) -> str:
    return json.dumps({u: [s.demuxed, s.decoded, s.sampled] for u, s in stats.items()})


async def run(urls: list[str], fps: float) -> None:
    loop = asyncio.get_running_loop()
    stop = threading.Event()
    done = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    stats = {u: SourceStats() for u in urls}
    slots: dict[str, LatestSlot[Frame]] = {u: LatestSlot(loop) for u in urls}

    def read(url: str) -> None:
        spec = SourceSpec(camera=url, url=url, fps=fps)
        read_session(spec, slots[url], stop, stats[url])

    async def drain(slot: LatestSlot[Frame]) -> None:
        while True:
            await slot.get()  # taken and dropped: the floor analyses nothing

    threads = [threading.Thread(target=read, args=(u,), daemon=True) for u in urls]
    for t in threads:
        t.start()
    drains = [asyncio.create_task(drain(s)) for s in slots.values()]
    while not done.is_set():
        print(counts(stats), flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout=1.0)
    stop.set()
    for task in drains:
        task.cancel()
    for t in threads:
        await asyncio.to_thread(t.join, 10)
    print(counts(stats), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fps", type=float, default=1.0, help="sampled frames per second per camera")
    ap.add_argument("urls", nargs="+", help="RTSP URLs")
    args = ap.parse_args()
    asyncio.run(run(args.urls, args.fps))


if __name__ == "__main__":
    main()
