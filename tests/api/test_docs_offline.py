"""/docs works without internet: Swagger UI comes from the installed package, not a CDN; and the
small front-door routes (/ui, /favicon.ico)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

with warnings.catch_warnings():
    # starlette's TestClient warns at import when httpx (not httpx2) is installed.
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from alerts.store import Store
from vaultwatch.api.app import create_app
from vaultwatch.api.auth import AuthConfig
from vaultwatch.settings import Settings


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    store = Store(f"sqlite:///{tmp_path / 'alerts.db'}")
    store.migrate()
    app = create_app(Settings(), auth=AuthConfig(cookie_secure=False), store=store)
    with TestClient(app) as c:
        yield c
    store.close()


def test_docs_page_loads_swagger_from_this_server(client: TestClient) -> None:
    r = client.get("/docs")
    assert r.status_code == 200
    html = r.text
    assert "cdn.jsdelivr.net" not in html and "unpkg.com" not in html
    assert "/ui/static/swagger/swagger-ui-bundle.js" in html
    assert "/ui/static/swagger/swagger-ui.css" in html
    js = client.get("/ui/static/swagger/swagger-ui-bundle.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    # Swagger UI 5 renders OpenAPI 3.1, which is what FastAPI writes.
    assert "SwaggerUIBundle" in js.text and "oas31" in js.text
    css = client.get("/ui/static/swagger/swagger-ui.css")
    assert css.status_code == 200 and ".swagger-ui" in css.text
    assert client.get("/openapi.json").json()["openapi"].startswith("3.1")


def test_swagger_route_serves_only_its_two_files(client: TestClient) -> None:
    assert client.get("/ui/static/swagger/redoc.standalone.js").status_code == 404
    assert client.get("/ui/static/swagger/..%2Fcore.py").status_code == 404


def test_ui_redirects_to_the_queue_and_favicon_is_served(client: TestClient) -> None:
    r = client.get("/ui", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/alerts"
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    assert icon.content.startswith(b"<svg")
