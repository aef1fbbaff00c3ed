"""The analyst API and web UI: :func:`create_app` builds the FastAPI app (see :mod:`.app`).

Authentication, authorisation and the contract the web UI builds on are described in
:mod:`vaultwatch.api.auth`.
"""

from __future__ import annotations

from .app import API_PREFIX, create_app
from .auth import AuthConfig, Authenticator, Principal

__all__ = ["API_PREFIX", "AuthConfig", "Authenticator", "Principal", "create_app"]
