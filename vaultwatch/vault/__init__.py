"""Talking to Vault/OpenBao itself: the client, policies, compliance checks, rotation, exposure, enrichment.

* :mod:`.client` — :class:`~.client.VaultClient` (login, token renewal, read-only calls);
* :mod:`.connect` — a client built from the one :class:`~vaultwatch.settings.Settings` (``[vault]``);
* :mod:`.policy_hcl` — a parser for Vault's HCL policies and path-glob reasoning;
* :mod:`.roles` — roles by capability: what each identity's policies grant, read through the API;
* :mod:`.compliance` — ``vaultwatch check``: configuration and policy checks against a spec;
* :mod:`.rotation` — secret ages from KV metadata and overdue-rotation alerts;
* :mod:`.exposure` — what a compromised token or path could have reached, from the archive;
* :mod:`.enrich` — identity names for entity ids, cached with a TTL.

The submodules are imported by name (``from vaultwatch.vault.client import VaultClient``): a
caller loads only what it uses (the client pulls in hvac, exposure the archive and pyarrow). So
the public surface in ``__all__`` is the submodules themselves; importing this package loads none.
"""

__all__ = [
    "client",
    "compliance",
    "connect",
    "enrich",
    "exposure",
    "policy_hcl",
    "roles",
    "rotation",
]
