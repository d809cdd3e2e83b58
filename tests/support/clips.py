"""Synthetic H.264 test clips, generated with the ffmpeg CLI into a directory the caller owns.

All clips share one geometry: 640x480 @ 30 fps, 20 s (600 frames), H.264 Main, GOP 30, no
B-frames, yuv420p, faststart mp4, so ``rtsp_server.py`` serves them without re-encoding.
Keyframes: the clips made here use ``-sc_threshold 0`` so there is exactly one every 30 frames
(1 s). The shared script does not: with ``bg="static"`` x264's scene-cut detection fires on the
noise and its clip has a keyframe every 3-8 frames (with testsrc2: every 30 frames).

* ``left_object_clip``: ../shared/tools/make_left_object.sh (not copied here). A blue "PERSON"
  box (50x150, y=290) walks in from the left at 60 px/s carrying a brown "BAG" box (36x28,
  y=412), drops it at t=5 s (bag at x=290..326 from then on) and is gone by t=12.5 s.
* ``attended_object_clip``: the same walk and drop, but the person then STAYS beside the bag to
  the end, shifting from foot to foot, x = 250 + 30*sin(1.5*(t-5)) (the box spans about
  x=220..330): an attended bag.
* ``static_clip``: a grey floor with temporal sensor noise and nothing else.

``bg`` is ``"testsrc2"`` (busy, animated colour bars) or ``"static"`` (grey 0x707070 with
temporal noise, alls=6). Compare decoded events, not file bytes: other ffmpeg versions change the
bytes. A clip already present in ``directory`` is reused. When ffmpeg or ../shared is missing the
functions raise ``ClipUnavailable``, whose message is meant for ``pytest.skip``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

SHARED = Path(__file__).resolve().parents[3] / "shared"
LEFT_OBJECT_SCRIPT = SHARED / "tools" / "make_left_object.sh"
FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")

WIDTH, HEIGHT, FPS, DURATION_S = 640, 480, 30, 20
DROP_T = 5.0  # the bag is put down at t=5 s in both object clips
LEAVE_T = 12.5  # the left-object clip's person is off screen by then
# The person (50 px wide, moving right at 60 px/s from x=-50) is more than two bag widths
# (2 × 36 px) past the bag's right edge (326) from (326 + 72 + 50) / 60 ≈ 7.5 s: the bag is
# unattended from then (PETS 2006 / AVSS 2007), which is when a left-object event starts.
UNATTENDED_T = 7.5
BAG_BOX = (290, 412, 36, 28)  # x, y, w, h of the bag once dropped
BACKGROUNDS = ("testsrc2", "static")

_ENCODE = [
    "-t", str(DURATION_S),
    "-c:v", "libx264", "-preset", "veryfast", "-profile:v", "main",
    "-bf", "0", "-g", "30", "-sc_threshold", "0", "-crf", "23", "-pix_fmt", "yuv420p",
    "-threads", "1", "-fflags", "+bitexact", "-flags:v", "+bitexact",
    "-map_metadata", "-1", "-movflags", "+faststart",
]  # fmt: skip


class ClipUnavailable(RuntimeError):
    """A clip cannot be generated here (no ffmpeg, no ../shared); ``str()`` is a skip reason."""


def _require_ffmpeg() -> str:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise ClipUnavailable("ffmpeg not found on PATH (apt-get install ffmpeg)")
    return ffmpeg


def _background(bg: str) -> str:
    if bg == "static":
        return f"color=c=0x707070:size={WIDTH}x{HEIGHT}:rate={FPS}:duration={DURATION_S}," + (
            "noise=alls=6:allf=t"
        )
    if bg == "testsrc2":
        return f"testsrc2=size={WIDTH}x{HEIGHT}:rate={FPS}:duration={DURATION_S}"
    raise ValueError(f"bg must be one of {BACKGROUNDS}, got {bg!r}")


def _run(cmd: list[str], out: Path, env: dict[str, str] | None = None) -> Path:
    """Run an ffmpeg-producing command into a temp name, then rename (no half-written clips)."""
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp{out.suffix}")
    proc = subprocess.run(
        [*cmd, str(tmp)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )
    if proc.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"clip generation failed ({proc.returncode}): {proc.stderr[-2000:]}")
    tmp.replace(out)
    return out


def left_object_clip(directory: str | os.PathLike[str], bg: str = "testsrc2") -> Path:
    """The shared deterministic 'left object' clip (person drops a bag at 5 s, leaves ≈12.5 s)."""
    _background(bg)  # validate
    out = Path(directory) / f"left_object_{bg}.mp4"
    if out.is_file() and out.stat().st_size > 0:
        return out
    if not LEFT_OBJECT_SCRIPT.is_file():
        raise ClipUnavailable(f"{LEFT_OBJECT_SCRIPT} not found (../shared is absent)")
    _require_ffmpeg()
    return _run(["bash", str(LEFT_OBJECT_SCRIPT)], out, env={**os.environ, "BG": bg})


def attended_object_clip(directory: str | os.PathLike[str], bg: str = "testsrc2") -> Path:
    """Person carries the bag in, drops it at 5 s and stays beside it (swaying) to the end."""
    src = _background(bg)
    out = Path(directory) / f"attended_object_{bg}.mp4"
    if out.is_file() and out.stat().st_size > 0:
        return out
    ffmpeg = _require_ffmpeg()
    # Same walk as make_left_object.sh (x=-50+60t), then from t=5 sway around x=250 (continuous
    # at t=5) and never leave. The expressions are single-quoted in the graph, as in the script.
    person_x = "if(lt(t,5),-50+t*60,250+30*sin((t-5)*1.5))"
    bag_x = "if(lt(t,5),-10+t*60,290)"
    font = f"fontfile={FONT}:" if FONT.is_file() else ""
    graph = ";".join(
        [
            "[0:v]format=yuv420p[bg]",
            f"[bg][1:v]overlay=x='{person_x}':y=290:shortest=1:eval=frame[p]",
            f"[p][2:v]overlay=x='{bag_x}':y=412:shortest=1:eval=frame[b]",
            f"[b]drawtext={font}text='PERSON':x='{person_x}':y=270:fontsize=14:fontcolor=white,"
            f"drawtext={font}text='BAG':x='{bag_x}':y=445:fontsize=14:fontcolor=yellow,"
            f"drawtext={font}text='t=%{{pts\\:flt}} f=%{{n}}':x=10:y=10:fontsize=18:"
            "fontcolor=white:box=1:boxcolor=black@0.6[out]",
        ]
    )
    cmd = [
        ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", src,
        "-f", "lavfi", "-i", f"color=c=0x2040a0:size=50x150:rate={FPS}",
        "-f", "lavfi", "-i", f"color=c=0x8b4513:size=36x28:rate={FPS}",
        "-filter_complex", graph, "-map", "[out]", *_ENCODE,
    ]  # fmt: skip
    return _run(cmd, out)


def static_clip(directory: str | os.PathLike[str]) -> Path:
    """20 s of a grey floor where nothing changes but temporal sensor noise."""
    out = Path(directory) / "static.mp4"
    if out.is_file() and out.stat().st_size > 0:
        return out
    ffmpeg = _require_ffmpeg()
    cmd = [
        ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", _background("static"), *_ENCODE,
    ]  # fmt: skip
    return _run(cmd, out)
