"""Authentication: JWT attacks, key rotation, sessions and CSRF, SSO, API keys, guards, canaries."""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from fastapi import FastAPI

from vaultwatch.api.auth import (
    ApiKeyFile,
    AuthConfig,
    Authenticator,
    AuthError,
    FileKeySource,
    KeyRing,
    generate_pem,
    hash_api_key,
    hash_password,
)

from .conftest import AppFactory, Creds, TestClient, key_headers

pytestmark = pytest.mark.integration


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _authn(tmp_path: Path, pem: bytes | None = None, **kw: Any) -> tuple[Authenticator, Clock, Path]:
    key = tmp_path / "jwt.pem"
    key.write_bytes(pem or generate_pem("ed25519"))
    clock = Clock()
    return Authenticator(AuthConfig(jwt_key_file=key, **kw), clock=clock), clock, key


def _b64(data: dict[str, Any] | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("kind", ["ed25519", "rsa", "ec"])
def test_tokens_round_trip_for_every_key_type(tmp_path: Path, kind: str) -> None:
    authn, _, _ = _authn(tmp_path, generate_pem(kind))  # type: ignore[arg-type]
    token = authn.issue_token("alice", "analyst")
    principal = authn.from_bearer(token)
    assert (principal.subject, principal.role, principal.method) == ("alice", "analyst", "jwt")
    header = jwt.get_unverified_header(token)
    assert header["alg"] == {"ed25519": "EdDSA", "rsa": "RS256", "ec": "ES256"}[kind]
    assert header["kid"] == authn.keys.jwks()["keys"][0]["kid"]


def test_jwt_attacks_are_refused(tmp_path: Path) -> None:
    authn, clock, key_file = _authn(tmp_path, generate_pem("rsa"))
    key = authn.keys.current
    good = jwt.decode(authn.issue_token("alice", "viewer"), options={"verify_signature": False})
    head = {"kid": key.kid, "typ": "JWT"}

    def signed(claims: dict[str, Any], **header: Any) -> str:
        return jwt.encode(claims, key.private, algorithm="RS256", headers={**head, **header})

    # alg: none, with and without a signature part.
    none = f"{_b64({**head, 'alg': 'none'})}.{_b64(good)}."
    # Algorithm confusion: HS256 keyed with the public key PEM.
    public_pem = key.public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    import hashlib
    import hmac

    signing_input = f"{_b64({**head, 'alg': 'HS256'})}.{_b64(good)}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    confused = f"{signing_input}.{_b64(mac)}"
    # A token from another key that claims our kid.
    stranger = serialization.load_pem_private_key(generate_pem("rsa"), password=None)
    forged = jwt.encode(good, stranger, algorithm="RS256", headers=head)  # type: ignore[arg-type]
    now = int(clock())
    cases = {
        "alg none": none,
        "alg none unsigned": none + "c2ln",
        "HS256 with the public key": confused,
        "foreign key": forged,
        "expired": signed({**good, "iat": now - 7200, "nbf": now - 7200, "exp": now - 1}),
        "issued in the future": signed({**good, "iat": now + 3600, "nbf": now, "exp": now + 7200}),
        "not before in the future": signed({**good, "nbf": now + 3600}),
        "wrong audience": signed({**good, "aud": "someone-else"}),
        "wrong issuer": signed({**good, "iss": "evil"}),
        "no exp": signed({k: v for k, v in good.items() if k != "exp"}),
        "no iat": signed({k: v for k, v in good.items() if k != "iat"}),
        "unknown role": signed({**good, "role": "root"}),
        "unknown kid": signed(good, kid="nope"),
        "tampered": signed(good)[:-6] + "AAAAAA",
        "garbage": "not.a.token",
        "session token as bearer": authn.issue_token("alice", "admin", session=True),
    }
    for name, token in cases.items():
        with pytest.raises(AuthError):
            authn.from_bearer(token)
            pytest.fail(f"accepted: {name}")
    # A bearer token is not a session either.
    with pytest.raises(AuthError):
        authn.from_session(authn.issue_token("alice", "admin"))


def test_expiry_follows_the_clock(tmp_path: Path) -> None:
    authn, clock, _ = _authn(tmp_path, token_ttl=60)
    token = authn.issue_token("alice", "viewer")
    clock.now += 59
    assert authn.from_bearer(token).subject == "alice"
    clock.now += 1
    with pytest.raises(AuthError, match="expired"):
        authn.from_bearer(token)


def test_key_rotation_without_downtime(tmp_path: Path) -> None:
    authn, clock, key_file = _authn(tmp_path, token_ttl=600, session_ttl=600)
    old_kid = authn.keys.current.kid
    old_token = authn.issue_token("alice", "viewer")
    # Replace the file atomically with only the new key, as a secret manager would.
    tmp = tmp_path / ".jwt.pem.new"
    tmp.write_bytes(generate_pem("ed25519"))
    os.replace(tmp, key_file)
    new_kid = authn.keys.current.kid
    assert new_kid != old_kid
    new_token = authn.issue_token("alice", "viewer")
    assert jwt.get_unverified_header(new_token)["kid"] == new_kid
    assert {k["kid"] for k in authn.keys.jwks()["keys"]} == {old_kid, new_kid}
    assert authn.from_bearer(old_token).subject == "alice"  # still valid until it expires
    clock.now += 600 + 31
    assert {k["kid"] for k in authn.keys.jwks()["keys"]} == {new_kid}
    with pytest.raises(AuthError):
        authn.from_bearer(old_token)
    # A broken replacement keeps the working key.
    key_file.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    assert authn.keys.current.kid == new_kid


def test_several_keys_in_the_file_first_signs_rest_verify(tmp_path: Path) -> None:
    a, b = generate_pem("ed25519"), generate_pem("ec")
    key_file = tmp_path / "jwt.pem"
    key_file.write_bytes(b)
    ring_b = KeyRing(FileKeySource(key_file), grace=60)
    kid_b = ring_b.current.kid
    key_file.write_bytes(a + b)
    ring = KeyRing(FileKeySource(key_file), grace=60)
    assert ring.current.kid != kid_b and ring.find(kid_b) is not None
    assert len(ring.jwks()["keys"]) == 2


def test_api_keys_expiry_argon2_and_constant_time_lookup(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    path.write_text(
        '[[keys]]\nid = "ci"\nhash = "' + hash_api_key("ci.s3cret") + '"\nrole = "viewer"\n'
        'not_after = "2027-01-01T00:00:00Z"\n'
        '[[keys]]\nid = "ops"\nhash = "' + hash_password("ops.other") + '"\nrole = "admin"\n'
    )
    keys = ApiKeyFile(path)
    before = 1_790_000_000.0  # 2026-09
    assert keys.verify("ci.s3cret", before).role == "viewer"
    assert keys.verify("ops.other", before).role == "admin"
    for bad in ("ci.wrong", "ci", "nobody.s3cret", "", "ops.s3cret"):
        with pytest.raises(AuthError):
            keys.verify(bad, before)
    with pytest.raises(AuthError, match="expired"):
        keys.verify("ci.s3cret", 1_800_000_000.0)
    assert "s3cret" not in repr(keys.entries) and "sha256" not in repr(keys.entries)
    # A container secret without a suffix, in JSON.
    bare = tmp_path / "api_keys"
    bare.write_text(json.dumps([{"id": "ci", "hash": hash_api_key("ci.s3cret"), "role": "analyst"}]))
    assert ApiKeyFile(bare).verify("ci.s3cret", before).role == "analyst"


def test_login_session_cookie_and_csrf(make_app: AppFactory, creds: Creds) -> None:
    app, _ = make_app(cookie_secure=True)
    aid = app.state.ctx.store.list_alerts().items[0].id
    with TestClient(app, base_url="https://testserver") as c:
        bad = c.post("/api/v1/auth/login", json={"username": "analyst-user", "password": "wrong"})
        assert bad.status_code == 401 and "vw_session" not in c.cookies
        r = c.post(
            "/api/v1/auth/login", json={"username": "analyst-user", "password": creds.passwords["analyst"]}
        )
        assert r.status_code == 200, r.text
        cookies = r.headers.get_list("set-cookie")
        session = next(h for h in cookies if h.startswith("vw_session="))
        assert "HttpOnly" in session and "Secure" in session and "samesite=lax" in session.lower()
        csrf_cookie = next(h for h in cookies if h.startswith("vw_csrf="))
        assert "HttpOnly" not in csrf_cookie
        csrf = r.json()["csrf_token"]
        assert c.get("/api/v1/auth/me").json() == {
            "subject": "analyst-user",
            "role": "analyst",
            "method": "session",
            "csrf_token": csrf,
        }
        # Reads need no CSRF token; state changes do.
        assert c.get("/api/v1/alerts").status_code == 200
        assert c.post(f"/api/v1/alerts/{aid}/ack", json={}).status_code == 403
        assert (
            c.post(f"/api/v1/alerts/{aid}/ack", json={}, headers={"X-CSRF-Token": "x" * 32}).status_code
            == 403
        )
        ok = c.post(f"/api/v1/alerts/{aid}/ack", json={}, headers={"X-CSRF-Token": csrf})
        assert ok.status_code == 200
        # The form field works too (the UI's forms), here on logout.
        assert c.post("/api/v1/auth/logout", data={"csrf_token": "wrong"}).status_code == 403
        token = c.cookies["vw_session"]
        assert c.post("/api/v1/auth/logout", data={"csrf_token": csrf}).status_code == 204
    # The logged-out session is refused even if replayed.
    with TestClient(app, base_url="https://testserver") as c2:
        c2.cookies.set("vw_session", token)
        assert c2.get("/api/v1/auth/me").status_code == 401


def test_form_login_redirects_to_a_local_path_only(make_app: AppFactory, creds: Creds) -> None:
    app, _ = make_app()
    with TestClient(app, follow_redirects=False) as c:
        form = {"username": "viewer-user", "password": creds.passwords["viewer"], "next": "/ui/alerts"}
        r = c.post("/api/v1/auth/login", data=form)
        assert r.status_code == 303 and r.headers["location"] == "/ui/alerts"
        assert "vw_session" in c.cookies
        r = c.post("/api/v1/auth/login", data={**form, "password": "nope"})
        assert r.status_code == 303 and r.headers["location"] == "/ui/alerts?error=login"
        r = c.post("/api/v1/auth/login", data={**form, "next": "//evil.example/"})
        assert r.status_code == 200  # not a local path: no redirect, a JSON answer


def test_trusted_header_sso_with_csrf(make_app: AppFactory) -> None:
    app, _ = make_app(
        sso_header="X-Forwarded-User", sso_role_header="X-Forwarded-Role", trusted_proxies=("10.0.0.0/8",)
    )
    sso = {"X-Forwarded-User": "dora", "X-Forwarded-Role": "analyst"}
    silence = {"matchers": [{"name": "detector", "value": "x"}], "ends_at": "2999-01-01T00:00:00Z"}
    with TestClient(app, client=("10.1.2.3", 40000)) as proxied:
        me = proxied.get("/api/v1/auth/me", headers=sso)
        assert me.json()["subject"] == "dora" and me.json()["role"] == "analyst"
        csrf = proxied.cookies["vw_csrf"]  # set on the first request
        assert me.json()["csrf_token"] == csrf
        assert proxied.get("/api/v1/auth/me").status_code == 401
        # The proxy authenticates every request, like a cookie: state changes need the CSRF value.
        assert proxied.post("/api/v1/silences", json=silence, headers=sso).status_code == 403
        r = proxied.post("/api/v1/silences", json=silence, headers={**sso, "X-CSRF-Token": csrf})
        assert r.status_code == 201 and r.json()["created_by"] == "dora"
    with TestClient(app, client=("192.0.2.9", 40000)) as direct:
        assert direct.get("/api/v1/auth/me", headers=sso).status_code == 401


def test_validation_errors_do_not_echo_input(client: TestClient, creds: Creds) -> None:
    canary = creds.passwords["admin"]
    r = client.post(
        "/api/v1/silences",
        json={"matchers": [{"name": "detector", "value": "x"}], "ends_at": canary},
        headers=key_headers(creds, "analyst"),
    )
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "ends_at"]
    assert canary not in r.text


def test_rate_limit_per_key(make_app: AppFactory, creds: Creds) -> None:
    app, _ = make_app(rate_burst=5, rate_per_second=0.001)
    with TestClient(app) as c:
        codes = [c.get("/api/v1/auth/me", headers=key_headers(creds, "viewer")).status_code for _ in range(7)]
        assert codes == [200] * 5 + [429] * 2
        # Another key has its own bucket.
        assert c.get("/api/v1/auth/me", headers=key_headers(creds, "admin")).status_code == 200


def test_body_cap_and_errors_without_internals(
    make_app: AppFactory, creds: Creds, caplog: pytest.LogCaptureFixture
) -> None:
    app: FastAPI = make_app(max_body_bytes=1024)[0]
    canary = "canary-" + "q7" * 10

    @app.get("/api/v1/boom")
    def boom() -> None:
        raise RuntimeError(f"database password is {canary}")

    with TestClient(app, raise_server_exceptions=False) as c, caplog.at_level(logging.DEBUG):
        big = c.post(
            "/api/v1/silences", content=b"{" + b" " * 5000 + b"}", headers=key_headers(creds, "analyst")
        )
        assert big.status_code == 413
        r = c.get("/api/v1/boom")
        assert r.status_code == 500
        assert r.json() == {"detail": "internal error", "request_id": r.headers["x-request-id"]}
        assert "Traceback" not in r.text
    assert canary not in caplog.text


def test_canary_secrets_never_leak(
    make_app: AppFactory, creds: Creds, caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = make_app()
    canaries = creds.canaries()
    seen: list[str] = []
    with TestClient(app) as c, caplog.at_level(logging.DEBUG):
        login = c.post(
            "/api/v1/auth/login", json={"username": "admin-user", "password": creds.passwords["admin"]}
        )
        session_token = c.cookies["vw_session"]
        csrf = login.json()["csrf_token"]
        seen.append(login.text)
        bearer = c.post("/api/v1/auth/token", headers={"X-CSRF-Token": csrf}).json()["access_token"]
        c.cookies.clear()
        attempts = [
            c.post(
                "/api/v1/auth/login", json={"username": "admin-user", "password": creds.passwords["viewer"]}
            ),
            c.post("/api/v1/auth/login", json={"username": creds.passwords["analyst"], "password": "x"}),
            c.get("/api/v1/alerts", headers={"X-API-Key": creds.api_keys["viewer"] + "x"}),
            c.get(
                "/api/v1/alerts",
                headers={"X-API-Key": "admin-key." + creds.api_keys["analyst"].partition(".")[2]},
            ),
            c.get("/api/v1/alerts", headers={"Authorization": "Bearer " + creds.api_keys["admin"]}),
            c.get("/api/v1/alerts", headers={"Authorization": "Bearer " + bearer[:-4] + "AAAA"}),
            c.get("/api/v1/alerts", headers={"Authorization": "Basic " + creds.passwords["admin"]}),
        ]
        for r in attempts:
            assert r.status_code in (401, 422), r.text
        for role in ("viewer", "analyst", "admin"):
            h = key_headers(creds, role)
            for path in (
                "/api/v1/alerts",
                "/api/v1/auth/me",
                "/api/v1/keys",
                "/api/v1/admin/status",
                "/api/v1/audit",
            ):
                attempts.append(c.get(path, headers=h))
        attempts.append(c.get("/api/v1/auth/jwks"))
        attempts.append(c.get("/openapi.json"))
        attempts.append(c.get("/metrics"))
    secrets_all = [*canaries, bearer, session_token, bearer.split(".")[2], session_token.split(".")[2]]
    texts = seen + [r.text + json.dumps(dict(r.headers)) for r in attempts]
    for secret in secrets_all:
        assert len(secret) >= 16
        for text in texts:
            assert secret not in text
        assert secret not in caplog.text


def test_jwks_is_public_and_matches_the_signing_key(client: TestClient) -> None:
    a = client.get("/api/v1/auth/jwks").json()
    b = client.get("/.well-known/jwks.json").json()
    assert a == b and len(a["keys"]) == 1
    assert set(a["keys"][0]) >= {"kid", "kty", "alg", "use"} and "d" not in a["keys"][0]


def test_bearer_token_from_api_key_works_end_to_end(client: TestClient, creds: Creds) -> None:
    r = client.post("/api/v1/auth/token", headers=key_headers(creds, "analyst"))
    assert r.status_code == 200
    token = r.json()["access_token"]
    me = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}).json()
    assert me["subject"] == "key:analyst-key" and me["method"] == "jwt"
    # A bearer token cannot mint itself a successor.
    assert client.post("/api/v1/auth/token", headers={"Authorization": f"Bearer {token}"}).status_code == 403
    assert (
        client.get(
            "/api/v1/alerts", headers={"Authorization": f"ApiKey {creds.api_keys['viewer']}"}
        ).status_code
        == 200
    )


def test_unauthenticated_response_shape(client: TestClient) -> None:
    r = client.get("/api/v1/alerts")
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["request_id"] == r.headers["x-request-id"]


def test_app_factory_has_no_module_state(make_app: AppFactory) -> None:
    a, _ = make_app(seeded=False)
    b, _ = make_app(seeded=False)
    assert isinstance(a, FastAPI) and a.state.ctx is not b.state.ctx
    assert a.state.ctx.authn is not b.state.ctx.authn
    assert time.time() > 0
