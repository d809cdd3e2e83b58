"""GET /metrics: Prometheus exposition through prometheus_client collectors.

Everything is read at scrape time from the objects that own it (cameras, publisher, retention,
windows) and from SQL, so the numbers agree with `streamd events` and GET /api/cameras: a
collector holds no copy that could drift. Each scrape builds its own registry: the SQL counts
are read asynchronously first, then `generate_latest` renders them with HELP and TYPE lines.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streamd.events.change import EventChange
from streamd.events.db import DatabaseError
from streamd.events.store import EventStore
from streamd.ops import SqlCounts, sql_counts

if TYPE_CHECKING:
    from streamd.events.mqtt import MqttPublisher
    from streamd.events.writer import EventWriter
    from streamd.ops import Operations
    from streamd.pipeline import CameraPipeline
    from streamd.window.camera_window import CameraWindow

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

log = logging.getLogger(__name__)


@dataclass
class Metrics:
    """The daemon's metrics; `render()` answers one scrape."""

    store: EventStore
    pipelines: Mapping[str, CameraPipeline]
    publisher: MqttPublisher | None = None
    ops: Operations | None = None
    windows: Mapping[str, CameraWindow] | None = None
    # Events opened by this process and handed to the event log, per (camera, rule).
    events_recorded: Counter[tuple[str, str]] = field(default_factory=Counter)
    # The durable event writer: outages, the journal, changes waiting for the database.
    writer: EventWriter | None = None

    def count(self, change: EventChange) -> None:
        """Call after a change was recorded."""
        if change.kind == "new":
            self.events_recorded[(change.camera, change.rule_name)] += 1

    async def render(self) -> bytes:
        counts: SqlCounts | None
        try:
            counts = await sql_counts(self.store.engine)
        except DatabaseError as exc:
            log.debug("/metrics without SQL counts: %s", exc)
            counts = None
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self, counts))
        return generate_latest(registry)


class _Collector(Collector):
    def __init__(self, m: Metrics, counts: SqlCounts | None) -> None:
        self.m = m
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        yield from self._cameras()
        yield from self._events()
        yield from self._writer()
        yield from self._mqtt()
        yield from self._ops()
        yield from self._windows()

    def _cameras(self) -> Iterator[Metric]:
        online = GaugeMetricFamily(
            "streamd_camera_online", "1 while the camera delivers frames.", labels=["camera"]
        )
        families = {key: _family(kind, name, doc, ["camera"]) for key, kind, name, doc in _CAMERA}
        for name, p in self.m.pipelines.items():
            cam = p.camera
            online.add_metric([name], int(cam.health.online))
            values = {
                "decoded": cam.stats.decoded,
                "demuxed": cam.stats.demuxed,
                "sampled": cam.stats.sampled,
                "keyframe_interval": cam.stats.keyframe_interval_s,
                "dropped": cam.dropped,
                "analysed": p.perception.stats.analysed,
                "gated": p.perception.stats.gated,
                "pose": p.perception.stats.pose_calls,
                "reconnects": cam.health.reconnects,
                "restarts": p.stats.restarts,
                "changes": p.stats.events,
                "target_fps": p.config.fps,
                "effective_fps": p.effective_fps,
                "skipped": p.stats.skipped,
            }
            for key, family in families.items():
                value = values[key]
                if value is not None:  # a keyframe interval is unknown until two were seen
                    family.add_metric([name], value)
        yield online
        yield from families.values()
        yield from self._latency()

    def _latency(self) -> Iterator[Metric]:
        """Every camera's frame-to-rule histogram as one family with a camera label."""
        merged: Metric | None = None
        for p in self.m.pipelines.values():
            for family in p.latency.histogram.collect():
                if merged is None:
                    merged = family
                else:
                    merged.samples.extend(family.samples)
        if merged is not None:
            yield merged

    def _events(self) -> Iterator[Metric]:
        labels = ["camera", "rule"]
        recorded = CounterMetricFamily(
            "streamd_events",
            "Events opened by this process and recorded in the event log.",
            labels=labels,
        )
        for (camera, rule), n in sorted(self.m.events_recorded.items()):
            recorded.add_metric([camera, rule], n)
        yield recorded
        writer = self.m.writer
        up = GaugeMetricFamily(
            "streamd_database_up",
            "1 when the event log answered this scrape and the event writer is not in an outage.",
        )
        up.add_metric(
            [], int(self.counts is not None and (writer is None or writer.stats.database_up))
        )
        yield up
        if self.counts is None:
            return
        stored = GaugeMetricFamily(
            "streamd_events_stored", "Events in the SQL event log (after retention).", labels=labels
        )
        open_ = GaugeMetricFamily(
            "streamd_events_open", "Events in the SQL event log not ended yet.", labels=labels
        )
        for key in sorted(self.counts.events):
            stored.add_metric(list(key), self.counts.events[key])
            open_.add_metric(list(key), self.counts.open_events.get(key, 0))
        pending = GaugeMetricFamily(
            "streamd_outbox_pending",
            "MQTT messages recorded but not yet acknowledged by the broker.",
        )
        pending.add_metric([], self.counts.outbox_pending)
        yield from (stored, open_, pending)

    def _writer(self) -> Iterator[Metric]:
        writer = self.m.writer
        if writer is None:
            return
        st = writer.stats
        yield _counter(
            "streamd_database_outages",
            "Database outages the event writer went through.",
            st.outages,
        )
        pending = GaugeMetricFamily(
            "streamd_event_changes_pending", "Event changes waiting for the database."
        )
        pending.add_metric([], writer.pending)
        yield pending
        yield _counter(
            "streamd_event_changes_buffered",
            "Event changes that waited in the journal for the database.",
            st.buffered,
        )
        yield _counter(
            "streamd_event_changes_written", "Event changes committed to the database.", st.written
        )
        yield _counter(
            "streamd_event_changes_dropped",
            "Event changes given up (outage past its budget, journal full, bad data).",
            st.dropped,
        )
        journal = GaugeMetricFamily("streamd_event_journal_bytes", "Size of the event journal.")
        journal.add_metric([], st.journal_bytes)
        yield journal

    def _mqtt(self) -> Iterator[Metric]:
        pub = self.m.publisher
        if pub is None:
            return
        connected = GaugeMetricFamily("streamd_mqtt_connected", "1 while connected to the broker.")
        connected.add_metric([], int(pub.stats.connected))
        yield connected
        yield _counter(
            "streamd_mqtt_published",
            "Outbox messages the broker acknowledged.",
            pub.stats.published,
        )
        yield _counter(
            "streamd_mqtt_reconnects", "Connection attempts after a failure.", pub.stats.reconnects
        )
        yield _counter(
            "streamd_mqtt_dropped",
            "Outbox messages the client refused (logged).",
            pub.stats.dropped,
        )

    def _ops(self) -> Iterator[Metric]:
        ops = self.m.ops
        if ops is None:
            return
        r = ops.retention.stats
        yield _counter("streamd_retention_runs", "Retention passes.", r.runs)
        yield _counter("streamd_retention_failures", "Retention passes that failed.", r.failures)
        yield _counter(
            "streamd_retention_events_deleted", "Events deleted by retention.", r.events_deleted
        )
        yield _counter(
            "streamd_retention_snapshots_deleted",
            "Snapshots deleted by retention.",
            r.snapshots_deleted,
        )
        yield _counter(
            "streamd_stats_published", "Messages sent to <prefix>/stats.", ops.stats_published
        )
        size = GaugeMetricFamily(
            "streamd_snapshot_bytes",
            "Bytes of event snapshots per camera, at the last retention pass.",
            labels=["camera"],
        )
        for camera, n in sorted(r.snapshot_bytes.items()):
            size.add_metric([camera], n)
        yield size

    def _windows(self) -> Iterator[Metric]:
        if not self.m.windows:
            return
        families = {key: _family(kind, name, doc, ["camera"]) for key, kind, name, doc in _WINDOW}
        for name, w in self.m.windows.items():
            stats = w.store.stats()
            values = {
                "tokens": stats.tokens,
                "frames": stats.frames,
                "budget": w.store.budget,
                "ram": stats.nbytes,
                "disk": stats.disk_bytes + w.thumbs.nbytes,
                "errors": w.errors,
            }
            for key, family in families.items():
                family.add_metric([name], values[key])
        yield from families.values()


