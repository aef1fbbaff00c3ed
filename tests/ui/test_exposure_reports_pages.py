"""The exposure and reports pages, and entity names on the identity and alert pages.

Data comes from real OpenBao runs: the session seed's archive for the path exposure and the
reports, and a fresh server (the demo org and its traffic) for the token form and the entity
names, which the app looks up through that server's identity API.
"""

from __future__ import annotations

import html
import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from alerts.store import Store
from tests.ui.conftest import PASSWORDS, LiveServer, Seed, _detect
from vaultwatch.api.app import create_app
from vaultwatch.api.auth import AuthConfig
from vaultwatch.report import generate_report, period_for
from vaultwatch.service.archive import EventArchive
from vaultwatch.service.worker import checkpoint_key
from vaultwatch.settings import ArchiveConfig, Settings

pytestmark = pytest.mark.integration

CANARIES = (
    "demo-jwt-key-v",
    "demo-api-keys-v1",
    "demo-db-v1",
    "alice-demo-pw",
    "guess-",
    "vaultwatch-dev-root",
)


def _login(client: httpx.Client, user: str) -> str:
    resp = client.post(
        "/api/v1/auth/login",
        data={"username": user, "password": PASSWORDS[user], "next": "/ui/alerts"},
        follow_redirects=False,
    )
    assert resp.status_code == 303, resp.text
    csrf = client.cookies.get("vw_csrf")
    assert csrf
    return csrf


def _app(users_file: Path, store: Store, archive: EventArchive, var: Path, vault_client: Any = None) -> Any:
    # Reports live in <archive path parent>/reports.
    settings = Settings(archive=ArchiveConfig(enabled=False, path=var / "archive"))
    auth = AuthConfig(users_file=users_file, cookie_secure=False, login_burst=50)
    return create_app(settings, auth=auth, store=store, archive=archive, vault_client=vault_client)


@pytest.fixture
def serve() -> Iterator[Callable[[Any], httpx.Client]]:
    servers: list[LiveServer] = []
    clients: list[httpx.Client] = []

    def start(app: Any) -> httpx.Client:
        srv = LiveServer(app).start()
        servers.append(srv)
        clients.append(httpx.Client(base_url=srv.url, timeout=30))
        return clients[-1]

    yield start
    for c in clients:
        c.close()
    for s in servers:
        s.stop()


def test_exposure_page_by_path_and_token_form_roles(
    serve: Callable[[Any], httpx.Client],
    users_file: Path,
    store: Store,
    archive: EventArchive,
    tmp_path: Path,
) -> None:
    client = serve(_app(users_file, store, archive, tmp_path))
    anon = client.get("/ui/exposure?path=logos", follow_redirects=False)
    assert anon.status_code == 303 and anon.headers["location"].startswith("/ui/login?next=")

    _login(client, "vic")
    page = client.get("/ui/exposure")
    assert page.status_code == 200
    assert 'href="/ui/exposure" aria-current="page"' in page.text and 'href="/ui/reports"' in page.text
    assert 'name="path"' in page.text and 'name="token"' not in page.text  # viewers: path only
    found = client.get("/ui/exposure", params={"path": "logos/pxl-core/runtime"})
    assert found.status_code == 200
    text = html.unescape(found.text)
    assert "Exposure of logos/pxl-core/runtime" in text
    assert "logos/data/pxl-core/runtime/" in text and "rotate logos/data/pxl-core/runtime/" in text
    assert 'aria-label="Identities"' in text
    assert all(c not in found.text for c in CANARIES)
    bad = client.get("/ui/exposure", params={"path": "logos", "since": "yesterday"})
    assert bad.status_code == 422 and "since is not a date" in bad.text
    canary = "s." + secrets.token_urlsafe(20)
    refused = client.post(
        "/ui/exposure/token", data={"token": canary, "csrf_token": client.cookies["vw_csrf"]}
    )
    assert refused.status_code == 403 and canary not in refused.text

    client.cookies.clear()
    csrf = _login(client, "ana")
    page = client.get("/ui/exposure")
    assert 'name="path"' in page.text
    assert "No Vault/OpenBao client is configured" in page.text  # no client: no token form
    no_csrf = client.post("/ui/exposure/token", data={"token": canary})
    assert no_csrf.status_code == 403
    no_vault = client.post("/ui/exposure/token", data={"token": canary, "csrf_token": csrf})
    assert no_vault.status_code == 503 and "Vault" in no_vault.text
    for resp in (no_csrf, no_vault):
        assert canary not in resp.text


