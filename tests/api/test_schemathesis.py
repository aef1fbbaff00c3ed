"""Property-based tests of the whole API against its own OpenAPI document (schemathesis).

Every check runs, ``ignored_auth`` included (each secured operation is also called without and
with a wrong credential, and must refuse). The examples per operation are bounded so the run
stays well under a minute.

Edges (issue 18): schemathesis's default strategies never reached the calendar's edges, so the
500s at year 1 and 9999 (exposure, events, a silence ending in 9999) went unseen. Here every
``date-time`` is drawn half the time from :data:`CALENDAR_EDGES` (years 1 and 9999 with extreme
offsets, naive, the accepted range's own bounds), and each generated query and JSON body mostly has
its values replaced by the schema's own size and calendar edges: a string at ``maxLength`` and one
past it, an integer at ``minimum``/``maximum`` and one past each, 2**63. A harness test proves the
strategies find a year-1 overflow and an off-by-one at ``maxLength`` within the example budget.
"""

from __future__ import annotations

import warnings
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import pytest
from fastapi import FastAPI, Query

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from schemathesis.checks import CHECKS, load_all_checks

from vaultwatch.api.routes.exposure import NO_VAULT

from .conftest import AppFactory, Creds

pytestmark = pytest.mark.integration

load_all_checks()
ALL_CHECKS = CHECKS.get_all()
ACCEPTED = ("2XX", "3XX", "400", "401", "403", "404", "409", "422", "429")
#: The test app has no Vault client and no event archive: the exposure routes answer their
#: documented 503 for those, and only those. Any other 5xx is still a failure.
UNCONFIGURED = {NO_VAULT, "no event archive is configured"}
NO_SERVER_ERROR_CHECK = [c for c in ALL_CHECKS if c.__name__ != "not_a_server_error"]
#: How hard every route walk draws: a few deterministic examples per operation, no example
#: database, no deadline (a cold route may be slow), no health check (the app fixture is shared).
WALK = settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)

#: Date-times at and around the calendar's edges (and the API's accepted range's own bounds).
CALENDAR_EDGES = (
    "0001-01-01T00:00:00",
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00+05:00",
    "0001-01-01T00:00:00-14:00",
    "0001-01-01T00:00:00.000001+14:00",
    "9999-12-31T23:59:59",
    "9999-12-31T23:59:59Z",
    "9999-12-31T23:59:59-05:00",
    "9999-12-31T23:59:59.999999-14:00",
    "9999-12-31T23:59:59+14:00",
    "1969-12-31T23:59:59Z",
    "1970-01-01T00:00:00+00:01",
    "1970-01-01T00:00:00Z",
    "8999-12-31T23:59:59.999999Z",
    "9000-01-01T00:00:00Z",
    "2024-02-29T23:59:59.999999-12:00",
)
_ANY_DATETIME = st.datetimes(
    min_value=datetime(1, 1, 1),  # noqa: DTZ001 - the zone is drawn separately
    max_value=datetime(9999, 12, 31, 23, 59, 59, 999999),  # noqa: DTZ001
    timezones=st.one_of(st.none(), st.just(UTC), st.integers(-14 * 60, 14 * 60).map(lambda m: _tz(m))),
).map(lambda d: d.isoformat())
#: Half from the edges, half anywhere in the calendar.
DATETIME_STRATEGY = st.one_of(st.sampled_from(CALENDAR_EDGES), _ANY_DATETIME)


def _tz(minutes: int) -> Any:
    from datetime import timezone

    return timezone(timedelta(minutes=minutes))


def _edges(schema: dict[str, Any], resolve: Any) -> list[Any]:
    """Size and calendar edge values of one JSON Schema (``anyOf`` branches included)."""
    if "$ref" in schema:
        return _edges(resolve(schema["$ref"]), resolve)
    out: list[Any] = []
    for branch in schema.get("anyOf", []) + schema.get("oneOf", []):
        out += _edges(branch, resolve)
    kind = schema.get("type")
    if kind == "string":
        if schema.get("format") == "date-time":
            out += CALENDAR_EDGES
        elif "enum" not in schema:
            longest = schema.get("maxLength", 5000)
            out += ["x" * longest, "x" * (longest + 1), "", "²"]
    elif kind in ("integer", "number"):
        for bound in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            if bound in schema:
                b = schema[bound]
                out += [b - 1, b, b + 1]
        out += [2**63, -(2**63) - 1, 0]
    return out


def _edge_strategy(base: Any, schemas: dict[str, dict[str, Any]], resolve: Any) -> Any:
    """``base`` (dicts of values), most often with its named values replaced by their edges."""
    edges = {name: _edges(sch, resolve) for name, sch in schemas.items()}
    edges = {k: v for k, v in edges.items() if v}
    if not edges:
        return base

    @st.composite
    def edged(draw: Any) -> Any:
        value = draw(base)
        if not isinstance(value, dict):
            return value
        value = dict(value)
        for name in sorted(edges):
            if draw(st.integers(0, 3)) != 3:  # three times in four; the simplest draw is an edge
                value[name] = draw(st.sampled_from(edges[name]))
        return value

    # Edges first: Hypothesis tries the simplest example early, and here that is the first edge.
    return st.one_of(edged(), base)


