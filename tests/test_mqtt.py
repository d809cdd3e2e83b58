"""MqttPublisher against real Mosquitto brokers on 127.0.0.1.

The shared broker (127.0.0.1:1883) is only ever talked to, with a unique topic prefix per test and
its retained topics cleared afterwards. Outage drills use a private broker on a free port, started
and stopped by the test itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from streamd.config import MqttConfig
from streamd.events.change import EventChange, new_event_id
from streamd.events.db import make_engine, upgrade
from streamd.events.discovery import Discovery
from streamd.events.mqtt import MqttPublisher, probe_broker
from streamd.events.store import EventStore

HOST = "127.0.0.1"
SHARED_PORT = 1883
WAIT_S = 15.0
REPO = Path(__file__).resolve().parents[1]


# -- helpers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    topic: str
    payload: str
    retain: bool
    at: float


class Subscriber:
    """Collects every message on `topics`; reconnects (bounded) when the broker goes away."""

    def __init__(
        self,
        port: int,
        topics: list[str],
        *,
        identifier: str | None = None,
        clean_session: bool | None = None,
    ) -> None:
        self.port = port
        self.topics = topics
        self.identifier = identifier
        self.clean_session = clean_session
        self.messages: list[Received] = []
        self.subscribed = asyncio.Event()
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Subscriber:
        self._task = asyncio.create_task(self._run(), name="test-subscriber")
        async with asyncio.timeout(WAIT_S):
            await self.subscribed.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        for _ in range(300):  # ~30 s of reconnect attempts at most
            client = aiomqtt.Client(
                HOST,
                self.port,
                identifier=self.identifier,
                clean_session=self.clean_session,
                timeout=2,
            )
            try:
                async with client:
                    for topic in self.topics:
                        await client.subscribe(topic, qos=1)
                    self.subscribed.set()
                    async for msg in client.messages:
                        payload = msg.payload
                        assert isinstance(payload, bytes)
                        self.messages.append(
                            Received(str(msg.topic), payload.decode(), msg.retain, time.monotonic())
                        )
                        self._changed.set()
            except aiomqtt.MqttError:
                self.subscribed.clear()
                await asyncio.sleep(0.1)

    async def wait_for(
        self, pred: Callable[[Received], bool], within: float = WAIT_S, start: int = 0
    ) -> Received:
        """The first message from index `start` on that satisfies `pred`."""
        async with asyncio.timeout(within):
            while True:
                for msg in self.messages[start:]:
                    if pred(msg):
                        return msg
                self._changed.clear()
                await self._changed.wait()

    def events(self, prefix: str) -> list[dict[str, Any]]:
        return [json.loads(m.payload) for m in self.messages if m.topic == f"{prefix}/events"]


def topic_is(topic: str, payload: str | None = None) -> Callable[[Received], bool]:
    return lambda m: m.topic == topic and (payload is None or m.payload == payload)


def envelope_is(prefix: str, kind: str, event_id: str) -> Callable[[Received], bool]:
    def pred(m: Received) -> bool:
        if m.topic != f"{prefix}/events":
            return False
        doc = json.loads(m.payload)
        return bool(doc["type"] == kind and doc["after"]["id"] == event_id)

    return pred


def change(kind: str, event_id: str, start: float, end: float | None = None) -> EventChange:
    return EventChange(
        kind=kind,  # type: ignore[arg-type]
        event_id=event_id,
        camera="lobby",
        rule_name="bag",
        rule_text="alert when a bag is left unattended for 30 seconds",
        start_time=start,
        end_time=end,
        score=0.8,
        top_score=0.8,
    )


async def clear_retained(port: int, patterns: list[str]) -> None:
    """Delete every retained message under `patterns` (an empty retained payload does that)."""
    async with aiomqtt.Client(HOST, port, timeout=5) as client:
        for pattern in patterns:
            await client.subscribe(pattern, qos=1)
        found: set[str] = set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                async for msg in client.messages:
                    if msg.retain:
                        found.add(str(msg.topic))
        for topic in found:
            await client.publish(topic, b"", qos=1, retain=True)


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, WAIT_S)


async def eventually(check: Callable[[], Awaitable[bool]], within: float = WAIT_S) -> None:
    """Poll `check` every 20 ms until it holds; fail after `within` seconds."""
    for _ in range(int(within / 0.02) + 1):
        if await check():
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"condition not met within {within} s")


async def outbox_empty(store: EventStore) -> bool:
    return await store.outbox.pending_count() == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class PrivateBroker:
    """A Mosquitto of the test's own on a free loopback port, persistent across restarts."""

    def __init__(self, directory: Path, *, anonymous: bool = True) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            pytest.skip("mosquitto is not installed")
        self.binary = binary
        self.port = free_port()
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.conf = self.dir / "mosquitto.conf"
        user = "root" if os.geteuid() == 0 else os.environ.get("USER", "mosquitto")
        self.conf.write_text(
            f"listener {self.port} {HOST}\n"
            f"allow_anonymous {'true' if anonymous else 'false'}\n"
            "persistence true\n"
            f"persistence_location {self.dir}/\n"
            f"log_dest file {self.dir}/mosquitto.log\n"
            # Running as root, Mosquitto would otherwise switch to user "mosquitto", which
            # cannot write to pytest's private tmp directory.
            f"user {user}\n"
        )
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            self.binary,
            "-c",
            str(self.conf),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        async with asyncio.timeout(10):
            while True:
                try:
                    _, writer = await asyncio.open_connection(HOST, self.port)
                except OSError:
                    if self.proc.returncode is not None:
                        log = (self.dir / "mosquitto.log").read_text(errors="replace")
                        pytest.fail(f"private mosquitto exited: {log[-2000:]}")
                    await asyncio.sleep(0.05)
                    continue
                writer.close()
                await writer.wait_closed()
                return

    async def stop(self) -> None:
        # SIGTERM, not SIGKILL: clients see the same dropped TCP connection either way, but only
        # a clean exit saves the subscriber's persistent session, which the test relies on.
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(10):
                await self.proc.wait()
        self.proc = None


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def prefix() -> str:
    return f"streamd-test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def shared_broker(prefix: str) -> AsyncIterator[int]:
    cfg = MqttConfig(host=HOST, port=SHARED_PORT)
    if not await probe_broker(cfg):
        pytest.skip(f"no MQTT broker at {HOST}:{SHARED_PORT}")
    yield SHARED_PORT
    await clear_retained(SHARED_PORT, [f"{prefix}/#", f"{prefix}-ha/#"])


