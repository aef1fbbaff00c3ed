"""Secret values for the channels: webhook URLs, signing secrets, routing keys, SMTP passwords.

Configuration never holds a secret value, only a reference to where it lives:

* ``env:NAME`` — the environment variable ``NAME``; if ``NAME_FILE`` is set, the file it names
  is read instead (the container convention, e.g. ``/run/secrets/slack_url``);
* ``file:/run/secrets/slack_url`` — a file (one trailing newline is stripped);
* ``vault:PATH#KEY`` — key ``KEY`` of the KV v2 secret at ``PATH`` on the configured mount,
  read through hvac.

A loaded value is wrapped in :class:`Secret`, whose ``repr``/``str``/format are redacted so it
cannot slip into a log line, an exception or a traceback's locals by accident; ``reveal()`` is the
one explicit way out. Errors name the reference (``env:NAME``), never the value.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from alerts.errors import SecretError

__all__ = ["REDACTED", "Secret", "SecretResolver"]

REDACTED: Final = "**********"
_MAX_FILE_BYTES: Final = 64 * 1024


class Secret:
    """A secret string. Redacted in ``repr``/``str``/f-strings; compare in constant time."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The plain value: call this only where the value leaves for its destination."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({REDACTED!r})"

    def __str__(self) -> str:
        return REDACTED

    def __format__(self, spec: str) -> str:
        return REDACTED

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> Any:
        # pickling would write the value somewhere nobody meant to
        raise TypeError("Secret cannot be pickled")


class SecretResolver:
    """Turns references (``env:``, ``file:``, ``vault:``) into :class:`Secret` values.

    ``env`` defaults to ``os.environ``; ``vault`` is an authenticated ``hvac.Client`` (or None
    when no reference uses Vault) and ``vault_mount`` its KV v2 mount point.
    """

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        vault: Any = None,
        vault_mount: str = "secret",
    ) -> None:
        self.env = os.environ if env is None else env
        self.vault = vault
        self.vault_mount = vault_mount
        self._vault_cache: dict[str, dict[str, Secret | None]] = {}

    def resolve(self, ref: str) -> Secret:
        """Load the secret ``ref`` points to; raises :class:`SecretError`."""
        kind, sep, where = ref.partition(":")
        if not sep or not where:
            raise SecretError("secret reference must be env:NAME, file:PATH or vault:PATH#KEY")
        if kind == "env":
            return self._from_env(where)
        if kind == "file":
            return self._from_file(Path(where), ref)
        if kind == "vault":
            return self._from_vault(where, ref)
        raise SecretError(f"unknown secret source {kind!r} (use env, file or vault)")

    def _from_env(self, name: str) -> Secret:
        file_name = self.env.get(f"{name}_FILE")
        if file_name:
            return self._from_file(Path(file_name), f"env:{name}_FILE")
        value = self.env.get(name)
        if not value:
            raise SecretError(f"secret env:{name} is not set (nor {name}_FILE)")
        return Secret(value)

    def _from_file(self, path: Path, ref: str) -> Secret:
        try:
            with path.open("rb") as fh:
                data = fh.read(_MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise SecretError(f"secret {ref} cannot be read ({type(exc).__name__})") from None
        if len(data) > _MAX_FILE_BYTES:
            raise SecretError(f"secret {ref} is larger than {_MAX_FILE_BYTES} bytes")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise SecretError(f"secret {ref} is not UTF-8") from None
        text = text.removesuffix("\n").removesuffix("\r")
        if not text:
            raise SecretError(f"secret {ref} is empty")
        return Secret(text)

    def _from_vault(self, where: str, ref: str) -> Secret:
        path, sep, key = where.partition("#")
        if not sep or not path or not key:
            raise SecretError(f"secret {ref}: use vault:PATH#KEY")
        if self.vault is None:
            raise SecretError(f"secret {ref} needs a Vault client, none configured")
        data = self._vault_cache.get(path)
        if data is None:
            try:
                resp = self.vault.secrets.kv.v2.read_secret_version(
                    path=path, mount_point=self.vault_mount, raise_on_deleted_version=True
                )
                # cache wrapped, so not even the resolver's __dict__ shows a value
                data = {
                    k: Secret(v) if isinstance(v, str) and v else None
                    for k, v in resp["data"]["data"].items()
                }
            except Exception as exc:  # hvac raises many types; the message may echo the response
                raise SecretError(f"secret {ref} cannot be read from Vault ({type(exc).__name__})") from None
            self._vault_cache[path] = data
        value = data.get(key)
        if value is None:
            raise SecretError(f"secret {ref}: key missing or not a non-empty string")
        return value
