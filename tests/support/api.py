"""The real HTTP app around real daemon objects (SQLite event log, rule manager, pipelines that
are built but not started), served by uvicorn on 127.0.0.1 in a thread of the test process."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import uvicorn

from streamd.api import ApiState, create_app
from streamd.api.server import _Server
from streamd.config import parse_config
from streamd.daemon import compile_plans
from streamd.events.change import EventChange, Snapshot, new_event_id
from streamd.events.db import make_engine, upgrade
from streamd.events.rule_store import RuleStore
from streamd.events.store import EventStore
from streamd.pipeline import CameraPipeline
from streamd.rules.manager import RuleManager
from support.daemon import free_port, wait_for

CONFIG = """
api: {{listen: "127.0.0.1:{port}"{token}}}
cameras:
  door: {{webrtc: whip}}
  yard: {{demo: true}}
rules:
  - {{name: person, text: "alert when a person is present"}}
"""


def new_event(
    camera: str = "yard", rule: str = "person", start: float = 1_790_000_000.0
) -> EventChange:
    """A real `new` change with a real frame, as a pipeline hands it to the store."""
    image = np.zeros((48, 64, 3), np.uint8)
    image[10:30, 20:40] = (0, 200, 0)
    return EventChange(
        "new", new_event_id(start), camera, rule, "alert when a person is present", start, None,
        0.8, 0.8, snapshot=Snapshot(image),
    )  # fmt: skip


@contextmanager
def serve(data_dir: Path, token: str | None = None) -> Iterator[tuple[str, ApiState, str]]:
    """Yield (base URL, state, id of one recorded event with a snapshot).

    `data_dir` is used as given, relative or not, as the daemon would use the config's value.
    """
    port = free_port()
    cfg = parse_config(CONFIG.format(port=port, token=f", token: {token}" if token else ""))
    url = f"sqlite+aiosqlite:///{data_dir.resolve() / 'streamd.db'}"
    asyncio.run(upgrade(url))
    # Built the way Daemon.run builds it: snapshots under data_dir, URLs from api.base_url.
    engine = make_engine(url)
    store = EventStore(
        engine, data_dir / "snapshots", "streamd-test", snapshot_url_base=cfg.api.base_url
    )
    change = new_event()

    async def seed() -> None:
        await store.record(change)
        await engine.dispose()  # the server's loop opens its own connections

    asyncio.run(seed())
    plans = compile_plans(cfg)

    async def sink(change: EventChange) -> None:
        await store.record(change)

    pipelines = {
        name: CameraPipeline(name, cam, [], None, sink, webrtc=cfg.webrtc)
        for name, cam in cfg.cameras.items()
    }
    rules = RuleManager(
        pipelines, RuleStore(engine), sink, {r.name: (r, plans[r.name]) for r in cfg.rules}
    )
    state = ApiState(cfg, store, pipelines, plans, rules=rules)
    server = _Server(
        uvicorn.Config(
            create_app(state), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
        )
    )
    thread = threading.Thread(target=server.run, name="api-under-test", daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: server.started, 15), "uvicorn did not start"
        yield f"http://127.0.0.1:{port}", state, change.event_id
    finally:
        server.should_exit = True
        thread.join(10)
        asyncio.run(engine.dispose())
