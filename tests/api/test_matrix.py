"""Every API route × every role × anonymous: 401 without credentials, 403 with a role too low.

The matrix is generated from the app's OpenAPI document (every operation, as served), checked
against the table of least roles below, which must list every operation.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from vaultwatch.api.auth import ROLES, role_at_least

from .conftest import AppFactory, Creds, TestClient

pytestmark = pytest.mark.integration

#: Every API operation and the least role it admits (None: public). A route missing here fails.
EXPECTED: dict[tuple[str, str], str | None] = {
    ("POST", "/api/v1/auth/login"): None,
    ("GET", "/api/v1/auth/jwks"): None,
    ("GET", "/api/v1/auth/session"): None,
    ("GET", "/.well-known/jwks.json"): None,
    ("GET", "/healthz"): None,
    ("GET", "/readyz"): None,
    ("GET", "/metrics"): None,
    ("POST", "/api/v1/auth/logout"): "viewer",
    ("GET", "/api/v1/auth/me"): "viewer",
    ("POST", "/api/v1/auth/token"): "viewer",
    ("GET", "/api/v1/alerts"): "viewer",
    ("GET", "/api/v1/alerts/{alert_id}"): "viewer",
    ("POST", "/api/v1/alerts/{alert_id}/ack"): "analyst",
    ("POST", "/api/v1/alerts/{alert_id}/resolve"): "analyst",
    ("POST", "/api/v1/alerts/{alert_id}/false-positive"): "analyst",
    ("POST", "/api/v1/alerts/{alert_id}/reopen"): "analyst",
    ("POST", "/api/v1/alerts/{alert_id}/assign"): "analyst",
    ("POST", "/api/v1/alerts/{alert_id}/verdict"): "analyst",
    ("POST", "/api/v1/alerts/bulk"): "analyst",
    ("GET", "/api/v1/silences"): "viewer",
    ("POST", "/api/v1/silences"): "analyst",
    ("POST", "/api/v1/silences/{silence_id}/expire"): "analyst",
    ("GET", "/api/v1/identities"): "viewer",
    ("GET", "/api/v1/identities/{key}"): "viewer",
    ("GET", "/api/v1/events"): "viewer",
    ("GET", "/api/v1/exposure"): "viewer",
    ("GET", "/api/v1/exposure/identity"): "viewer",
    ("POST", "/api/v1/exposure/token"): "analyst",
    ("GET", "/api/v1/reports"): "viewer",
    ("GET", "/api/v1/reports/{period_id}/{name}"): "viewer",
    ("GET", "/api/v1/stream"): "viewer",
    ("GET", "/api/v1/keys"): "admin",
    ("GET", "/api/v1/admin/status"): "admin",
    ("GET", "/api/v1/audit"): "admin",
}
QUERY = {"/api/v1/stream": {"max_seconds": 0.1}}


def operations(app: Any) -> list[tuple[str, str, bool]]:
    """(method, path, declares security) of every API operation in the OpenAPI document."""
    out = []
    for path, item in app.openapi()["paths"].items():
        if not path.startswith(("/api/", "/.well-known/", "/healthz", "/readyz", "/metrics")):
            continue  # the web UI's pages are tested with the UI
        for method, op in item.items():
            out.append((method.upper(), path, bool(op.get("security"))))
    return sorted(out)


def test_route_role_matrix(make_app: AppFactory, creds: Creds) -> None:
    app, _ = make_app()
    ops = operations(app)
    assert {(m, p) for m, p, _ in ops} == set(EXPECTED), "update EXPECTED for new or removed routes"
    problems: list[str] = []
    checked = 0
    with TestClient(app) as c:
        bearer = {
            r: c.post("/api/v1/auth/token", headers={"X-API-Key": creds.api_keys[r]}).json()["access_token"]
            for r in ROLES
        }
        callers: dict[str, list[dict[str, str]]] = {
            "anonymous": [{}],
            **{
                r: [{"X-API-Key": creds.api_keys[r]}, {"Authorization": f"Bearer {bearer[r]}"}] for r in ROLES
            },
        }
        for method, path, secured in ops:
            role = EXPECTED[(method, path)]
            if secured != (role is not None):
                problems.append(f"{method} {path}: OpenAPI security declared={secured}, expected role {role}")
            url = re.sub(r"\{[^}]+\}", "x", path)
            kw: dict[str, Any] = {"params": QUERY.get(path, {})}
            if method in ("POST", "PUT", "PATCH"):
                kw["json"] = {}
            for who, header_sets in callers.items():
                for headers in header_sets:
                    status = c.request(method, url, headers=headers, **kw).status_code
                    checked += 1
                    if role is None:
                        ok, want = status not in (401, 403), "neither 401 nor 403"
                    elif who == "anonymous":
                        ok, want = status == 401, "401"
                    elif path == "/api/v1/auth/token" and "Authorization" in headers:
                        ok, want = status == 403, "403 (a bearer token cannot mint another)"
                    elif not role_at_least(who, role):
                        ok, want = status == 403, "403"
                    else:
                        ok, want = status not in (401, 403), "neither 401 nor 403"
                    if not ok:
                        problems.append(
                            f"{method} {path} as {who} ({list(headers)}): {status}, expected {want}"
                        )
    assert not problems, "\n".join(problems)
    assert checked == len(ops) * 7


def test_every_state_change_needs_analyst_or_more() -> None:
    for (method, path), role in EXPECTED.items():
        if method == "POST" and not path.startswith("/api/v1/auth/"):
            assert role in ("analyst", "admin"), f"{method} {path} needs only {role}"