def test_reports_page_lists_generated_reports_with_links(
    serve: Callable[[Any], httpx.Client],
    users_file: Path,
    store: Store,
    archive: EventArchive,
    ui_seed: Seed,
    tmp_path: Path,
) -> None:
    var = tmp_path / "var"
    client = serve(_app(users_file, store, archive, var))
    _login(client, "vic")
    empty = client.get("/ui/reports")
    assert empty.status_code == 200 and "No reports yet" in empty.text
    result = generate_report(
        ui_seed.archive_root, None, period_for("daily", datetime.now(UTC) + timedelta(days=1)), var
    )
    page = client.get("/ui/reports")
    assert page.status_code == 200 and 'aria-current="page"' in page.text
    pid = result.period.id
    assert f'data-report-id="{pid}"' in page.text
    assert result.sha256[:16] in page.text
    for ext in ("html", "pdf", "json"):
        link = f"/api/v1/reports/{pid}/report.{ext}"
        assert f'href="{link}"' in page.text
        got = client.get(link)  # the session cookie is enough for a viewer
        assert got.status_code == 200 and got.content == (result.directory / f"report.{ext}").read_bytes()


def _demo_run(openbao_factory: Callable[..., Any]) -> Any:
    import hvac.exceptions

    from vaultwatch.cli.demo import drive_traffic, setup_org

    for attempt in range(3):
        srv = openbao_factory()
        root = srv.client()
        try:
            org = setup_org(root)
            drive_traffic(srv, org, 2)
            return srv
        except hvac.exceptions.InvalidRequest as exc:
            # A fresh KV v2 mount answers "upgrading" for a moment; start over on a new server.
            if "Upgrading" not in str(exc) or attempt == 2:
                raise
            srv.stop()
        finally:
            root.adapter.close()
    raise AssertionError("unreachable")


def test_entity_names_on_identity_alert_and_exposure_pages_and_token_form(
    serve: Callable[[Any], httpx.Client],
    openbao_factory: Callable[..., Any],
    users_file: Path,
    tmp_path: Path,
) -> None:
    srv = _demo_run(openbao_factory)
    events, alerts, engine = _detect(Path(srv.audit_log))
    with EventArchive(tmp_path / "archive", writer_id="pages") as writer:
        writer.extend(events)
    store = Store(f"sqlite:///{tmp_path / 'alerts.db'}")
    store.migrate()
    store.add_alerts(alerts)
    store.save_checkpoint(
        checkpoint_key("vaultwatch", "vault-audit", 0),
        msgspec.msgpack.encode({"offset": len(events), "hour": None, "engine": engine.snapshot()}),
    )
    reader = EventArchive(tmp_path / "archive", writer_id="reader")
    vault_client = srv.client()
    leaked = vault_client.auth.token.create(policies=["default"], ttl="1h")["auth"]["client_token"]
    try:
        app = _app(users_file, store, reader, tmp_path, vault_client=vault_client)
        client = serve(app)
        csrf = _login(client, "ana")
        enricher = app.state.ctx.extra["enricher"]
        client.get("/ui/identities")  # queues the look-ups; pages never wait for them
        enricher.drain(10)
        page = html.unescape(client.get("/ui/identities").text)
        entities = [k for k in engine.identities() if k.startswith("entity:")]
        assert entities
        labels = {k: enricher.get(k.removeprefix("entity:")).label for k in entities}
        assert all(f'<span class="entity-name">{labels[k]}</span>' in page for k in entities), labels
        assert all(f'<span class="mono muted small">{k}</span>' in page for k in entities)
        one = entities[0]
        detail = html.unescape(client.get(f"/ui/identities/{one}").text)
        assert labels[one] in detail
        with_entity = [a for a in alerts if a.identity.key.startswith("entity:")]
        assert with_entity, "the demo traffic raised no alert on an entity"
        alert_page = html.unescape(client.get(f"/ui/alerts/{with_entity[0].id}").text)
        assert labels[with_entity[0].identity.key] in alert_page
        exposure = html.unescape(client.get("/ui/exposure", params={"path": "logos/pxl-core/runtime"}).text)
        assert any(labels[k] in exposure for k in entities)

        # The token form: the root token's requests, found by their HMAC on the file device.
        page = client.get("/ui/exposure")
        assert 'name="token"' in page.text and 'type="password"' in page.text
        root_token = srv.root_token
        resp = client.post("/ui/exposure/token", data={"token": root_token, "csrf_token": csrf})
        assert resp.status_code == 200, resp.text
        text = html.unescape(resp.text)
        assert "revoke the token" in text and "file/" in text
        assert root_token not in resp.text
        unused = client.post("/ui/exposure/token", data={"token": leaked, "csrf_token": csrf})
        assert unused.status_code == 200 and "0 requests" in unused.text and leaked not in unused.text
    finally:
        vault_client.adapter.close()
        reader.close()
        store.close()
