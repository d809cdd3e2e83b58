#!/usr/bin/python3
"""Loopback RTSP server for the tests (GStreamer gst-rtsp-server).

Run it with Debian's ``/usr/bin/python3``: python3-gi (``gi``) only imports there, not in the
project's venv. ``tests/support/rtsp.py`` (``RtspServer``) spawns and drives it.

    /usr/bin/python3 tests/support/rtsp_server.py --port 8554 \
        --file left=/tmp/left_object.mp4 --live cam

Mounts (``rtsp://127.0.0.1:PORT/NAME``):

* ``--file NAME=PATH``: an H.264 mp4 served without re-encoding. The factory is not shared, so
  every client gets its own pipeline and sees the clip from frame 0 in real time. When the clip
  ends the server ends that client's stream (EOS); it does not loop.
* ``--live NAME``: a live 640x480@30 ``videotestsrc`` encoded with x264 (GOP 10), also one
  pipeline per client.

Lines on stdout (each flushed), the protocol ``RtspServer`` parses:

* ``READY <port>``: the server is attached to the main loop and listening on 127.0.0.1.
* ``PLAY <mount> <unix time>``: a client's media went to PLAYING, i.e. its RTSP PLAY request was
  honoured and the pipeline clock started. For a file mount that is the wall-clock moment of the
  clip's t=0 for that client: frame N leaves the server at about PLAY + N/30 s.
* ``EVENT <kind> <mount> <unix time>``: diagnostics, ``kind`` one of ``configure`` (factory
  "media-configure": the pipeline was built, on DESCRIBE), ``prepared`` (media "prepared": the
  pipeline prerolled, still on DESCRIBE/SETUP) and ``firstbuf`` (first RTP buffer out of
  ``pay0``; for a file mount it comes out during preroll, before PLAY, so it is not the clip's
  real-time start either).

Why PLAY is tied to the PLAYING state and not to "media-configure" / "prepared": those two fire
when the client DESCRIBEs, before SETUP and PLAY, and a prerolled pipeline sits paused on its
first frame until PLAY; running time (the real-time pacing of the clip) starts at the PLAYING
transition. Measured on loopback with PyAV (tests/test_rtsp_support.py): for a file mount the
frame whose ``frame.time`` is t (frame.time equals the clip time) reaches the reader at
PLAY + t + ~35 ms, the same for every frame of a read. "configure"/"prepared"/"firstbuf" come
1-3 ms before PLAY for a file mount (~25-40 ms for a live one), so they would do nearly as well
on an idle loopback, but only PLAY is right by construction. Note the reader never decodes the
first GOP of a file clip (its first packets arrive without their IDR), so with GOP 30 the first
decoded frame is the one at t=1.0 s, about PLAY + 1.04 s.

SIGTERM and SIGINT quit the main loop and exit 0. A port that cannot be bound exits 2 with a
message on stderr.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

_print_lock = threading.Lock()


def emit(*parts: object) -> None:
    """Print one protocol line and flush (called from GStreamer streaming threads too)."""
    with _print_lock:
        sys.stdout.write(" ".join(str(p) for p in parts) + "\n")
        sys.stdout.flush()


def file_launch(path: str) -> str:
    # GstRTSPMediaFactory launch lines are parsed by gst_parse_launch: quote the location.
    loc = path.replace("\\", "\\\\").replace('"', '\\"')
    return (
        f'( filesrc location="{loc}" ! qtdemux ! h264parse '
        "! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )


LIVE_LAUNCH = (
    "( videotestsrc is-live=true ! video/x-raw,width=640,height=480,framerate=30/1 "
    "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 "
    "! rtph264pay name=pay0 pt=96 config-interval=1 )"
)


def watch_media(mount: str, media: GstRtspServer.RTSPMedia) -> None:
    """Hook the per-client media so its start times are reported."""
    state = {"playing": False}

    def on_prepared(_media: GstRtspServer.RTSPMedia) -> None:
        emit("EVENT", "prepared", mount, f"{time.time():.6f}")

    def on_new_state(_media: GstRtspServer.RTSPMedia, new_state: int) -> None:
        # Once per media: a non-shared media is created for each client and PLAYs once.
        if new_state == Gst.State.PLAYING and not state["playing"]:
            state["playing"] = True
            emit("PLAY", mount, f"{time.time():.6f}")

    media.connect("prepared", on_prepared)
    media.connect("new-state", on_new_state)

    pay = media.get_element().get_by_name("pay0")
    if pay is not None:
        pad = pay.get_static_pad("src")

        def on_buffer(_pad: Gst.Pad, _info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
            emit("EVENT", "firstbuf", mount, f"{time.time():.6f}")
            return Gst.PadProbeReturn.REMOVE

        pad.add_probe(Gst.PadProbeType.BUFFER | Gst.PadProbeType.BUFFER_LIST, on_buffer)


def make_factory(mount: str, launch: str) -> GstRtspServer.RTSPMediaFactory:
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    factory.set_shared(False)
    # Tear the pipeline down when the client goes; never keep a finished media around.
    factory.set_stop_on_disconnect(True)

    def on_configure(
        _factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia
    ) -> None:
        emit("EVENT", "configure", mount, f"{time.time():.6f}")
        watch_media(mount, media)

    factory.connect("media-configure", on_configure)
    return factory


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=8554, help="TCP port on 127.0.0.1 (0: any)")
    ap.add_argument(
        "--file",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="mount /NAME serving the H.264 mp4 at PATH (repeatable)",
    )
    ap.add_argument(
        "--live",
        action="append",
        default=[],
        metavar="NAME",
        help="mount /NAME serving a live videotestsrc (repeatable)",
    )
    args = ap.parse_args(argv)
    for spec in args.file:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            ap.error(f"--file wants NAME=PATH, got {spec!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    Gst.init(None)

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    for spec in args.file:
        name, _, path = spec.partition("=")
        mount = "/" + name.strip("/")
        mounts.add_factory(mount, make_factory(mount, file_launch(path)))
    for name in args.live:
        mount = "/" + name.strip("/")
        mounts.add_factory(mount, make_factory(mount, LIVE_LAUNCH))

    loop = GLib.MainLoop()

    def quit_loop() -> bool:
        loop.quit()
        return GLib.SOURCE_REMOVE

    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, quit_loop)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, quit_loop)

    try:
        # create_source binds and listens now, so a busy port fails here, not later.
        source = server.create_source(None)
    except GLib.Error as exc:
        print(f"rtsp_server: cannot listen on 127.0.0.1:{args.port}: {exc}", file=sys.stderr)
        return 2
    source.attach(None)
    emit("READY", server.get_bound_port())

    # Drop sessions of vanished clients now and then, as gst-rtsp-server's examples do.
    def cleanup() -> bool:
        server.get_session_pool().cleanup()
        return GLib.SOURCE_CONTINUE

    GLib.timeout_add_seconds(2, cleanup)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
