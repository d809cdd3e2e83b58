"""The HTTP API under hostile input: a 4xx naming the field, never a 500; token-guarded docs;
snapshots and their URLs with a relative data_dir. The real app, served by uvicorn on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.api import serve

TOKEN = "s3cr3t-t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[httpx.Client, str]]:
    monkeypatch.chdir(tmp_path)  # data_dir "data" is relative, as in the demo
    with (
        serve(Path("data"), token=TOKEN) as (base, _, event_id),
        httpx.Client(base_url=base, headers=AUTH, timeout=10) as client,
    ):
        yield client, event_id


@pytest.mark.parametrize(
    ("method", "path", "params", "body", "status", "message"),
    [
        ("GET", "/api/events", {"since": "-Infinity"}, None, 400, "'-Infinity' is not a finite"),
        ("GET", "/api/events", {"since": "1e400"}, None, 400, "since: time '1e400' is not"),
        ("GET", "/api/events", {"until": "NaN"}, None, 400, "until: time 'NaN' is not a finite"),
        ("GET", "/api/events", {"since": "99999999999999"}, None, 400, "out of range"),
        ("GET", "/api/events", {"since": "2h", "until": "3h"}, None, 400, "since is after until"),
        ("GET", "/api/events", {"since": "a\x00b"}, None, 422, "since: String should match"),
        ("GET", "/api/events", {"rule": "x\x00"}, None, 422, "rule: String should match"),
        ("GET", "/api/events", {"camera": "\x00"}, None, 422, "camera: String should match"),
        ("GET", "/api/events", {"camera": "nope"}, None, 404, "unknown camera 'nope'"),
        ("GET", "/api/events", {"limit": str(10**30)}, None, 422, "limit: Input should be less"),
        ("GET", "/api/events", {"limit": "-1"}, None, 422, "limit: Input should be greater"),
        ("GET", "/api/events", {"limit": "1e400"}, None, 422, "limit: Input should be a valid int"),
        ("GET", "/api/events/a%00b", None, None, 422, "event_id: String should match"),
        ("GET", "/api/events/nope", None, None, 404, "no event 'nope'"),
        ("GET", "/api/events/nope/snapshot.jpg", None, None, 404, "no event 'nope'"),
        ("POST", "/api/rules", None, '{"name": "r", "text": "motion", "clear_s": NaN}', 422,
         "clear_s: Input should be a finite number"),
        ("POST", "/api/rules", None, '{"name": "r", "text": "motion", "cooldown_s": 1e400}', 422,
         "cooldown_s: Input should be a finite number"),
        ("POST", "/api/rules", None, '{"name": "r", "text": "motion", "clear_s": -1}', 422,
         "clear_s: Input should be greater than or equal to 0"),
        ("POST", "/api/rules", None, '{"name": "Bad Name", "text": "motion"}', 422,
         "name: String should match pattern"),
        ("POST", "/api/rules", None, '{"name": "r", "text": "motion", "cameras": ["a\\u0000"]}',
         422, "cameras.0: String should match pattern"),
        ("POST", "/api/rules", None, '{"name": "r"', 422, "JSON decode error"),
        ("POST", "/api/rules", None, '{"name": "r", "text": "x", "colour": 1}', 422,
         "colour: Extra inputs are not permitted"),
        ("POST", "/api/rules", None, '{"name": "r", "text": "a person is dancing"}', 400,
         "'dancing'"),
        ("POST", "/api/rules", None, '{"name": "r", "text": "motion", "cameras": ["z"]}', 400,
         "unknown camera 'z'"),
        ("POST", "/api/rules", None, '{"name": "person", "text": "motion"}', 409, "person"),
        ("DELETE", "/api/rules/a%00", None, None, 422, "name: String should match"),
        ("DELETE", "/api/rules/nope", None, None, 404, "nope"),
        ("DELETE", "/api/rules/person", None, None, 409, "person"),
        ("GET", "/api/search", {"q": "x", "min_score": "NaN"}, None, 422,
         "min_score: Input should be a finite number"),
        ("GET", "/api/search", {"q": "x"}, None, 503, "window is disabled"),
        ("GET", "/api/search/snapshot/yard/99999999999999999999.jpg", None, None, 422,
         "frame_id: Input should be less than or equal to"),
        ("POST", "/api/whip/a%00", None, "v=0", 422, "camera: String should match"),
        ("DELETE", "/api/whip/door/%00", None, None, 422, "session: String should match"),
        ("DELETE", "/api/whip/door/abc", None, None, 404, "no WHIP session 'abc'"),
    ],
)  # fmt: skip
def test_bad_requests_are_4xx_naming_the_field(
    api: tuple[httpx.Client, str],
    method: str,
    path: str,
    params: dict[str, str] | None,
    body: str | None,
    status: int,
    message: str,
) -> None:
    client, _ = api
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if path.startswith("/api/whip/"):
        headers = {"Content-Type": "application/sdp"}
    r = client.request(method, path, params=params, content=body, headers=headers)
    assert r.status_code == status, r.text
    detail: Any = r.json()["detail"]
    text = detail if isinstance(detail, str) else " ".join(d["msg"] for d in detail)
    assert message in text
    assert "NaN" not in r.text or status != 422  # the rejected input is not echoed


def test_docs_and_schema_need_the_token(api: tuple[httpx.Client, str]) -> None:
    client, _ = api
    for path in ("/openapi.json", "/docs", "/api/events", "/api/cameras", "/metrics"):
        r = client.get(path, headers={"Authorization": ""})
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"] == "Bearer"
        assert TOKEN not in r.text
    spec = client.get("/openapi.json").json()
    assert "/api/whip/{camera}" in spec["paths"]
    assert "Swagger" in client.get("/docs").text or "swagger" in client.get("/docs").text
    # the publish page and the WHIP OPTIONS stay open: browsers navigate and preflight without one
    assert client.get("/publish/door", headers={"Authorization": ""}).status_code == 200
    assert client.options("/api/whip/door", headers={"Authorization": ""}).status_code == 204


def test_schema_documents_statuses_and_constraints(api: tuple[httpx.Client, str]) -> None:
    client, _ = api
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    expected = {
        ("/api/events", "get"): {"200", "400", "401", "404", "422", "503"},
        ("/api/events/{event_id}", "get"): {"200", "401", "404", "422", "503"},
        ("/api/events/{event_id}/snapshot.jpg", "get"): {"200", "401", "404", "422", "503"},
        ("/api/rules", "get"): {"200", "401"},
        ("/api/rules", "post"): {"201", "400", "401", "409", "422", "503"},
        ("/api/rules/{name}", "delete"): {"204", "401", "404", "409", "422", "503"},
        ("/api/cameras", "get"): {"200", "401", "503"},
        ("/api/search", "get"): {"200", "400", "401", "404", "422", "503"},
        ("/api/whip/{camera}", "post"): {
            *("201", "400", "401", "404", "409", "413", "415", "422", "503"),
        },
        ("/metrics", "get"): {"200", "401"},
    }
    for (path, method), codes in expected.items():
        assert set(paths[path][method]["responses"]) == codes, (path, method)
    params = {p["name"]: p["schema"] for p in paths["/api/events"]["get"]["parameters"]}
    assert params["limit"]["maximum"] == 1000
    assert params["limit"]["minimum"] == 1
    assert "pattern" in params["since"]["anyOf"][0]
    rule = spec["components"]["schemas"]["RuleConfig"]["properties"]
    assert rule["clear_s"]["maximum"] == 86400
    assert rule["name"]["pattern"].startswith("^[a-z0-9]")


def test_snapshot_and_snapshot_url_with_a_relative_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    monkeypatch.chdir(tmp_path)
    with serve(Path("data")) as (base, state, event_id), httpx.Client(base_url=base) as client:
        r = client.get(f"/api/events/{event_id}/snapshot.jpg")
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "image/jpeg"
        assert r.content[:2] == b"\xff\xd8"
        assert client.get(f"/api/events/{event_id}").json()["has_snapshot"] is True

        rows = asyncio.run(state.store.outbox.pending())
        events = [json.loads(row.payload) for row in rows if row.topic.endswith("/events")]
        url = events[0]["after"]["snapshot_url"]
        assert url == f"{base}/api/events/{event_id}/snapshot.jpg"
        fetched = httpx.get(url)
        assert fetched.status_code == 200
        assert fetched.content == r.content
