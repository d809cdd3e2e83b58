"""Checks `streamd check` makes beyond the schema: do the camera sources it can see exist?

Only `file:` sources are looked at (network cameras may be down while the config is fine). PyAV
reads just the container header, so a check costs milliseconds per file, not a decode.
"""

from __future__ import annotations

from pathlib import Path

from streamd.config.root import Config

_PROBE_OPTIONS = {"probesize": "1000000", "analyzeduration": "1000000"}


def probe_video_file(path: Path) -> str | None:
    """None when `path` is a video file PyAV can open, else why not."""
    if not path.exists():
        return f"file {path} does not exist"
    if not path.is_file():
        return f"{path} is not a file"
    import av  # only `check` needs it here; the config models stay light

    try:
        with av.open(str(path), options=_PROBE_OPTIONS) as container:
            if not container.streams.video:
                return f"file {path} has no video stream"
    except av.FFmpegError as exc:
        return f"file {path} is not a video FFmpeg can read: {exc.strerror or type(exc).__name__}"
    except OSError as exc:
        return f"cannot read file {path}: {exc.strerror}"
    return None


def check_sources(cfg: Config) -> list[str]:
    """One message per enabled camera whose source cannot work, naming the camera."""
    problems = []
    for name, cam in cfg.cameras.items():
        if cam.enabled and cam.file is not None and (why := probe_video_file(cam.file)):
            problems.append(f"cameras.{name}.file: {why}")
    return problems
