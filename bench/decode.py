"""Benchmark sampling decode against decoding every frame: frames decoded and CPU seconds.

    python bench/decode.py                 # about a minute on 2 cores
    python bench/decode.py --seconds 10 --gops 25 50

A real surveillance clip (../shared/media, PETS 2006 concourse, 720x576 @ 30 fps) is re-encoded
with the ffmpeg CLI to 1280x720 @ 25 fps H.264 (x264 veryfast, no B-frames, fixed GOP, no scene
cuts) once per GOP, into a temporary directory. Each encoding is then read twice, as fast as it
can be, sampling 1 frame a second with streamd's SamplingClock and converting each sampled frame
to BGR (what the ingest hands on):

* decode-all (baseline, the ingest before this change): every packet decoded, then sampled;
* sampled: streamd.ingest.sampled.SampledDecoder, fed every demuxed packet with its media time as
  its receive time (a file replayed without waiting for real time).

CPU seconds are the process's (all threads), the median of `--repeat` runs; both readers use
the same slice-threaded decoder, so the ratio is the decoding saved, not a threading change.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av

from streamd.ingest.sampled import SampledDecoder
from streamd.ingest.source import SamplingClock, SourceStats

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CLIP = SHARED / "media" / "abandoned" / "pets2006_concourse_backpack.mp4"
FPS = 25


@dataclass(frozen=True)
class Result:
    demuxed: int
    decoded: int
    sampled: int
    cpu_s: float


def encode(src: Path, out: Path, gop: int, seconds: float) -> Path:
    cmd = [
        "ffmpeg", "-loglevel", "error", "-y", "-i", str(src), "-t", str(seconds),
        "-vf", "scale=1280:720", "-r", str(FPS), "-an",
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-bf", "0",
        "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0", "-pix_fmt", "yuv420p",
        str(out),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, timeout=600)
    return out


def decode_all(path: Path, fps: float) -> Result:
    clock, stats = SamplingClock(fps), SourceStats()
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        stream.thread_type = "SLICE"
        for packet in c.demux(stream):
            if packet.size == 0:
                continue
            stats.demuxed += 1
            for frame in stream.codec_context.decode(packet):
                stats.decoded += 1
                if clock.want(float(frame.time or 0.0)):
                    frame.to_ndarray(format="bgr24")
                    stats.sampled += 1
    return Result(stats.demuxed, stats.decoded, stats.sampled, 0.0)


def decode_sampled(path: Path, fps: float) -> Result:
    stats = SourceStats()
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        stream.thread_type = "SLICE"
        decoder = SampledDecoder(stream.codec_context, SamplingClock(fps), stats)
        for packet in c.demux(stream):
            if packet.size == 0 or packet.pts is None:
                continue
            for sample in decoder.push(packet, float(packet.pts * packet.time_base)):
                sample.frame.to_ndarray(format="bgr24")
                stats.sampled += 1
        for sample in decoder.finish():
            sample.frame.to_ndarray(format="bgr24")
            stats.sampled += 1
    return Result(stats.demuxed, stats.decoded, stats.sampled, 0.0)


def measure(run: Callable[[Path, float], Result], path: Path, fps: float, repeat: int) -> Result:
    cpu: list[float] = []
    result = None
    for _ in range(repeat):
        t0 = time.process_time()
        result = run(path, fps)
        cpu.append(time.process_time() - t0)
    assert result is not None
    return Result(result.demuxed, result.decoded, result.sampled, statistics.median(cpu))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip", type=Path, default=CLIP)
    ap.add_argument("--seconds", type=float, default=30.0, help="length of the clip used")
    ap.add_argument("--gops", type=int, nargs="+", default=[25, 50, 100], help="GOPs (frames)")
    ap.add_argument("--fps", type=float, default=1.0, help="sampling rate")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    if not args.clip.is_file():
        print(f"clip not found: {args.clip} (see ../shared/media/README.md)", file=sys.stderr)
        return 2
    if args.seconds <= 0 or args.fps <= 0 or args.repeat < 1 or min(args.gops) < 1:
        print("--seconds, --fps, --repeat and --gops must be positive", file=sys.stderr)
        return 2
    print(f"clip: {args.clip.name}, first {args.seconds:g} s as 1280x720 @ {FPS} fps H.264;")
    print(f"sampling {args.fps:g} fps; CPU s = median of {args.repeat} runs\n")
    head = (
        f"{'GOP':>10} {'reader':>10} {'demuxed':>8} {'decoded':>8} {'sampled':>8} "
        f"{'CPU s':>7} {'decoded ×':>10} {'CPU ×':>7}"
    )
    print(head)
    print("-" * len(head))
    with tempfile.TemporaryDirectory() as tmp:
        for gop in args.gops:
            path = encode(args.clip, Path(tmp) / f"gop{gop}.mp4", gop, args.seconds)
            base = measure(decode_all, path, args.fps, args.repeat)
            new = measure(decode_sampled, path, args.fps, args.repeat)
            label = f"{gop} ({gop / FPS:g} s)"
            for name, r in (("decode-all", base), ("sampled", new)):
                print(
                    f"{label:>10} {name:>10} {r.demuxed:>8} {r.decoded:>8} {r.sampled:>8} "
                    f"{r.cpu_s:>7.2f} {r.decoded / base.decoded:>10.3f} "
                    f"{r.cpu_s / base.cpu_s:>7.3f}"
                )
    print("\n× columns: relative to decode-all on the same encoding, in the same run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
