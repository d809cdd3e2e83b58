"""WebRTC end-to-end scenarios, run INSIDE a private network namespace (see netns.py).

    python webrtc_scenario.py {whip,browser,whep} --workdir D --clip C --model M [--y4m Y] --out R

Each scenario starts the real daemon (`python -m streamd run`, SQLite, no MQTT: the shared broker
is outside the namespace), drives real peers against it, measures, and writes a JSON report to R
that the pytest side asserts on. Measurements: frames/s received from aiortc and sampled, CPU %
of the daemon process while one WebRTC camera streams (from /proc/<pid>/stat), and the time from
the publisher starting to the first analysed frame.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for `support`

from support.daemon import StreamdProcess
from support.netns import ADDR

TOKEN = "s3cret-token"
WHEP_TOKEN = "whep-token"
API_PORT = 18080
WHEP_PORT = 18090
FPS = 2.0
RULE = "alert when a person is present"
CLK = os.sysconf("SC_CLK_TCK")

Report = dict[str, Any]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, every thread included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


class Api:
    def __init__(self, port: int, token: str | None) -> None:
        self.base = f"http://{ADDR}:{port}"
        self.auth = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.AsyncClient(base_url=self.base, timeout=10.0)

    async def wait_up(self, proc: StreamdProcess, within_s: float = 30.0) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < within_s:
            assert proc.proc is not None
            if proc.proc.poll() is not None:
                raise RuntimeError(f"streamd exited: {proc.log()[-3000:]}")
            try:
                r = await self.http.get("/api/cameras", headers=self.auth)
                if r.status_code == 200:
                    return time.monotonic() - t0
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
        raise RuntimeError(f"streamd API did not come up: {proc.log()[-3000:]}")

    async def camera(self, name: str) -> dict[str, Any]:
        r = await self.http.get("/api/cameras", headers=self.auth)
        r.raise_for_status()
        cam: dict[str, Any] = r.json()[name]
        return cam

    async def wait_camera(
        self, name: str, cond: Callable[[dict[str, Any]], bool], within_s: float
    ) -> float | None:
        """Seconds until `cond(camera)` held, polling every 50 ms; None if it never did."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < within_s:
            if cond(await self.camera(name)):
                return time.monotonic() - t0
            await asyncio.sleep(0.05)
        return None

    async def measure(self, name: str, pid: int, seconds: float) -> Report:
        c0, cpu0, t0 = await self.camera(name), cpu_seconds(pid), time.monotonic()
        await asyncio.sleep(seconds)
        c1, cpu1, t1 = await self.camera(name), cpu_seconds(pid), time.monotonic()
        dt = t1 - t0

        def rate(key: str) -> float:
            return round((c1[key] - c0[key]) / dt, 2)

        return {
            "window_s": round(dt, 2),
            "received_fps": rate("decoded_frames"),
            "sampled_fps": rate("sampled_frames"),
            "analysed_fps": rate("analysed_frames"),
            "dropped": c1["dropped_frames"] - c0["dropped_frames"],
            "cpu_percent": round(100 * (cpu1 - cpu0) / dt, 1),
            "width": c1["width"],
            "height": c1["height"],
        }

    async def idle_cpu(self, pid: int, seconds: float) -> float:
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        await asyncio.sleep(seconds)
        return round(100 * (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0), 1)


def daemon_config(work: Path, model: str, cameras: dict[str, Any], token: str | None) -> Report:
    return {
        "data_dir": str(work / "data"),
        "segment_s": 1.0,
        "database": {"url": f"sqlite+aiosqlite:///{work / 'streamd.db'}"},
        "api": {"listen": f"{ADDR}:{API_PORT}", **({"token": token} if token else {})},
        "model": {"detector": {"path": model}},
        "cameras": cameras,
        "rules": [{"name": "person", "text": RULE, "cooldown_s": 60, "clear_s": 4}],
    }


async def events(proc: StreamdProcess) -> list[dict[str, Any]]:
    out = await asyncio.to_thread(proc.cli, "events", "-c", str(proc.config_path), "--json")
    if out.returncode != 0:
        raise RuntimeError(f"streamd events failed: {out.stderr}")
    rows: list[dict[str, Any]] = json.loads(out.stdout)
    return rows


async def wait_event(proc: StreamdProcess, camera: str, within_s: float) -> list[dict[str, Any]]:
    t0 = time.monotonic()
    while True:
        rows = [r for r in await events(proc) if r["camera"] == camera]
        if rows or time.monotonic() - t0 > within_s:
            return rows
        await asyncio.sleep(0.5)


