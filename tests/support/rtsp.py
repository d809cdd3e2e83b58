"""Drive ``tests/support/rtsp_server.py`` (gst-rtsp-server on 127.0.0.1) from pytest.

The server needs python3-gi, which imports only under Debian's ``/usr/bin/python3``, so it runs
as a subprocess of that interpreter while the tests run in the venv::

    ok, why = gst_rtsp_available()
    if not ok:
        pytest.skip(why)
    with RtspServer(files={"left": clip}, live=["cam"]) as srv:
        url = srv.url("left")          # rtsp://127.0.0.1:PORT/left
        ...                            # open it with PyAV
        srv.play_times("left")         # [unix time of each client's clip t=0, ...]
        srv.kill()                     # SIGKILL: readers see their stream end
        srv.restart()                  # same port, same mounts

``PLAY <mount> <t>`` is printed when a client's pipeline goes to PLAYING (its RTSP PLAY), which is
the wall-clock moment of frame 0 of a file clip for that client; see rtsp_server.py.
"""

from __future__ import annotations

import collections
import functools
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = Path(__file__).resolve().with_name("rtsp_server.py")

# Elements the two mount kinds use; a missing plugin package otherwise shows up only as an RTSP
# 503 on DESCRIBE.
_REQUIRED_ELEMENTS = (
    "filesrc",
    "qtdemux",
    "h264parse",
    "rtph264pay",
    "videotestsrc",
    "x264enc",
)

_PROBE = f"""
import sys
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer
Gst.init(None)
missing = [e for e in {_REQUIRED_ELEMENTS!r} if Gst.ElementFactory.find(e) is None]
if missing:
    sys.exit("GStreamer elements missing: " + ", ".join(missing))
"""

_APT_HINT = (
    "apt-get install --no-install-recommends gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 "
    "python3-gi gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad "
    "gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-x"
)