@pytest.fixture
async def private_broker(tmp_path: Path) -> AsyncIterator[PrivateBroker]:
    broker = PrivateBroker(tmp_path / "broker")
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()


@pytest.fixture
async def store(tmp_path: Path, prefix: str) -> AsyncIterator[EventStore]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'streamd.db'}"
    await upgrade(url)
    engine = make_engine(url)
    yield EventStore(engine, tmp_path / "snapshots", prefix)
    await engine.dispose()


def publisher(port: int, prefix: str, store: EventStore, **kwargs: object) -> MqttPublisher:
    cfg = MqttConfig(
        host=HOST,
        port=port,
        topic_prefix=prefix,
        discovery_prefix=f"{prefix}-ha",  # never touch the real homeassistant/ tree
    )
    timing: dict[str, object] = {"idle_wait_s": 0.5, "backoff_base_s": 0.1, "backoff_cap_s": 0.5}
    timing.update(kwargs)
    return MqttPublisher(cfg, store, [("lobby", "bag"), ("door", "van")], **timing)  # type: ignore[arg-type]


# -- tests ------------------------------------------------------------------------------------


async def test_publish_retained_state_discovery_and_offline(
    shared_broker: int, store: EventStore, prefix: str
) -> None:
    ha = f"{prefix}-ha"
    async with Subscriber(shared_broker, [f"{prefix}/#", f"{ha}/#"]) as sub:
        pub = publisher(shared_broker, prefix, store)
        task = asyncio.create_task(pub.run(), name="mqtt-publisher")
        try:
            disc = Discovery(MqttConfig(topic_prefix=prefix, discovery_prefix=ha))
            node = f"streamd_{prefix}"  # a non-default prefix gets its own HA device
            assert disc.node == node
            topic = disc.rule_config_topic("lobby", "bag")
            assert topic.startswith(f"{ha}/binary_sensor/{node}/lobby_bag_")
            config = json.loads((await sub.wait_for(topic_is(topic))).payload)
            assert config["state_topic"] == f"{prefix}/lobby/bag/state"
            assert (config["payload_on"], config["payload_off"]) == ("ON", "OFF")
            assert config["availability_topic"] == f"{prefix}/available"
            assert config["unique_id"] == f"{node}_{topic.split('/')[3]}"
            assert config["device"]["identifiers"] == [f"{node}_lobby"]
            await sub.wait_for(topic_is(disc.rule_config_topic("door", "van")))
            # Every entity starts OFF, before `online`: never "unknown" until a first event.
            off = await sub.wait_for(topic_is(f"{prefix}/lobby/bag/state", "OFF"))
            online = await sub.wait_for(topic_is(f"{prefix}/available", "online"))
            assert sub.messages.index(off) < sub.messages.index(online)

            t0 = time.time()
            eid = new_event_id(t0)
            recorded = time.monotonic()
            await store.record(change("new", eid, t0))
            got = await sub.wait_for(envelope_is(prefix, "new", eid))
            latency_ms = (got.at - recorded) * 1000
            env = json.loads(got.payload)
            assert env["before"] == env["after"]
            assert env["after"]["end_time"] is None
            assert env["after"]["label"] == "bag"
            assert got.retain is False
            state = await sub.wait_for(topic_is(f"{prefix}/lobby/bag/state", "ON"))
            assert sub.messages.index(state) > sub.messages.index(got)

            # A late subscriber gets the retained state and availability at once.
            async with Subscriber(shared_broker, [f"{prefix}/#"]) as late:
                on = await late.wait_for(topic_is(f"{prefix}/lobby/bag/state"), within=5)
                assert (on.payload, on.retain) == ("ON", True)
                online = await late.wait_for(topic_is(f"{prefix}/available"), within=5)
                assert (online.payload, online.retain) == ("online", True)
                assert not [m for m in late.messages if m.topic == f"{prefix}/events"]

            mark_on = len(sub.messages)
            await store.record(change("end", eid, t0, t0 + 3.5))
            end = json.loads((await sub.wait_for(envelope_is(prefix, "end", eid))).payload)
            assert end["before"]["end_time"] is None
            assert end["after"]["end_time"] == pytest.approx(t0 + 3.5, abs=1e-6)
            await sub.wait_for(topic_is(f"{prefix}/lobby/bag/state", "OFF"), start=mark_on)
            assert pub.stats.connected
        finally:
            mark = len(sub.messages)
            await stop(task)

        offline = await sub.wait_for(topic_is(f"{prefix}/available", "offline"), start=mark)
        assert offline.payload == "offline"
        assert await store.outbox.pending() == []
        assert not pub.stats.connected
        assert pub.stats.published == 4
        assert pub.stats.reconnects == 0
        assert latency_ms < 1000, latency_ms

    async with Subscriber(shared_broker, [f"{prefix}/available"]) as after:
        retained = await after.wait_for(topic_is(f"{prefix}/available"), within=5)
        assert (retained.payload, retained.retain) == ("offline", True)


