"""A Vault client built from the one :class:`~vaultwatch.settings.Settings` (``[vault]``).

Every verb and task that talks to Vault (``run``'s rotation scan and enrichment, ``serve``'s
exposure routes, scheduled reports, ``check``) builds its client here, so authentication settings
are read in one place and secrets are unwrapped only here.
"""

from __future__ import annotations

from typing import Any

from ..settings import Settings
from .client import VaultAuth, VaultClient

__all__ = ["vault_auth", "vault_client"]


def vault_auth(s: Settings) -> Any:
    """The :class:`~vaultwatch.vault.client.VaultAuth` of ``[vault.auth]`` (secrets unwrapped here only)."""
    if s.vault is None:
        raise ValueError("no [vault] section configured")
    a = s.vault.auth
    return VaultAuth(
        method=a.method,
        token=a.token.get_secret_value() if a.token else None,
        token_file=str(a.token_file) if a.token_file else None,
        role_id=a.role_id,
        secret_id=a.secret_id.get_secret_value() if a.secret_id else None,
        role=a.role,
        jwt_file=str(a.jwt_path),
        mount=a.mount,
    )


def vault_client(s: Settings, *, login: bool = True, renew: bool = False) -> Any:
    """A :class:`~vaultwatch.vault.client.VaultClient` for ``[vault]``; logged in and self-renewing on
    request. The caller closes it."""
    if s.vault is None:
        raise ValueError("no [vault] section configured")
    cfg = s.vault
    verify: bool | str = str(cfg.ca_cert) if cfg.ca_cert and cfg.tls_verify else cfg.tls_verify
    client = VaultClient(cfg.addr, vault_auth(s), namespace=cfg.namespace, verify=verify)
    try:
        if login:
            client.login()
        if renew:
            client.start_renewal()
    except Exception:
        client.close()
        raise
    return client