def _with_edges(schema: Any, doc: dict[str, Any]) -> None:
    """Attach the size and calendar edges to ``schema``'s query and body generation."""

    def resolve(ref: str) -> dict[str, Any]:
        node: Any = doc
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        return dict(node)

    def raw(context: Any) -> dict[str, Any]:
        op = context.operation
        return dict(doc["paths"][op.path][op.method.lower()])

    hook: Any = schema.hook  # untyped in schemathesis

    def before_generate_query(context: Any, strategy: Any) -> Any:
        params = {
            p["name"]: p.get("schema", {}) for p in raw(context).get("parameters", []) if p["in"] == "query"
        }
        return _edge_strategy(strategy, params, resolve)

    def before_generate_body(context: Any, strategy: Any) -> Any:
        body = (
            raw(context).get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
        )
        if not body:
            return strategy
        body = resolve(body["$ref"]) if "$ref" in body else body
        return _edge_strategy(strategy, dict(body.get("properties", {})), resolve)

    hook(before_generate_query)
    hook(before_generate_body)


schemathesis.openapi.format("date-time", DATETIME_STRATEGY)


def _call(case: Any, headers: dict[str, str]) -> None:
    if not case.path.startswith("/api/v1/exposure"):
        case.call_and_validate(headers=headers, checks=ALL_CHECKS)
        return
    response = case.call(headers=headers)
    if response.status_code >= 500:
        assert response.status_code == 503, f"{case.path}: {response.status_code}"
        assert response.json().get("detail") in UNCONFIGURED, response.text
        return
    case.validate_response(response, checks=NO_SERVER_ERROR_CHECK)


def test_api_conforms_to_its_schema(make_app: AppFactory, creds: Creds) -> None:
    app, _ = make_app()
    headers = {"X-API-Key": creds.api_keys["admin"]}
    # Some rules are beyond JSON Schema (since before until, a silence that would mute
    # everything): data the schema allows may still get a 400/422 naming the rule it breaks.
    config = schemathesis.config.SchemathesisConfig.from_dict(
        {"checks": {"positive_data_acceptance": {"expected-statuses": [*ACCEPTED]}}}
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    _with_edges(schema, app.openapi())
    failures: dict[str, str] = {}
    operations = 0
    for result in schema.get_all_operations():
        if isinstance(result, schemathesis.core.result.Err):
            failures[f"schema error {operations}"] = str(result.err())
            continue
        operation = result.ok()
        operations += 1

        @WALK
        @given(case=operation.as_strategy())
        def check(case: Any) -> None:
            if case.path == "/api/v1/stream":
                case.query = {**(case.query or {}), "max_seconds": 0.2}
            _call(case, dict(headers))

        try:
            check()
        except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - collect every failure, then report
            failures[operation.label] = f"{type(exc).__name__}: {str(exc)[:2000]}"
    assert operations >= 25
    assert not failures, "\n\n".join(f"{k}\n{v}" for k, v in failures.items())


def test_the_harness_catches_an_auth_bypass(make_app: AppFactory, creds: Creds) -> None:
    from fastapi import Depends
    from fastapi.security import APIKeyHeader

    app: FastAPI = make_app(seeded=False)[0]
    declared_only = APIKeyHeader(name="X-API-Key", auto_error=False)

    @app.get("/api/v1/leaky", dependencies=[Depends(declared_only)])
    def leaky() -> dict[str, str]:
        return {"secret": "everyone sees this"}

    app.openapi_schema = None
    schema = schemathesis.openapi.from_asgi("/openapi.json", app).include(path="/api/v1/leaky")
    result = next(iter(schema.get_all_operations()))
    assert isinstance(result, schemathesis.core.result.Ok)
    operation = result.ok()

    @settings(max_examples=1, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())
    def check(case: Any) -> None:
        case.call_and_validate(headers={"X-API-Key": creds.api_keys["viewer"]}, checks=ALL_CHECKS)

    with pytest.raises(BaseExceptionGroup) as caught:
        check()
    assert "API accepts requests without authentication" in str(caught.value)


def test_the_strategies_reach_calendar_and_size_edges(make_app: AppFactory, creds: Creds) -> None:
    """A route that overflows at year 1 and one off by one at ``maxLength``: both are found
    within the same example budget as the conformance run (the defaults found neither)."""
    app: FastAPI = make_app(seeded=False)[0]

    @app.get("/api/v1/edgy-window")
    def edgy_window(since: datetime) -> dict[str, str]:
        start = since if since.tzinfo else since.replace(tzinfo=UTC)
        return {"from": (start.astimezone(UTC) - timedelta(hours=1)).isoformat()}  # overflows at year 1

    @app.get("/api/v1/edgy-size")
    def edgy_size(name: Annotated[str, Query(max_length=300)] = "") -> dict[str, int]:
        if len(name) == 300:
            raise RuntimeError("off by one")
        return {"n": len(name)}

    app.openapi_schema = None
    headers = {"X-API-Key": creds.api_keys["viewer"]}
    for path in ("/api/v1/edgy-window", "/api/v1/edgy-size"):
        schema = schemathesis.openapi.from_asgi("/openapi.json", app).include(path=path)
        _with_edges(schema, app.openapi())
        result = next(iter(schema.get_all_operations()))
        assert isinstance(result, schemathesis.core.result.Ok)
        _assert_finds_a_500(result.ok(), headers)


def _assert_finds_a_500(operation: Any, headers: dict[str, str]) -> None:
    @WALK
    @given(case=operation.as_strategy())
    def check(case: Any) -> None:
        response = case.call(headers=headers)
        assert response.status_code < 500, f"{case.path}: {response.status_code} for {case.query}"

    # The in-process app re-raises its exception; a served one would answer 500.
    with pytest.raises((AssertionError, OverflowError, RuntimeError)) as caught:
        check()
    assert isinstance(caught.value, OverflowError | RuntimeError) or "500" in str(caught.value)