async def stop_daemon(proc: StreamdProcess, report: Report) -> None:
    secs, rc = await asyncio.to_thread(proc.terminate)
    log = proc.log()
    report["shutdown"] = {"seconds": round(secs, 2), "rc": rc}
    report["log_problems"] = [
        line for line in log.splitlines() if "Traceback" in line or " ERROR " in line
    ]
    report["log_tail"] = log[-4000:]


# ---------------------------------------------------------------------------------------------
# aiortc publisher


class Publisher:
    """An aiortc WHIP client sending a clip (MediaPlayer, looped, VP8 by default)."""

    def __init__(self, clip: str) -> None:
        from aiortc import RTCConfiguration, RTCPeerConnection
        from aiortc.contrib.media import MediaPlayer

        self.player = MediaPlayer(clip, loop=True)
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        assert self.player.video is not None
        self.pc.addTransceiver(self.player.video, direction="sendonly")

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def publish(self, api: Api, camera: str, token: str | None) -> httpx.Response:
        from aiortc import RTCSessionDescription

        # As a page on another origin publishes: the answer must carry CORS headers for it.
        headers = {"Content-Type": "application/sdp", "Origin": "http://elsewhere.example"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        r = await api.http.post(f"/api/whip/{camera}", content=await self.offer(), headers=headers)
        if r.status_code == 201:
            await self.pc.setRemoteDescription(RTCSessionDescription(r.text, "answer"))
        return r

    async def close(self) -> None:
        await self.pc.close()


def _status(r: httpx.Response) -> Report:
    return {
        "status": r.status_code,
        "body": r.text[:300],
        "content_type": r.headers.get("content-type"),
    }


async def whip_errors(api: Api) -> Report:
    """Every refusal the WHIP endpoint makes, with its body."""
    sdp = {"Content-Type": "application/sdp"}
    auth_sdp = {**sdp, **api.auth}
    audio_only = (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\ns=-\r\nt=0 0\r\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=sendonly\r\n"
        "a=rtpmap:111 opus/48000/2\r\n"
    )
    out: Report = {}
    out["no_token"] = _status(await api.http.post("/api/whip/door", content="v=0", headers=sdp))
    out["wrong_token"] = _status(
        await api.http.post(
            "/api/whip/door", content="v=0", headers={**sdp, "Authorization": "Bearer nope"}
        )
    )
    out["wrong_content_type"] = _status(
        await api.http.post(
            "/api/whip/door", content="v=0", headers={"Content-Type": "text/plain", **api.auth}
        )
    )
    out["malformed_sdp"] = _status(
        await api.http.post("/api/whip/door", content="hello, not SDP", headers=auth_sdp)
    )
    out["audio_only_sdp"] = _status(
        await api.http.post("/api/whip/door", content=audio_only, headers=auth_sdp)
    )
    out["unknown_camera"] = _status(
        await api.http.post("/api/whip/nowhere", content="v=0", headers=auth_sdp)
    )
    out["not_whip_camera"] = _status(
        await api.http.post("/api/whip/pull", content="v=0", headers=auth_sdp)
    )
    out["delete_unknown_session"] = _status(
        await api.http.delete("/api/whip/door/nosuchsession", headers=api.auth)
    )
    pre = await api.http.request(
        "OPTIONS",
        "/api/whip/door",
        headers={
            "Origin": "http://elsewhere.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    out["preflight"] = {"status": pre.status_code, "headers": dict(pre.headers)}
    return out


async def scenario_whip(a: argparse.Namespace) -> Report:
    work = Path(a.workdir)
    cameras = {
        "door": {"webrtc": "whip", "fps": FPS, "stall_timeout_s": 5},
        # a non-WHIP camera for the 404 check; nothing listens there, so it keeps reconnecting
        "pull": {"webrtc": {"whep": f"http://{ADDR}:9/whep"}, "backoff_max_s": 5},
    }
    proc = StreamdProcess(daemon_config(work, a.model, cameras, TOKEN), work).start()
    api = Api(API_PORT, TOKEN)
    report: Report = {}
    pubs: list[Publisher] = []
    try:
        report["api_up_s"] = round(await api.wait_up(proc), 2)
        assert proc.proc is not None
        pid = proc.proc.pid
        report["idle_cpu_percent"] = await api.idle_cpu(pid, 2.0)
        report["errors_before"] = await whip_errors(api)

        t0 = time.monotonic()
        pub = Publisher(a.clip)
        pubs.append(pub)
        r = await pub.publish(api, "door", TOKEN)
        report["publish"] = {
            **_status(r),
            "body": r.text[:40],
            "location": r.headers.get("location"),
            "cors_origin": r.headers.get("access-control-allow-origin"),
            "cors_expose": r.headers.get("access-control-expose-headers"),
        }
        if r.status_code != 201:
            return report
        first = await api.wait_camera("door", lambda c: c["analysed_frames"] >= 1, 20)
        report["time_to_first_analysed_frame_s"] = (
            round(time.monotonic() - t0, 2) if first is not None else None
        )
        report["steady"] = await api.measure("door", pid, 8.0)

        # a second publisher while the first streams
        second = Publisher(a.clip)
        pubs.append(second)
        report["second_publisher"] = _status(await second.publish(api, "door", TOKEN))
        before = (await api.camera("door"))["sampled_frames"]
        report["errors_during"] = await whip_errors(api)
        await asyncio.sleep(1.5)
        cam = await api.camera("door")
        report["kept_streaming_after_errors"] = cam["sampled_frames"] > before and cam["online"]

        report["events"] = await wait_event(proc, "door", 15)

        location = report["publish"]["location"]
        d = await api.http.delete(location, headers=api.auth)
        report["delete"] = _status(d)
        off = await api.wait_camera("door", lambda c: not c["online"], 5)
        report["offline_after_delete_s"] = round(off, 2) if off is not None else None
        report["delete_again"] = _status(await api.http.delete(location, headers=api.auth))
        frozen = (await api.camera("door"))["sampled_frames"]
        await asyncio.sleep(1.0)
        report["frames_after_delete"] = (await api.camera("door"))["sampled_frames"] - frozen

        # the camera is free again
        third = Publisher(a.clip)
        pubs.append(third)
        r3 = await third.publish(api, "door", TOKEN)
        report["republish"] = _status(r3)
        if r3.status_code == 201:
            back = await api.wait_camera("door", lambda c: c["online"], 10)
            report["republish_online_s"] = round(back, 2) if back is not None else None
            await api.http.delete(r3.headers["location"], headers=api.auth)
        report["final_camera"] = await api.camera("door")
    finally:
        for p in pubs:
            await p.close()
        await stop_daemon(proc, report)
        await api.http.aclose()
    return report


# ---------------------------------------------------------------------------------------------
# headless Chromium with a fake camera


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


async def scenario_browser(a: argparse.Namespace) -> Report:
    work = Path(a.workdir)
    cameras = {"laptop": {"webrtc": "whip", "fps": FPS, "stall_timeout_s": 4}}
    proc = StreamdProcess(daemon_config(work, a.model, cameras, TOKEN), work).start()
    api = Api(API_PORT, TOKEN)
    report: Report = {}
    browser: subprocess.Popen[bytes] | None = None
    profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=work))
    browser_log = work / "chromium.log"
    try:
        report["api_up_s"] = round(await api.wait_up(proc), 2)
        assert proc.proc is not None
        pid = proc.proc.pid
        page = await api.http.get("/publish/laptop")  # no token: a browser navigates here
        report["page"] = {
            "status": page.status_code,
            "content_type": page.headers.get("content-type"),
            "has_whip_url": "/api/whip/laptop" in page.text,
        }
        report["page_unknown"] = _status(await api.http.get("/publish/nowhere"))
        binary = chromium_binary()
        if binary is None:
            report["skipped"] = "chromium not installed (apt-get install chromium)"
            return report
        url = f"{api.base}/publish/laptop?autostart=1#token={TOKEN}"
        t0 = time.monotonic()
        browser = spawn(
                [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
                 "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                 f"--use-file-for-fake-video-capture={a.y4m}",
                 "--allow-loopback-in-peer-connection",
                 "--disable-features=WebRtcHideLocalIpsWithMdns", "--enable-logging=stderr",
                 "--v=0", url],
                browser_log,
            )  # fmt: skip
        first = await api.wait_camera("laptop", lambda c: c["analysed_frames"] >= 1, 40)
        report["time_to_first_analysed_frame_s"] = (
            round(time.monotonic() - t0, 2) if first is not None else None
        )
        if first is None:
            return report
        report["steady"] = await api.measure("laptop", pid, 6.0)
        report["events"] = await wait_event(proc, "laptop", 15)
        # closing the browser: its pagehide DELETE, or else the stall watchdog, frees the camera
        t1 = time.monotonic()
        browser.send_signal(signal.SIGTERM)
        await asyncio.to_thread(browser.wait, 10)
        off = await api.wait_camera("laptop", lambda c: not c["online"], 15)
        report["offline_after_browser_exit_s"] = (
            round(time.monotonic() - t1, 2) if off is not None else None
        )
    finally:
        if browser is not None and browser.poll() is None:
            browser.kill()
            browser.wait()
        await stop_daemon(proc, report)
        await api.http.aclose()
        report["browser_log_tail"] = [
            line
            for line in browser_log.read_text(errors="replace").splitlines()
            if "streamd publish" in line
        ][-20:] if browser_log.exists() else []  # fmt: skip
        shutil.rmtree(profile, ignore_errors=True)
    return report


# ---------------------------------------------------------------------------------------------
# WHEP pull, with the server killed and restarted


def spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as f:
        return subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT)