@functools.cache
def gst_rtsp_available() -> tuple[bool, str]:
    """Whether the RTSP test server can run here; the reason when not (for ``pytest.skip``)."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return False, f"{SYSTEM_PYTHON} not found (the RTSP test server needs Debian's python3-gi)"
    try:
        proc = subprocess.run(
            [SYSTEM_PYTHON, "-c", _PROBE],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"cannot probe GStreamer RTSP with {SYSTEM_PYTHON}: {exc}"
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
        return False, f"GStreamer RTSP server unavailable ({detail}); install: {_APT_HINT}"
    return True, ""


def ffmpeg_available() -> tuple[bool, str]:
    """Whether the ``ffmpeg`` CLI (used to generate test clips) is on PATH."""
    if shutil.which("ffmpeg") is None:
        return False, "ffmpeg not found on PATH (apt-get install ffmpeg)"
    return True, ""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_bindable(port: int) -> bool:
    """Whether a listener could bind 127.0.0.1:port now (SO_REUSEADDR, as gst-rtsp-server does,
    so TIME_WAIT leftovers of killed connections do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class RtspServerError(RuntimeError):
    """The RTSP test server did not start (the message carries its stderr tail)."""


class RtspServer:
    """A gst-rtsp-server subprocess on 127.0.0.1 serving file clips and live test sources.

    ``files`` maps mount name -> H.264 mp4 path; ``live`` lists live videotestsrc mounts.
    ``port=None`` picks a free port once; ``restart()`` reuses it.
    """

    def __init__(
        self,
        files: Mapping[str, str | os.PathLike[str]] | None = None,
        live: Iterable[str] = (),
        port: int | None = None,
        ready_timeout: float = 10.0,
    ) -> None:
        self.files = {k.strip("/"): Path(v) for k, v in (files or {}).items()}
        self.live = [name.strip("/") for name in live]
        self.port = port if port is not None else free_port()
        self.ready_timeout = ready_timeout
        self._proc: subprocess.Popen[str] | None = None
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._plays: dict[str, list[float]] = collections.defaultdict(list)
        self._events: list[tuple[str, str, float]] = []
        self._stderr: collections.deque[str] = collections.deque(maxlen=50)

    # -- lifecycle ---------------------------------------------------------------------------
    def _command(self) -> list[str]:
        cmd = [SYSTEM_PYTHON, "-u", str(SERVER_SCRIPT), "--port", str(self.port)]
        for name, path in self.files.items():
            cmd += ["--file", f"{name}={path}"]
        for name in self.live:
            cmd += ["--live", name]
        return cmd

    def _spawn(self) -> subprocess.Popen[str]:
        self._ready.clear()
        proc = subprocess.Popen(
            self._command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        out = threading.Thread(target=self._read_stdout, args=(proc,), daemon=True)
        err = threading.Thread(target=self._read_stderr, args=(proc,), daemon=True)
        out.start()
        err.start()
        self._threads = [out, err]
        return proc

    def start(self) -> RtspServer:
        """Spawn the server and wait (bounded by ``ready_timeout``) until it listens."""
        if self.running:
            return self
        for path in self.files.values():
            if not path.is_file():
                raise FileNotFoundError(path)
        deadline = time.monotonic() + self.ready_timeout
        while True:
            proc = self._spawn()
            self._proc = proc
            while time.monotonic() < deadline and proc.poll() is None:
                if self._ready.wait(0.05):
                    return self
            if self._ready.is_set():
                return self
            # Exited early (e.g. port still busy) or never printed READY.
            self._terminate(proc)
            if time.monotonic() >= deadline:
                tail = "\n".join(self._stderr)
                raise RtspServerError(
                    f"RTSP server on 127.0.0.1:{self.port} not ready after "
                    f"{self.ready_timeout:.0f} s (exit {proc.returncode}); stderr:\n{tail}"
                )
            time.sleep(0.2)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the server (SIGKILL if it lingers past ``timeout``) and reap it."""
        proc, self._proc = self._proc, None
        if proc is not None:
            self._terminate(proc, timeout)

    def kill(self) -> None:
        """SIGKILL the server, as a crashed camera/server would vanish; reaps it."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
        if proc is not None:
            proc.wait(timeout=5)
            self._join_readers()

    def restart(self, timeout: float = 10.0) -> RtspServer:
        """Kill whatever runs and start again on the SAME port (bounded wait until bindable)."""
        self.kill()
        deadline = time.monotonic() + timeout
        while not port_bindable(self.port):
            if time.monotonic() >= deadline:
                raise RtspServerError(f"port {self.port} still busy after {timeout:.0f} s")
            time.sleep(0.1)
        return self.start()

    def _terminate(self, proc: subprocess.Popen[str], timeout: float = 5.0) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self._join_readers()

    def _join_readers(self) -> None:
        for t in self._threads:
            t.join(timeout=2)
        self._threads = []

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def __enter__(self) -> RtspServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- output ------------------------------------------------------------------------------
    def _read_stdout(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        with proc.stdout:
            for line in proc.stdout:
                parts = line.split()
                try:
                    if parts[:1] == ["READY"] and len(parts) == 2:
                        self._ready.set()
                    elif parts[:1] == ["PLAY"] and len(parts) == 3:
                        with self._lock:
                            self._plays[parts[1].strip("/")].append(float(parts[2]))
                    elif parts[:1] == ["EVENT"] and len(parts) == 4:
                        with self._lock:
                            self._events.append((parts[1], parts[2].strip("/"), float(parts[3])))
                except ValueError:
                    continue

    def _read_stderr(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        with proc.stderr:
            for line in proc.stderr:
                self._stderr.append(line.rstrip("\n"))

    # -- queries -----------------------------------------------------------------------------
    def url(self, mount: str) -> str:
        return f"rtsp://127.0.0.1:{self.port}/{mount.strip('/')}"

    def play_times(self, mount: str) -> list[float]:
        """Unix times at which clients' media on ``mount`` went PLAYING, oldest first (kept
        across restarts)."""
        with self._lock:
            return list(self._plays.get(mount.strip("/"), []))

    def events(self, mount: str | None = None) -> list[tuple[str, str, float]]:
        """Diagnostic ``(kind, mount, unix time)`` lines: configure / prepared / firstbuf."""
        with self._lock:
            return [e for e in self._events if mount is None or e[1] == mount.strip("/")]

    def wait_for_play(self, mount: str, count: int = 1, timeout: float = 5.0) -> list[float]:
        """Wait (bounded) until at least ``count`` PLAY lines for ``mount`` were seen."""
        deadline = time.monotonic() + timeout
        while True:
            times = self.play_times(mount)
            if len(times) >= count or time.monotonic() >= deadline:
                return times
            time.sleep(0.02)

    @property
    def stderr_tail(self) -> str:
        return "\n".join(self._stderr)