async def test_shutdown_drains_the_outbox_first(
    shared_broker: int, store: EventStore, prefix: str
) -> None:
    async with Subscriber(shared_broker, [f"{prefix}/#"]) as sub:
        # A long idle wait, and the rows come from a second store (as from another process), so
        # nothing wakes the publisher: only its shutdown drain can send them.
        pub = publisher(shared_broker, prefix, store, idle_wait_s=60.0)
        task = asyncio.create_task(pub.run())
        await sub.wait_for(topic_is(f"{prefix}/available", "online"))
        other = EventStore(store.engine, store.snapshot_dir, prefix)
        ids = [new_event_id(time.time() + i) for i in range(20)]
        for i, eid in enumerate(ids):
            await other.record(change("new", eid, time.time() + i))
        assert await store.outbox.pending_count() == 40
        await asyncio.sleep(0.2)
        assert not sub.events(prefix)
        await stop(task)
        offline = await sub.wait_for(topic_is(f"{prefix}/available", "offline"))
        got = [e["after"]["id"] for e in sub.events(prefix)]
        assert got == ids
        assert sub.messages.index(offline) == len(sub.messages) - 1
        assert await store.outbox.pending() == []


async def test_broker_outage_keeps_messages_in_outbox(
    private_broker: PrivateBroker, store: EventStore, prefix: str
) -> None:
    port = private_broker.port
    # A persistent session with a QoS 1 subscription: the broker queues what the publisher
    # sends while this subscriber is still reconnecting, so nothing depends on who is first.
    sub = Subscriber(port, [f"{prefix}/#"], identifier=f"sub-{prefix}", clean_session=False)
    async with sub:
        pub = publisher(port, prefix, store, timeout_s=3.0)
        task = asyncio.create_task(pub.run())
        try:
            await sub.wait_for(topic_is(f"{prefix}/available", "online"))
            t0 = time.time()
            first = new_event_id(t0)
            await store.record(change("new", first, t0))
            await sub.wait_for(envelope_is(prefix, "new", first))
            await eventually(lambda: outbox_empty(store))  # acknowledged and marked sent

            await private_broker.stop()

            async def disconnected() -> bool:
                return not pub.stats.connected

            await eventually(disconnected)

            second = new_event_id(t0 + 1)
            await store.record(change("end", first, t0, t0 + 1))
            await store.record(change("new", second, t0 + 1))
            await store.record(change("end", second, t0 + 1, t0 + 2))
            await asyncio.sleep(1.0)  # several reconnect attempts against a closed port
            assert pub.stats.reconnects >= 2, pub.stats
            assert await store.outbox.pending_count() == 6  # 3 envelopes, OFF, ON, OFF
            assert not pub.stats.connected

            await private_broker.start()
            for kind, eid in (("end", first), ("new", second), ("end", second)):
                await sub.wait_for(envelope_is(prefix, kind, eid))
            await eventually(lambda: outbox_empty(store))
            assert pub.stats.connected
            # The retained state is the last one recorded, not a stale ON resent out of order.
            async with Subscriber(port, [f"{prefix}/lobby/bag/state"]) as late:
                state = await late.wait_for(topic_is(f"{prefix}/lobby/bag/state"), within=5)
                assert (state.payload, state.retain) == ("OFF", True)
            kinds = [(e["type"], e["after"]["id"]) for e in sub.events(prefix)]
            # At-least-once: a message may repeat, but the order of first sightings holds.
            assert list(dict.fromkeys(kinds)) == [
                ("new", first),
                ("end", first),
                ("new", second),
                ("end", second),
            ]
        finally:
            await stop(task)