def start_whep_server(clip: str, log: Path) -> subprocess.Popen[bytes]:
    script = Path(__file__).with_name("whep_server.py")
    return spawn([sys.executable, str(script), ADDR, str(WHEP_PORT), clip, WHEP_TOKEN], log)


async def wait_whep_up(http: httpx.AsyncClient, within_s: float = 20.0) -> Report:
    t0 = time.monotonic()
    while time.monotonic() - t0 < within_s:
        try:
            r = await http.get(f"http://{ADDR}:{WHEP_PORT}/stats")
            if r.status_code == 200:
                stats: Report = r.json()
                return stats
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("WHEP test server did not come up")


async def scenario_whep(a: argparse.Namespace) -> Report:
    work = Path(a.workdir)
    server_log = work / "whep_server.log"
    http = httpx.AsyncClient(timeout=5.0)
    server = start_whep_server(a.clip, server_log)
    await wait_whep_up(http)
    cameras = {
        "pull": {
            "webrtc": {"whep": f"http://{ADDR}:{WHEP_PORT}/whep", "token": WHEP_TOKEN},
            "fps": FPS,
            "stall_timeout_s": 3,
            "backoff_max_s": 2,
        }
    }
    t0 = time.monotonic()
    proc = StreamdProcess(daemon_config(work, a.model, cameras, None), work).start()
    api = Api(API_PORT, None)
    report: Report = {}
    try:
        report["api_up_s"] = round(await api.wait_up(proc), 2)
        t_api = time.monotonic()
        assert proc.proc is not None
        pid = proc.proc.pid
        first = await api.wait_camera("pull", lambda c: c["analysed_frames"] >= 1, 30)
        # the daemon connects out as it starts: count from its start, and from its API being up
        report["time_to_first_analysed_frame_s"] = (
            round(time.monotonic() - t0, 2) if first is not None else None
        )
        report["first_analysed_after_api_up_s"] = round(time.monotonic() - t_api, 2)
        if first is None:
            return report
        await asyncio.sleep(2.0)  # let start-up work (model warm-up) finish before measuring CPU
        report["steady"] = await api.measure("pull", pid, 6.0)
        report["events"] = await wait_event(proc, "pull", 15)

        before = await api.camera("pull")
        t_kill = time.monotonic()
        server.kill()
        server.wait()
        off = await api.wait_camera("pull", lambda c: not c["online"], 15)
        report["offline_after_kill_s"] = round(time.monotonic() - t_kill, 2) if off else None
        await asyncio.sleep(1.0)  # down for a while: the daemon retries against a closed port
        t_restart = time.monotonic()
        server = start_whep_server(a.clip, server_log)
        await wait_whep_up(http)
        back = await api.wait_camera(
            "pull",
            lambda c: c["online"] and c["sampled_frames"] > before["sampled_frames"] + 2,
            30,
        )
        report["back_after_restart_s"] = (
            round(time.monotonic() - t_restart, 2) if back is not None else None
        )
        after = await api.camera("pull")
        report["reconnects"] = after["reconnects"] - before["reconnects"]
        report["last_error"] = after["last_error"]
        report["after_restart"] = await api.measure("pull", pid, 3.0)
    finally:
        await stop_daemon(proc, report)
        if server.poll() is None:
            try:
                report["server_stats"] = (await http.get(f"http://{ADDR}:{WHEP_PORT}/stats")).json()
            except httpx.HTTPError as exc:
                report["server_stats"] = {"error": str(exc)}
            server.terminate()
            server.wait(10)
        await http.aclose()
        report["server_log_tail"] = server_log.read_text(errors="replace")[-2000:]
    return report


SCENARIOS: dict[str, Callable[[argparse.Namespace], Awaitable[Report]]] = {
    "whip": scenario_whip,
    "browser": scenario_browser,
    "whep": scenario_whep,
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario", choices=sorted(SCENARIOS))
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--clip", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--y4m")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    try:
        report = asyncio.run(SCENARIOS[a.scenario](a))
    except Exception:
        report = {"error": traceback.format_exc()}
    Path(a.out).write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
