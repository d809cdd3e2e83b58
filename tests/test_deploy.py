"""deploy/: the compose file and Kubernetes manifests parse, and what they wire up exists.

No container runs here (no registry): the files are read as YAML, the streamd configs they
ship are validated by streamd's own loader, and `docker-compose config` checks the compose
file where that tool is installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamd.config import Config, parse_config

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
ENV = {"STREAMD_DB_PASSWORD": "pw", "STREAMD_DB_HOST": "postgres", "STREAMD_MQTT_HOST": "mq"}


def _env_names(text: str) -> set[str]:
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text))


def _config(text: str, monkeypatch: pytest.MonkeyPatch) -> Config:
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("STREAMD_API_TOKEN", "t")
    return parse_config(text, "deploy")


def test_shared_config_is_valid_and_clustered(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _config((DEPLOY / "streamd.yaml").read_text(), monkeypatch)
    assert cfg.database.url.startswith("postgresql+asyncpg://streamd:pw@postgres:5432/")
    assert cfg.mqtt is not None
    assert cfg.mqtt.host == "mq"
    assert cfg.cluster.lease_ttl_s == 15
    assert cfg.api.token is not None  # from STREAMD_API_TOKEN
    assert "instance" not in yaml.safe_load((DEPLOY / "streamd.yaml").read_text())


def test_compose_services(monkeypatch: pytest.MonkeyPatch) -> None:
    doc: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = doc["services"]
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["mosquitto"]["image"].startswith("eclipse-mosquitto:")
    replicas = {n: s for n, s in services.items() if n.startswith("streamd-")}
    assert len(replicas) == 3
    # One identity per replica (the default instance name is the host name).
    hostnames = [s["hostname"] for s in replicas.values()]
    assert len(set(hostnames)) == 3
    config_text = (DEPLOY / "streamd.yaml").read_text()
    needed = _env_names(config_text)
    for name, s in replicas.items():
        assert needed <= set(s["environment"]), name
        assert s["environment"]["STREAMD_DB_HOST"] in services
        assert s["environment"]["STREAMD_MQTT_HOST"] in services
        assert "./streamd.yaml:/etc/streamd/streamd.yaml:ro" in s["volumes"]
        data = [v for v in s["volumes"] if v.endswith(":/data")]
        assert len(data) == 1, name
    data_volumes = [v for s in replicas.values() for v in s["volumes"] if v.endswith(":/data")]
    assert len(set(data_volumes)) == 3  # data_dir is per instance (its journal is locked)
    # The compose password reaches both PostgreSQL and streamd.
    assert "STREAMD_DB_PASSWORD" in services["postgres"]["environment"]["POSTGRES_PASSWORD"]
    env_example = (DEPLOY / "env.example").read_text()
    assert {"STREAMD_DB_PASSWORD", "STREAMD_API_TOKEN"} <= set(
        re.findall(r"^([A-Z_]+)=", env_example, re.M)
    )


def test_docker_compose_accepts_the_file() -> None:
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    out = subprocess.run(
        [tool, "-f", str(DEPLOY / "compose.yaml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "STREAMD_DB_PASSWORD": "pw", "STREAMD_API_TOKEN": "t"},
    )
    assert out.returncode == 0, out.stderr


def _manifests() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def test_kubernetes_manifests(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = _manifests()
    by_kind: dict[tuple[str, str], dict[str, Any]] = {
        (d["kind"], d["metadata"]["name"]): d for d in docs
    }
    for name in ("streamd", "postgres", "mosquitto"):
        assert ("StatefulSet", name) in by_kind
        assert ("Service", name) in by_kind
        sts = by_kind[("StatefulSet", name)]
        labels = sts["spec"]["template"]["metadata"]["labels"]
        assert sts["spec"]["selector"]["matchLabels"] == labels
        assert by_kind[("Service", name)]["spec"]["selector"] == labels
    streamd = by_kind[("StatefulSet", "streamd")]["spec"]
    assert streamd["replicas"] >= 2
    pod = streamd["template"]["spec"]
    container = pod["containers"][0]
    # The ConfigMap is mounted where the args read it.
    config_arg = container["args"][container["args"].index("-c") + 1]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert config_arg == f"{mounts['config']}/streamd.yaml"
    cm = by_kind[("ConfigMap", volumes["config"]["configMap"]["name"])]
    cfg = _config(cm["data"]["streamd.yaml"], monkeypatch)
    assert cfg.database.url.split("@")[1].startswith("postgres:5432/")
    assert cfg.mqtt is not None
    assert cfg.mqtt.host == "mosquitto"
    assert str(cfg.data_dir) == mounts["data"]
    # Every variable the config expands is set from the Secret, whose keys exist.
    env = {e["name"]: e for e in container["env"]}
    assert _env_names(cm["data"]["streamd.yaml"]) <= set(env)
    secret = by_kind[("Secret", "streamd")]
    for e in env.values():
        ref = e["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "streamd"
        assert ref["key"] in secret["stringData"]
    pg_env = {
        e["name"]: e
        for e in by_kind[("StatefulSet", "postgres")]["spec"]["template"]["spec"]["containers"][0][
            "env"
        ]
    }
    assert pg_env["POSTGRES_PASSWORD"]["valueFrom"] == env["STREAMD_DB_PASSWORD"]["valueFrom"]