@pytest.mark.parametrize(
    ("sig", "min_s", "max_s"),
    [
        # Killed: the kernel closes the socket without an MQTT DISCONNECT; the broker sends the
        # will as soon as it reads the EOF.
        (signal.SIGKILL, 0.0, 1.5),
        # Frozen: the socket stays open and silent, so only keepalive expiry can tell the broker
        # the client is gone. MQTT says 1.5 x keepalive (3 s here); Mosquitto 2.0.11 took
        # 8.3-9.0 s in practice (and ~10.5 s for mosquitto_sub -k 5), hence the loose bound.
        (signal.SIGSTOP, 2.0, 20.0),
    ],
    ids=["sigkill", "sigstop"],
)
async def test_last_will(
    shared_broker: int, tmp_path: Path, prefix: str, sig: signal.Signals, min_s: float, max_s: float
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'will.db'}"
    script = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from streamd.config import MqttConfig\n"
        "from streamd.events.db import make_engine, upgrade\n"
        "from streamd.events.mqtt import MqttPublisher\n"
        "from streamd.events.store import EventStore\n"
        "async def main():\n"
        "    url, prefix, port, snaps = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]\n"
        "    await upgrade(url)\n"
        "    store = EventStore(make_engine(url), Path(snaps), prefix)\n"
        "    cfg = MqttConfig(host='127.0.0.1', port=port, topic_prefix=prefix, discovery=False)\n"
        "    await MqttPublisher(cfg, store, keepalive=2).run()\n"
        "asyncio.run(main())\n"
    )
    async with Subscriber(shared_broker, [f"{prefix}/available"]) as sub:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            script,
            url,
            prefix,
            str(shared_broker),
            str(tmp_path / "snaps"),
            cwd=REPO,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            await sub.wait_for(topic_is(f"{prefix}/available", "online"), within=30)
        except TimeoutError:
            proc.kill()
            _, err = await proc.communicate()
            pytest.fail(f"publisher subprocess never came online: {err.decode()[-2000:]}")
        mark = len(sub.messages)
        signalled = time.monotonic()
        try:
            proc.send_signal(sig)  # no chance to say goodbye: the broker must say it
            will = await sub.wait_for(topic_is(f"{prefix}/available"), start=mark, within=30)
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.communicate()
        assert (will.payload, will.retain) == ("offline", False)  # live delivery of the will
        assert min_s <= will.at - signalled < max_s, will.at - signalled


