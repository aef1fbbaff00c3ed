"""Operations endpoints of a worker process: ``/healthz``, ``/readyz`` and ``/metrics``.

Served by uvicorn in a background thread, unauthenticated (they reveal no secrets and no alert
content): liveness has a stall detector, readiness says whether partitions are assigned and the
store answers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Response

__all__ = ["ops_app", "BackgroundServer"]

log = logging.getLogger(__name__)


def ops_app(
    *,
    metrics: Any,
    healthy: Callable[[], tuple[bool, str]],
    ready: Callable[[], tuple[bool, str]],
) -> FastAPI:
    app = FastAPI(title="vaultwatch worker", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    def healthz() -> Response:
        ok, why = healthy()
        return Response(why + "\n", status_code=200 if ok else 503, media_type="text/plain")

    @app.get("/readyz")
    def readyz() -> Response:
        ok, why = ready()
        return Response(why + "\n", status_code=200 if ok else 503, media_type="text/plain")

    @app.get("/metrics")
    def metrics_endpoint() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    return app


class BackgroundServer:
    """Run an ASGI app with uvicorn in a daemon thread; :meth:`stop` shuts it down."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        import uvicorn

        self.config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, name="http", daemon=True)
        self.host, self.port = host, port

    def start(self, timeout: float = 10.0) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"HTTP server did not start on {self.host}:{self.port}")
            time.sleep(0.05)
        log.info("serving on http://%s:%d", self.host, self.port)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