# (key, kind, metric name, help) per camera; counters get `_total` from prometheus_client.
_CAMERA = [
    ("decoded", "counter", "streamd_frames_decoded", "Frames decoded."),
    ("demuxed", "counter", "streamd_frames_demuxed", "Frames received (demuxed, decoded or not)."),
    (
        "keyframe_interval",
        "gauge",
        "streamd_keyframe_interval_seconds",
        "Typical time between the stream's keyframes.",
    ),
    ("sampled", "counter", "streamd_frames_sampled", "Frames sampled for analysis."),
    ("dropped", "counter", "streamd_frames_dropped", "Sampled frames dropped (analysis busy)."),
    ("analysed", "counter", "streamd_frames_analysed", "Frames analysed."),
    ("gated", "counter", "streamd_frames_gated", "Frames skipped as unchanged."),
    (
        "pose",
        "counter",
        "streamd_pose_calls",
        "Person boxes the pose model was asked about (squat boxes only; 0 without it).",
    ),
    ("reconnects", "counter", "streamd_camera_reconnects", "Reconnects to the source."),
    ("restarts", "counter", "streamd_pipeline_restarts", "Pipeline restarts after a failure."),
    ("changes", "counter", "streamd_event_changes", "Event changes (new/update/end) emitted."),
    ("target_fps", "gauge", "streamd_camera_target_fps", "Frames a second the camera asks for."),
    (
        "effective_fps",
        "gauge",
        "streamd_camera_effective_fps",
        "Frames a second analysed lately (below target when analysis cannot keep up).",
    ),
    (
        "skipped",
        "counter",
        "streamd_frames_skipped_backpressure",
        "Sampled frames skipped because analysis was busy (latest frame wins).",
    ),
]
_WINDOW = [
    ("tokens", "gauge", "streamd_window_tokens", "Tokens in the window."),
    ("frames", "gauge", "streamd_window_frames", "Frames in the window."),
    ("budget", "gauge", "streamd_window_budget_tokens", "The window's token budget."),
    ("ram", "gauge", "streamd_window_ram_bytes", "Memory the window holds."),
    ("disk", "gauge", "streamd_window_disk_bytes", "Segment files and thumbnails on disk."),
    ("errors", "counter", "streamd_window_errors", "Frames the window skipped after an error."),
]


def _family(
    kind: str, name: str, doc: str, labels: list[str]
) -> GaugeMetricFamily | CounterMetricFamily:
    if kind == "counter":
        return CounterMetricFamily(name, doc, labels=labels)
    return GaugeMetricFamily(name, doc, labels=labels)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)