async def test_probe_broker(shared_broker: int) -> None:
    assert await probe_broker(MqttConfig(host=HOST, port=shared_broker))
    started = time.monotonic()
    assert not await probe_broker(MqttConfig(host=HOST, port=free_port()), timeout=2.0)
    assert time.monotonic() - started < 3.0


async def test_cancel_while_broker_unreachable(store: EventStore, prefix: str) -> None:
    pub = publisher(free_port(), prefix, store)  # nothing listens there
    task = asyncio.create_task(pub.run())

    async def retrying() -> bool:
        return pub.stats.reconnects >= 3

    await eventually(retrying)
    started = time.monotonic()
    await stop(task)
    assert time.monotonic() - started < 1.0
    assert not pub.stats.connected
    assert "refused" in (pub.stats.last_error or "").lower()


async def test_rejected_login_keeps_password_out_of_logs(
    tmp_path: Path, store: EventStore, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    broker = PrivateBroker(tmp_path / "closed-broker", anonymous=False)  # refuses every login
    await broker.start()
    try:
        secret = "hunter2-" + uuid.uuid4().hex
        cfg = MqttConfig(
            host=HOST,
            port=broker.port,
            topic_prefix=prefix,
            username="streamd",
            password=secret,  # type: ignore[arg-type]
            discovery=False,
        )
        pub = MqttPublisher(cfg, store, backoff_base_s=0.05, backoff_cap_s=0.1)
        caplog.set_level("DEBUG")
        task = asyncio.create_task(pub.run())

        async def rejected_twice() -> bool:
            return pub.stats.reconnects >= 2

        await eventually(rejected_twice)
        await stop(task)
        assert not await probe_broker(cfg)
    finally:
        await broker.stop()
    assert pub.stats.last_error
    assert "authori" in pub.stats.last_error.lower()
    assert caplog.records
    assert secret not in caplog.text
    assert secret not in repr(cfg)


def test_a_late_acknowledgement_on_shutdown_is_not_logged_as_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """aiomqtt logs, with a traceback, the broker's SUBACK for a subscribe that was cancelled
    (the daemon stopping right after sending it). streamd's clients log through CLIENT_LOG,
    which keeps that at debug level without a traceback; anything else passes unchanged."""
    from streamd.events.broker import CLIENT_LOG

    caplog.set_level(logging.DEBUG)
    try:
        {}.pop(52)
    except KeyError:
        CLIENT_LOG.exception('Unexpected message ID "%d" in on_subscribe callback', 52)
    CLIENT_LOG.warning("Pending publish calls threshold reached")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    assert all(r.exc_info is None for r in caplog.records)
    assert any("its call was cancelled" in r.getMessage() for r in caplog.records)
    assert any("threshold reached" in r.getMessage() for r in caplog.records)
