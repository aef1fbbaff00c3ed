"""Talking to Vault/OpenBao itself: the client, policies, compliance checks, rotation, exposure, enrichment.

* :mod:`.client` — :class:`~.client.VaultClient` (login, token renewal, read-only calls);
* :mod:`.policy_hcl` — a parser for Vault's HCL policies and path-glob reasoning;
* :mod:`.compliance` — ``vaultwatch check``: configuration and policy checks against a spec;
* :mod:`.rotation` — secret ages from KV metadata and overdue-rotation alerts;
* :mod:`.exposure` — what a compromised token or path could have reached, from the archive;
* :mod:`.enrich` — identity names for entity ids, cached with a TTL.

The submodules are imported by name (``from vaultwatch.vault.client import VaultClient``): a
caller loads only what it uses (the client pulls in hvac, exposure the archive and pyarrow).
"""
