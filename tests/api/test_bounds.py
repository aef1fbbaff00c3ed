"""Input bounds of the API (issue 18): calendar-edge and size-edge values get a 422, never a 500.

The known 500s (exposure and events at the calendar's edges, a silence ending in year 9999
that was saved and then broke every silence list) are pinned here, and a walk over every
operation of the OpenAPI document sends edge values to each parameter and body field.
These tests use an empty store and archive: no OpenBao run is needed.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from alerts.store import Store
from vaultwatch.api import create_app
from vaultwatch.api.routes.silences import SKIPPED_HEADER
from vaultwatch.api.schemas import DATETIME_MAX, DATETIME_MIN, bounded_utc, iso
from vaultwatch.service.archive import EventArchive
from vaultwatch.settings import ArchiveConfig, Settings, StoreConfig

from .conftest import Creds, TestClient, key_headers

CALENDAR_EDGES = (
    "0001-01-01T00:00:00+05:00",
    "9999-12-31T23:59:59-05:00",
    "0001-01-01T00:00:00",
    "9999-12-31T23:59:59",
    "9999-12-31T23:59:59.999999+00:00",
    "1969-12-31T23:59:59Z",
    "9000-01-01T00:00:00Z",
    "8999-12-31T23:59:59.999999Z",
    "1970-01-01T00:00:00Z",
    "8999-12-31T23:59:59Z",
)
INT_EDGES = (-1, 0, 2**63, -(2**63))
STRING_EDGES = ("", "\x00", "²", "x" * 5000)
#: Parameters of routes outside this issue's files, still to bound (their owners are told).
KNOWN_LOOSE: frozenset[str] = frozenset()
#: Epoch of 9999-12-31T23:59:59-05:00: what the silence store held after the 500.
OUT_OF_CALENDAR = 253402318799.0


@pytest.fixture
def bare(tmp_path: Path, creds: Creds) -> Iterator[tuple[TestClient, Store]]:
    """The app over an empty SQLite store and an empty Parquet archive."""
    store = Store(f"sqlite:///{tmp_path}/alerts.db")
    store.migrate()
    archive = EventArchive(tmp_path / "archive", retention_days=3650)
    settings = Settings(store=StoreConfig(url="sqlite:///unused.db"), archive=ArchiveConfig(enabled=False))
    app = create_app(settings, auth=creds.auth_config(), store=store, archive=archive)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, store
    archive.close()
    store.close()


# -- the known 500s ----------------------------------------------------------------------------


@pytest.mark.parametrize("edge", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"])
@pytest.mark.parametrize("param", ["since", "until"])
def test_exposure_at_the_calendar_edges_is_a_422(
    bare: tuple[TestClient, Store], creds: Creds, param: str, edge: str
) -> None:
    client, _ = bare
    r = client.get(
        "/api/v1/exposure", params={"path": "secret/", param: edge}, headers=key_headers(creds, "viewer")
    )
    assert r.status_code == 422, r.text
    assert "1970-01-01" in r.text and "9000-01-01" in r.text  # the message names the window
    page = client.get(
        "/ui/exposure", params={"path": "secret/", param: edge}, headers=key_headers(creds, "viewer")
    )
    assert page.status_code == 422
    assert "9000-01-01" in page.text


def test_events_until_year_one_is_a_422(bare: tuple[TestClient, Store], creds: Creds) -> None:
    client, _ = bare
    r = client.get(
        "/api/v1/events", params={"until": "0001-01-01T00:00:00"}, headers=key_headers(creds, "viewer")
    )
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["query", "until"]


def test_a_silence_ending_after_the_window_is_refused_and_not_saved(
    bare: tuple[TestClient, Store], creds: Creds
) -> None:
    client, store = bare
    body = {"matchers": [{"name": "detector", "value": "x"}], "ends_at": "9999-12-31T23:59:59-05:00"}
    r = client.post("/api/v1/silences", json=body, headers=key_headers(creds, "analyst"))
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", "ends_at"]
    assert store.list_silences() == []
    listed = client.get("/api/v1/silences", headers=key_headers(creds, "viewer"))
    assert listed.status_code == 200 and listed.json() == []


def test_a_silence_inside_the_window_is_read_back(bare: tuple[TestClient, Store], creds: Creds) -> None:
    client, _ = bare
    body = {"matchers": [{"name": "detector", "value": "x"}], "ends_at": "8999-12-31T23:59:59+00:00"}
    r = client.post("/api/v1/silences", json=body, headers=key_headers(creds, "analyst"))
    assert r.status_code == 201, r.text
    listed = client.get("/api/v1/silences", headers=key_headers(creds, "viewer")).json()
    assert [s["ends_at"] for s in listed] == ["8999-12-31T23:59:59Z"]
    late = {**body, "ends_at": "9000-01-01T00:00:00Z"}
    r = client.post("/api/v1/silences", json=late, headers=key_headers(creds, "analyst"))
    assert r.status_code == 422 and "9000-01-01" in r.text


def test_a_stored_out_of_calendar_silence_does_not_break_the_list_and_can_be_expired(
    bare: tuple[TestClient, Store], creds: Creds
) -> None:
    client, store = bare
    bad = store.create_silence(
        ["detector=x"], starts_at=time.time() - 60, ends_at=OUT_OF_CALENDAR, created_by="someone"
    )
    good = store.create_silence(
        ["detector=y"], starts_at=time.time() - 60, ends_at=time.time() + 3600, created_by="someone"
    )
    listed = client.get("/api/v1/silences", headers=key_headers(creds, "viewer"))
    assert listed.status_code == 200, listed.text
    by_id = {s["id"]: s for s in listed.json()}
    assert set(by_id) == {bad.id, good.id}
    assert by_id[bad.id]["ends_at"].startswith("9999-12-31T23:59:59")  # clamped to the calendar
    expired = client.post(f"/api/v1/silences/{bad.id}/expire", headers=key_headers(creds, "analyst"))
    assert expired.status_code == 200, expired.text
    assert expired.json()["expired"] is True
    active = client.get("/api/v1/silences", params={"active": "true"}, headers=key_headers(creds, "viewer"))
    assert [s["id"] for s in active.json()] == [good.id]


def test_a_stored_silence_that_cannot_be_shown_is_skipped_and_named(
    bare: tuple[TestClient, Store], creds: Creds
) -> None:
    client, store = bare
    # Written by an older version or by hand: a matcher value longer than the API shows.
    bad = store.create_silence(
        ["detector=" + "x" * 5000], starts_at=time.time() - 60, ends_at=time.time() + 60, created_by="someone"
    )
    good = store.create_silence(
        ["detector=y"], starts_at=time.time() - 60, ends_at=time.time() + 3600, created_by="someone"
    )
    listed = client.get("/api/v1/silences", headers=key_headers(creds, "viewer"))
    assert listed.status_code == 200, listed.text
    assert [s["id"] for s in listed.json()] == [good.id]
    assert listed.headers[SKIPPED_HEADER] == bad.id


def test_the_silences_page_survives_a_stored_out_of_calendar_silence(
    bare: tuple[TestClient, Store], creds: Creds
) -> None:
    client, store = bare
    store.create_silence(["detector=x"], starts_at=time.time(), ends_at=OUT_OF_CALENDAR, created_by="someone")
    assert client.get("/ui/silences", headers=key_headers(creds, "viewer")).status_code == 200


def test_the_window_helpers() -> None:
    assert bounded_utc(DATETIME_MIN) == DATETIME_MIN
    with pytest.raises(ValueError, match="9000-01-01"):
        bounded_utc(DATETIME_MAX)
    assert iso(OUT_OF_CALENDAR).startswith("9999-12-31T23:59:59")
    assert iso(-1e20).startswith("0001-01-01T00:00:00")


# -- every route, every parameter --------------------------------------------------------------


def _resolve(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        node = spec["components"]["schemas"][name]
    return node


def _sample(spec: dict[str, Any], node: dict[str, Any]) -> Any:
    """A small valid value of a JSON schema (enough for the fields around the one under test)."""
    node = _resolve(spec, node)
    if "const" in node:
        return node["const"]
    if "enum" in node:
        return node["enum"][0]
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if _resolve(spec, o).get("type") != "null"]
        return _sample(spec, options[0]) if options else None
    kind = node.get("type")
    if kind == "object":
        props = node.get("properties", {})
        return {k: _sample(spec, props[k]) for k in node.get("required", [])}
    if kind == "array":
        return [_sample(spec, node.get("items", {}))] * max(1, node.get("minItems", 1))
    if kind == "integer":
        return max(1, node.get("minimum", 1))
    if kind == "number":
        return 1.0
    if kind == "boolean":
        return True
    if node.get("format") == "date-time":
        return "2030-01-01T00:00:00Z"
    return "a"


def _edges(spec: dict[str, Any], node: dict[str, Any]) -> tuple[Any, ...]:
    node = _resolve(spec, node)
    if "anyOf" in node:
        return tuple(v for o in node["anyOf"] for v in _edges(spec, o))
    if node.get("format") == "date-time":
        return CALENDAR_EDGES
    kind = node.get("type")
    if kind == "integer":
        return INT_EDGES
    if kind == "number":
        return (*INT_EDGES, 1e308)
    if kind == "string":
        return STRING_EDGES
    if kind == "array":
        return ([], [_sample(spec, node.get("items", {}))] * 600)
    return ()


def _cases(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any], dict[str, Any] | None, str]]:
    """(method, url, query, json body, what) for every operation and edge value."""
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            params = [p for p in op.get("parameters", []) if p["in"] in ("query", "path")]
            base_query = {p["name"]: _sample(spec, p["schema"]) for p in params if p.get("required")}
            path_values = {p["name"]: "x" for p in params if p["in"] == "path"}
            body_schema = (
                op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            )
            base_body = _sample(spec, body_schema) if body_schema else None

            def url(values: dict[str, Any], path: str = path) -> str:
                out = path
                for name, value in values.items():
                    out = out.replace("{" + name + "}", quote(str(value), safe="") or "-")
                return out

            yield (
                method,
                url(path_values),
                {k: v for k, v in base_query.items() if k not in path_values},
                base_body,
                "base",
            )
            for p in params:
                for edge in _edges(spec, p["schema"]):
                    if p["in"] == "path":
                        yield (
                            method,
                            url({**path_values, p["name"]: edge}),
                            {},
                            base_body,
                            f"{p['name']}={edge!r:.40}",
                        )
                    else:
                        query = {**base_query, p["name"]: edge}
                        query = {k: v for k, v in query.items() if k not in path_values}
                        yield method, url(path_values), query, base_body, f"{p['name']}={edge!r:.40}"
            if body_schema:
                props = _resolve(spec, body_schema).get("properties", {})
                for name, prop in props.items():
                    for edge in _edges(spec, prop):
                        body: dict[str, Any] = copy.deepcopy(base_body or {})
                        body[name] = edge
                        yield method, url(path_values), {}, body, f"body.{name}={edge!r:.40}"


def test_every_route_refuses_edge_values_without_a_5xx(bare: tuple[TestClient, Store], creds: Creds) -> None:
    client, _ = bare
    spec = client.get("/openapi.json").json()
    headers = key_headers(creds, "admin")
    failures: list[str] = []
    calls = 0
    for method, url, query, body, what in _cases(spec):
        if url == "/api/v1/stream":
            query = {**query, "max_seconds": 0.2} if "max_seconds" not in query else query
            if "max_seconds" in what:
                continue  # a long poll by design; its bound is checked with the others below
        r = client.request(method.upper(), url, params=query, json=body, headers=headers)
        calls += 1
        if r.status_code >= 500 and r.status_code != 503:
            failures.append(f"{method.upper()} {url} {what}: {r.status_code} {r.text[:200]}")
    assert calls > 300
    assert not failures, "\n".join(failures)


def test_every_datetime_and_integer_parameter_is_bounded(bare: tuple[TestClient, Store]) -> None:
    """The document says what is accepted: every integer has a minimum and a maximum, every
    string a maximum length (or an enum/pattern), every date-time names the window."""
    client, _ = bare
    spec = client.get("/openapi.json").json()
    loose: list[str] = []

    def check(where: str, node: dict[str, Any], description: str = "") -> None:
        node = _resolve(spec, node)
        for option in node.get("anyOf", []):
            check(where, option, description or node.get("description", ""))
        kind = node.get("type")
        if node.get("format") == "date-time":
            if "-01-01T00:00:00Z" not in description + node.get("description", ""):
                loose.append(f"{where}: date-time without its window")
        elif kind == "integer" and ("minimum" not in node or "maximum" not in node):
            loose.append(f"{where}: integer without minimum and maximum")
        elif kind == "string" and not ({"maxLength", "enum", "const", "pattern"} & node.keys()):
            loose.append(f"{where}: string without maxLength")

    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            for p in op.get("parameters", []):
                if p["in"] in ("query", "path"):
                    check(f"{method.upper()} {path} {p['name']}", p["schema"], p.get("description", ""))
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body:
                for name, prop in _resolve(spec, body).get("properties", {}).items():
                    check(f"{method.upper()} {path} body.{name}", prop, prop.get("description", ""))
    assert sorted(set(loose) - KNOWN_LOOSE) == [], "\n".join(loose)
