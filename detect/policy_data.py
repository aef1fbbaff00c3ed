"""The packaged default access model: the LOGOS PXL Core secrets-management policy, as data.

It is TOML text held in a constant, not a file, so :mod:`detect` reads nothing at run time:
:func:`detect.policy.default_policy` parses it. An operator's own policy file has the same format;
the shell reads it (``vaultwatch.settings.load_policy``) and hands the parsed policy to the
engine as ``config["policy"]``. To start a site policy from this one, print
``detect.policy_data.DEFAULT_POLICY_TOML`` into a file and edit it.
"""

from __future__ import annotations

from typing import Final

__all__ = ["DEFAULT_POLICY_TOML", "DEFAULT_POLICY_SOURCE"]

#: How errors and explanations name the default policy.
DEFAULT_POLICY_SOURCE: Final = "default policy (detect/policy_data.py)"

DEFAULT_POLICY_TOML: Final = """\
# vaultwatch access model and rotation schedule for LOGOS PXL Core.
#
# Encodes the secrets-management policy: runtime containers read only runtime secrets, CI/CD
# pipelines use short-lived tokens that read only build secrets, developers have no direct secret
# access. Any access outside an identity's role raises `access-model-violation`, even when Vault's
# own ACL allowed it. Paths are logical secret paths: for a KV v2 mount the API segment (`data/`,
# `metadata/`, `delete/`, `destroy/`, ...) is removed, so `logos/data/pxl-core/runtime/jwt-key`
# is judged as `logos/pxl-core/runtime/jwt-key`.
#
# Operations: read, list, create, update, patch, delete ("write" = create + update + patch,
# "*" = all). Durations: integer seconds or a number with s, m, h, d or w ("25h", "7d").
version = 1

# Secret paths the model governs for every role. A role with `confined = true` may do nothing
# outside its `allow` list anywhere (token self-maintenance excepted, see `housekeeping`).
protected = ["logos/pxl-core/*"]

# Always allowed to confined roles: a token looking after itself and its leases, and logging in.
housekeeping = [
  "auth/token/lookup-self",
  "auth/token/renew-self",
  "auth/token/revoke-self",
  "sys/capabilities-self",
  "sys/leases/renew",
  "sys/renew",
  "auth/*/login",
  "auth/*/login/*",
]

# Roles are tried in order; the first whose `match` fits an identity is its role. Each entry of
# `match` is one alternative whose keys must all hold: `policy` (held by the token),
# `auth_mount` ("auth/approle/"), `display_name` (glob), `metadata` (key = glob), `entity_id`.
[[roles]]
name = "runtime"
description = "Runtime containers: read-only access to runtime secrets"
confined = true
match = [
  { policy = "pxl-core-runtime" },
  { auth_mount = "auth/approle/", metadata = { role_name = "pxl-core-runtime" } },
]
allow = [{ path = "logos/pxl-core/runtime/*", operations = ["read"] }]

[[roles]]
name = "ci"
description = "CI/CD pipelines: short-lived tokens reading build secrets"
confined = true
max_token_ttl = "1h"
match = [
  { policy = "pxl-core-ci" },
  { auth_mount = "auth/approle/", metadata = { role_name = "pxl-core-ci" } },
]
allow = [{ path = "logos/pxl-core/build/*", operations = ["read"] }]

[[roles]]
name = "developer"
description = "Developers: no direct secret access"
match = [{ policy = "developer" }, { auth_mount = "auth/userpass/" }]
allow = []

# Rotation schedule: a secret whose logical path matches `paths` must be written again within
# `every` of its last write (or of first sight), plus `grace` (default: 10% of `every`, so a
# nightly job that runs a little late is not a miss). `on = "deploy"` means: rewritten within
# `within` after each deploy, a deploy being a successful access matching [rotation_deploy].
[[rotation]]
name = "jwt-keys"
paths = ["logos/pxl-core/runtime/jwt*"]
every = "1d"

[[rotation]]
name = "api-keys"
paths = ["logos/pxl-core/runtime/api-key*", "logos/pxl-core/runtime/api_key*"]
every = "7d"

[[rotation]]
name = "tls-certificates"
paths = ["logos/pxl-core/runtime/tls*"]
every = "30d"

[[rotation]]
name = "database-credentials"
paths = ["logos/pxl-core/runtime/db*", "logos/pxl-core/runtime/database*"]
on = "deploy"
within = "1h"

# The pipeline's pre-deployment check reads the registry token; that read, by a CI identity,
# marks a deploy (an operator reading it by hand is not a deploy).
[rotation_deploy]
paths = ["logos/pxl-core/build/registry-token"]
operations = ["read"]
roles = ["ci"]
"""
