"""vaultwatch's configuration: one validated settings model, built in the entrypoint.

Sources, lowest precedence first: the model's defaults, a TOML file, then ``VAULTWATCH_*``
environment variables, nested with ``__`` (``VAULTWATCH_KAFKA__BOOTSTRAP``,
``VAULTWATCH_VAULT__AUTH__METHOD``). Nothing is read at import time and there is no global
settings object: :func:`load_settings` builds a :class:`Settings` and the caller hands the parts
to the constructors that need them.

Secrets are :class:`~pydantic.SecretStr`. Any field ``X`` may instead be given as ``X_file``
(in TOML, or ``VAULTWATCH_..._X_FILE`` in the environment) naming a file whose content is the
value, the layout of container secrets (``/run/secrets/kafka_password``). One trailing newline
is stripped. Relative paths are relative to the configuration file. The free-form
``channels``/``routes`` tables hold secret *references* understood by the alerts package
(``env:NAME``, ``file:PATH``, ``vault:PATH#KEY``), passed through untouched; there a
secret-looking key (``url``, ``token``, ``password``, ``routing_key``...) given as ``X_file``
becomes ``X = "file:<path>"`` after checking that the file can be read, so the value itself is
only read by the channel that uses it.

Every error is a :class:`~vaultwatch.errors.ConfigError` listing ``(key, problem)`` pairs.
Problems name the key and say what is wrong; they never contain a value, so a misplaced secret
cannot leak through an error message. Placeholder secrets (``changeme``, ``secret``,
``password``, empty) are refused. :meth:`Settings.redacted` is the effective configuration safe
to print.

The API's authentication (``[api.auth]``, :class:`ApiAuthConfig`) is part of the same model. Its
long-standing environment names are read here too, below the nested ``VAULTWATCH_API__AUTH__*``
form: ``JWT_KEY_FILE``, ``API_KEYS_FILE`` and ``VAULTWATCH_API_<FIELD>`` (``VAULTWATCH_API_USERS_FILE``,
``VAULTWATCH_API_TRUSTED_PROXIES``...). There is no other configuration path.

The module is longer than most (about 700 lines) because it is the one settings model: every
typed section and the loader that merges file, ``X_file`` secrets and environment live together,
so a newcomer finds the whole configuration surface in one place.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from ingest.kafka_config import ConsumerSettings, GroupTimings, KafkaSettings

from .errors import ConfigError

if TYPE_CHECKING:
    from detect.policy import AccessPolicy

__all__ = [
    "ApiAuthConfig",
    "ApiConfig",
    "ArchiveConfig",
    "ConfigError",
    "DetectSettings",
    "ENV_PREFIX",
    "CONFIG_ENV",
    "KafkaConfig",
    "LoggingConfig",
    "MetricsConfig",
    "REDACTED",
    "Settings",
    "StoreConfig",
    "VaultAuth",
    "VaultConfig",
    "load_policy",
    "load_settings",
]

ENV_PREFIX: Final = "VAULTWATCH_"
#: Environment variable naming the configuration file when no path is passed.
CONFIG_ENV: Final = "VAULTWATCH_CONFIG"
REDACTED: Final = "**********"
PLACEHOLDERS: Final = frozenset({"", "changeme", "change-me", "change_me", "secret", "password"})
_MAX_SECRET_FILE: Final = 64 * 1024
# Keys in free-form tables whose values are secrets (webhook URLs carry their token).
_SECRET_KEY = re.compile(
    r"(^|_)(url|urls|webhook|token|tokens|password|passwd|secret|secrets|routing_key|integration_key|api_key|"
    r"signing_key|private_key|auth|authorization)$",
    re.IGNORECASE,
)
_REFERENCE = re.compile(r"^(env|file|vault):")


def _refuse_placeholder(value: SecretStr) -> SecretStr:
    if value.get_secret_value().strip().lower() in PLACEHOLDERS:
        raise ValueError("empty or placeholder secret refused; set the real value")
    return value


#: A secret string that refuses placeholders.
Secret = Annotated[SecretStr, AfterValidator(_refuse_placeholder)]


class _Section(BaseModel):
    """Typed section: unknown keys are errors, so a typo is reported instead of ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaConfig(_Section):
    """Where the audit topic lives and how the detector joins its consumer group."""

    bootstrap: str = Field(default="127.0.0.1:9092", description="host:port[,host:port...]")
    topic: str = "vault-audit"
    group_id: str = "vaultwatch"
    client_id: str = "vaultwatch"
    # Fast group formation: about 3 s instead of over 20 s with kafka-python's own defaults.
    session_timeout_ms: int = Field(default=6000, ge=1000, le=3_600_000)
    heartbeat_interval_ms: int = Field(default=1000, ge=100, le=600_000)
    max_poll_interval_ms: int = Field(default=10_000, ge=1000, le=86_400_000)
    max_poll_records: int = Field(default=1000, ge=1)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: Secret | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    @field_validator("bootstrap")
    @classmethod
    def _servers(cls, v: str) -> str:
        servers = [s.strip() for s in v.split(",") if s.strip()]
        if not servers:
            raise ValueError("at least one host:port is required")
        for s in servers:
            host, sep, port = s.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{s!r} is not host:port")
        return ",".join(servers)

    @model_validator(mode="after")
    def _consistent(self) -> KafkaConfig:
        if self.heartbeat_interval_ms * 3 > self.session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be at most a third of session_timeout_ms")
        if self.security_protocol.startswith("SASL_"):
            missing = [
                k for k in ("sasl_mechanism", "sasl_username", "sasl_password") if getattr(self, k) is None
            ]
            if missing:
                raise ValueError(f"security_protocol {self.security_protocol} needs {', '.join(missing)}")
        return self

    def servers(self) -> list[str]:
        """The bootstrap servers as a list, blanks around and between entries dropped."""
        return [b.strip() for b in self.bootstrap.split(",") if b.strip()]

    def client_settings(self) -> KafkaSettings:
        """The settings shared by every Kafka client (the password is revealed only here).

        This is the one mapping from configuration to :class:`~ingest.kafka_config.KafkaSettings`:
        the worker, the demo's shipper and the tests all build their clients from it.
        """
        return KafkaSettings(
            bootstrap=self.servers(),
            client_id=self.client_id,
            security_protocol=self.security_protocol,
            sasl_mechanism=self.sasl_mechanism,
            sasl_username=self.sasl_username,
            sasl_password=self.sasl_password.get_secret_value() if self.sasl_password else None,
            ssl_cafile=str(self.ssl_cafile) if self.ssl_cafile else None,
            ssl_certfile=str(self.ssl_certfile) if self.ssl_certfile else None,
            ssl_keyfile=str(self.ssl_keyfile) if self.ssl_keyfile else None,
        )

    def consumer_settings(self) -> ConsumerSettings:
        """The detector's consumer-group settings."""
        return ConsumerSettings(
            group_id=self.group_id,
            timings=GroupTimings(
                session_timeout_ms=self.session_timeout_ms,
                heartbeat_interval_ms=self.heartbeat_interval_ms,
                max_poll_interval_ms=self.max_poll_interval_ms,
            ),
            max_poll_records=self.max_poll_records,
        )


class StoreConfig(_Section):
    """The alert store: ``sqlite:///path`` or ``postgresql+psycopg://user@host/db``."""

    url: str = "sqlite:///./var/vaultwatch.db"

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, v: str) -> str:
        scheme = v.split("://", 1)[0] if "://" in v else ""
        if scheme.split("+", 1)[0] not in ("sqlite", "postgresql"):
            raise ValueError("must be a sqlite:/// or postgresql:// SQLAlchemy URL")
        return v


class ArchiveConfig(_Section):
    """The Parquet event archive (see :mod:`vaultwatch.service.archive`)."""

    enabled: bool = True
    path: Path = Path("./var/archive")
    retention_days: int = Field(default=90, ge=1, le=3650)
    max_rows: int = Field(default=50_000, ge=1)
    flush_interval_s: float = Field(default=60.0, gt=0)


class DetectSettings(BaseModel):
    """Detection: ``policy_file`` plus any other keys, handed to the engine as they are."""

    model_config = ConfigDict(extra="allow", frozen=True)

    policy_file: Path | None = None

    def options(self) -> dict[str, Any]:
        """Every key but ``policy_file``, for the engine's own config parser."""
        return dict(self.model_extra or {})

    def engine_config(self) -> dict[str, Any]:
        """:meth:`options` plus ``policy``, the access model read from ``policy_file`` (or the
        packaged default): the detection engine takes it as data and reads no file itself."""
        return {**self.options(), "policy": load_policy(self.policy_file)}


def load_policy(path: str | os.PathLike[str] | None) -> AccessPolicy:
    """The access model and rotation schedule read from the TOML file at ``path``, or the packaged
    default (:func:`detect.policy.default_policy`) when ``path`` is None.

    This is where a policy file is read: :mod:`detect` only parses text. A missing or unreadable
    file raises :class:`detect.errors.PolicyError` naming the file; so does invalid content.
    """
    # Here, not at module level: ``detect``'s package loads the engine and scikit-learn, and the
    # shipper (``vaultwatch ship``) reads these settings on hosts that never detect anything.
    from detect.policy import PolicyError, default_policy, parse_policy

    if path is None:
        return default_policy()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{p}: cannot read policy file: {exc.__class__.__name__}: {exc}") from None
    return parse_policy(text, str(p))


class ApiAuthConfig(_Section):
    """How the API authenticates (see :mod:`vaultwatch.api.auth`); secrets are file paths.

    ``jwt_key_file`` (or ``jwt_vault_path``, ``mount/path#field`` of a PEM in KV v2) signs tokens
    and sessions, ``api_keys_file`` holds hashed API keys, ``users_file`` argon2 password hashes.
    ``sso_header`` is trusted only from ``trusted_proxies`` (CIDRs). The rest are limits.
    """

    jwt_key_file: Path | None = None
    jwt_vault_path: str | None = None
    issuer: str = "vaultwatch"
    audience: str = "vaultwatch-api"
    token_ttl: float = Field(default=3600.0, gt=0)
    session_ttl: float = Field(default=8 * 3600.0, gt=0)
    api_keys_file: Path | None = None
    users_file: Path | None = None
    sso_header: str | None = None
    sso_role_header: str | None = None
    sso_default_role: Literal["viewer", "analyst", "admin"] = "viewer"
    trusted_proxies: tuple[str, ...] = ()
    cookie_secure: bool = True
    cookie_samesite: Literal["lax", "strict"] = "lax"
    rate_per_second: float = Field(default=20.0, gt=0)
    rate_burst: int = Field(default=100, gt=0)
    login_rate_per_second: float = Field(default=1.0, gt=0)
    login_burst: int = Field(default=10, gt=0)
    #: Refused API keys, bearer tokens and session cookies per source address: after
    #: ``auth_failure_burst`` of them the address gets 429 until the bucket refills.
    auth_failure_per_second: float = Field(default=0.2, gt=0)
    auth_failure_burst: int = Field(default=20, gt=0)
    max_body_bytes: int = Field(default=64 * 1024, gt=0)
    max_page_size: int = Field(default=200, gt=0)
    max_event_range_hours: float = Field(default=7 * 24.0, gt=0)
    stream_poll_seconds: float = Field(default=1.0, gt=0)
    reload_check_seconds: float = Field(default=0.0, ge=0)

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, v: Any) -> Any:
        if isinstance(v, str):
            return tuple(p.strip() for p in v.split(",") if p.strip())
        return v

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for cidr in v:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError("holds an invalid CIDR") from None
        return v

    @field_validator("sso_default_role", "cookie_samesite", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v


class ApiConfig(_Section):
    """The HTTP API and web UI."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    public_base_url: str | None = None
    auth: ApiAuthConfig = Field(default_factory=ApiAuthConfig)

    @field_validator("public_base_url")
    @classmethod
    def _http(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an absolute http(s):// URL")
        if parts.password is not None or parts.username is not None:
            raise ValueError("must not carry credentials")
        return v.rstrip("/")


class VaultAuth(_Section):
    """How vaultwatch logs in to Vault/OpenBao for its own checks.

    * ``token``: the ``token`` itself;
    * ``token_file``: ``token_file`` names a file read at every login, so a token that Vault
      Agent rotates in its sink is picked up (this is why it stays a path here);
    * ``approle``: ``role_id`` and ``secret_id`` on ``mount`` (default ``approle``);
    * ``kubernetes``: ``role`` and the service-account JWT at ``jwt_path`` on ``mount``.
    """

    method: Literal["token", "token_file", "approle", "kubernetes"] = "token"
    token: Secret | None = None
    token_file: Path | None = None
    role_id: str | None = None
    secret_id: Secret | None = None
    role: str | None = None
    jwt_path: Path = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
    mount: str | None = None

    @model_validator(mode="after")
    def _fields_for_method(self) -> VaultAuth:
        needs = {
            "token": ("token",),
            "token_file": ("token_file",),
            "approle": ("role_id", "secret_id"),
            "kubernetes": ("role",),
        }[self.method]
        missing = [k for k in needs if getattr(self, k) is None]
        if missing:
            raise ValueError(f"auth method {self.method!r} needs {', '.join(missing)}")
        return self

    @property
    def mount_path(self) -> str:
        """The auth mount, defaulting to the method's name."""
        return self.mount or self.method


class VaultConfig(_Section):
    """The Vault/OpenBao server vaultwatch talks to (checks, exposure queries)."""

    addr: str = "http://127.0.0.1:8200"
    namespace: str | None = None
    tls_verify: bool = True
    ca_cert: Path | None = None
    auth: VaultAuth

    @field_validator("addr")
    @classmethod
    def _http(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http(s):// address")
        return v.rstrip("/")


class ReportsConfig(_Section):
    """Audit review reports that ``vaultwatch run`` renders on a schedule.

    Each listed period is rendered once, shortly after it ends, under ``<out>/reports/<id>/``
    (``out`` defaults to the archive directory's parent, where ``vaultwatch report`` and the API
    look too); ``notify`` lists outbox endpoints (``receiver/kind/index``) to announce it to.
    """

    periods: list[Literal["daily", "weekly", "monthly"]] = Field(default_factory=list)
    out: Path | None = None
    notify: list[str] = Field(default_factory=list)
    check_json: Path | None = None

    def directory(self, archive: ArchiveConfig) -> Path:
        """The base directory reports go under (``<it>/reports/<period-id>``)."""
        return self.out if self.out is not None else archive.path.parent


class MetricsConfig(_Section):
    """Prometheus metrics: served by the API at ``/metrics``, or on their own ``port``."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int | None = Field(default=None, ge=1, le=65535)


class LoggingConfig(_Section):
    """vaultwatch's own log lines (stderr)."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v


def _walk_free_form(node: Any, where: str, out: list[str]) -> None:
    """Collect keys of free-form tables holding placeholder secrets."""
    if isinstance(node, dict):
        for k, v in node.items():
            key = f"{where}.{k}" if where else str(k)
            if isinstance(v, str) and _SECRET_KEY.search(str(k)) and v.strip().lower() in PLACEHOLDERS:
                out.append(key)
            else:
                _walk_free_form(v, key, out)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _walk_free_form(v, f"{where}[{i}]", out)


class Settings(BaseSettings):
    """The whole configuration. Build it with :func:`load_settings`, not at import time.

    ``channels`` and ``routes`` are free-form tables handed to the alerts package, ``detect``
    to the detection engine; the other sections are typed and reject unknown keys.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    archive: ArchiveConfig = Field(default_factory=ArchiveConfig)
    detect: DetectSettings = Field(default_factory=DetectSettings)
    api: ApiConfig = Field(default_factory=ApiConfig)
    vault: VaultConfig | None = None
    channels: dict[str, Any] = Field(default_factory=dict)
    routes: dict[str, Any] = Field(default_factory=dict)
    reports: ReportsConfig = Field(default_factory=ReportsConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # load_settings() merges the TOML file and the environment mapping it is given, so the
        # process environment is never read behind the caller's back.
        return (init_settings,)

    @field_validator("channels", "routes")
    @classmethod
    def _no_placeholder_secrets(cls, v: Any, info: ValidationInfo) -> Any:
        bad: list[str] = []
        _walk_free_form(v, str(info.field_name), bad)
        if bad:
            raise ValueError(f"empty or placeholder secret refused at {', '.join(bad)}")
        return v

    def redacted(self) -> dict[str, Any]:
        """The effective configuration as plain data, every secret shown as ``**********``."""
        data: dict[str, Any] = self.model_dump(mode="json")
        data["store"]["url"] = _redact_url(self.store.url)
        data["channels"] = _redact_free_form(data["channels"])
        data["routes"] = _redact_free_form(data["routes"])
        return data

    def __repr__(self) -> str:
        return f"Settings({self.redacted()!r})"

    def __str__(self) -> str:
        return repr(self)


def _redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username or ''}:{REDACTED}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _redact_free_form(node: Any, key: str = "") -> Any:
    if isinstance(node, dict):
        return {k: _redact_free_form(v, str(k)) for k, v in node.items()}
    if isinstance(node, list):
        return [_redact_free_form(v, key) for v in node]
    if isinstance(node, str) and node and _SECRET_KEY.search(key) and not _REFERENCE.match(node):
        return REDACTED
    return node


# -- loading ----------------------------------------------------------------------------------
def _section_model(model: type[BaseModel] | None, key: str) -> type[BaseModel] | None | Literal[False]:
    """The model of a nested table: a model class, None for free-form, False for a plain value."""
    if model is None:
        return None
    field = model.model_fields.get(key)
    if field is None:
        return None if model.model_config.get("extra") == "allow" else False
    ann = field.annotation
    for cand in (ann, *getattr(ann, "__args__", ())):
        if isinstance(cand, type) and issubclass(cand, BaseModel):
            return cand
    return None  # dict/list fields: free-form


def _read_secret_file(value: Any, key: str, base: Path) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError([(key, "must be a file path")])
    p = Path(value)
    if not p.is_absolute():
        p = base / p
    try:
        with p.open("rb") as fh:
            raw = fh.read(_MAX_SECRET_FILE + 1)
    except FileNotFoundError:
        raise ConfigError([(key, f"cannot read {p}: no such file")]) from None
    except PermissionError:
        raise ConfigError([(key, f"cannot read {p}: permission denied")]) from None
    except OSError as exc:
        raise ConfigError([(key, f"cannot read {p}: {exc.strerror or type(exc).__name__}")]) from None
    if len(raw) > _MAX_SECRET_FILE:
        raise ConfigError([(key, f"{p} is larger than {_MAX_SECRET_FILE} bytes")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError([(key, f"{p} is not UTF-8 text")]) from None
    return text.removesuffix("\n").removesuffix("\r")


def _resolve_files(
    data: dict[str, Any],
    model: type[BaseModel] | None,
    where: str,
    base: Path,
    problems: list[tuple[str, str]],
) -> None:
    """Replace ``X_file`` keys by ``X`` read from the file, in place, collecting problems.

    In a typed section only declared fields ``X`` qualify (a declared ``X_file``, such as
    ``vault.auth.token_file`` or ``detect.policy_file``, is a path and stays one). In free-form
    tables only secret-looking keys qualify (``ca_file`` stays a path), and they become
    ``file:`` references once the file is known to be readable.
    """
    for key in list(data):
        value = data[key]
        dotted = f"{where}{key}"
        if isinstance(key, str) and key.endswith("_file") and len(key) > 5:
            target = key[:-5]
            if model is not None:
                ok = key not in model.model_fields and target in model.model_fields
            else:
                ok = bool(_SECRET_KEY.search(target))
            if ok:
                if target in data:
                    problems.append((dotted, f"give either {where}{target} or {dotted}, not both"))
                    continue
                try:
                    text = _read_secret_file(value, dotted, base)
                    if model is None:
                        # Free-form tables carry references; the channel reads the file itself.
                        ref = Path(value) if Path(value).is_absolute() else base / value
                        data[target] = f"file:{ref}"
                    else:
                        data[target] = text
                except ConfigError as exc:
                    problems.extend(exc.problems)
                del data[key]
                continue
        sub = _section_model(model, key) if model is not None else None
        if sub is False:
            continue
        if isinstance(value, dict):
            _resolve_files(value, sub, f"{dotted}.", base, problems)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    _resolve_files(item, None, f"{dotted}[{i}].", base, problems)


def _counterpart(key: str) -> str:
    return key[:-5] if key.endswith("_file") else f"{key}_file"


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> None:
    """Deep-merge ``over`` into ``base``; setting ``X`` drops ``X_file`` and vice versa."""
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
            continue
        base.pop(_counterpart(k), None)
        base[k] = v


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    """``VAULTWATCH_A__B=v`` -> ``{"a": {"b": "v"}}`` for known top-level sections only."""
    fields = Settings.model_fields
    out: dict[str, Any] = {}
    for name in sorted(env):
        if not name.upper().startswith(ENV_PREFIX) or name.upper() == CONFIG_ENV:
            continue
        parts = name[len(ENV_PREFIX) :].lower().split("__")
        top = parts[0]
        # Other VAULTWATCH_* variables (test and tool knobs) are not configuration.
        if top not in fields and not (top.endswith("_file") and top[:-5] in fields):
            continue
        if any(not p for p in parts):
            continue
        value: Any = env[name]
        if len(parts) == 1 and value.lstrip().startswith(("{", "[")):
            try:
                value = json.loads(value)
            except ValueError:
                raise ConfigError([(name, "is not valid JSON")]) from None
        node = out
        for p in parts[:-1]:
            nxt = node.get(p)
            if not isinstance(nxt, dict):
                nxt = node[p] = {}
            node = nxt
        node.pop(_counterpart(parts[-1]), None)
        node[parts[-1]] = value
    return out


#: The API's authentication settings under their historical environment names.
_LEGACY_API_ENV: Final = {
    "JWT_KEY_FILE": "jwt_key_file",
    "API_KEYS_FILE": "api_keys_file",
    **{f"VAULTWATCH_API_{name.upper()}": name for name in ApiAuthConfig.model_fields},
}


def _legacy_api_env(env: Mapping[str, str]) -> dict[str, Any]:
    """``JWT_KEY_FILE``, ``API_KEYS_FILE`` and ``VAULTWATCH_API_<FIELD>`` as ``api.auth`` keys.

    Empty values are ignored, as they always were.
    """
    auth = {field: env[name] for name, field in _LEGACY_API_ENV.items() if env.get(name)}
    return {"api": {"auth": auth}} if auth else {}


def _validation_problems(exc: ValidationError) -> list[tuple[str, str]]:
    problems = []
    for err in exc.errors(include_url=False, include_input=False, include_context=False):
        key = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required"
        elif msg.startswith(("Value error, ", "Assertion failed, ")):
            msg = msg.split(", ", 1)[1]
        problems.append((key, msg))
    return problems


def load_settings(path: str | os.PathLike[str] | None, env: Mapping[str, str] = os.environ) -> Settings:
    """Build the settings from a TOML file (optional) and ``VAULTWATCH_*`` overrides in ``env``.

    With ``path=None`` the file named by ``$VAULTWATCH_CONFIG`` is used, if set. Raises
    :class:`ConfigError` naming every bad key; no configured value appears in the error.
    """
    if path is None and env.get(CONFIG_ENV):
        path = env[CONFIG_ENV]
    source = str(path) if path is not None else None
    data: dict[str, Any] = {}
    base = Path.cwd()
    if path is not None:
        p = Path(path)
        base = p.resolve().parent
        try:
            with p.open("rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError([("", "no such file")], source) from None
        except (IsADirectoryError, PermissionError) as exc:
            raise ConfigError([("", f"cannot read: {exc.strerror}")], source) from None
        except tomllib.TOMLDecodeError as exc:
            # The decoder's message gives line and column, not the offending text.
            raise ConfigError([("", f"not valid TOML: {exc}")], source) from None
        except UnicodeDecodeError:
            raise ConfigError([("", "not valid TOML: not UTF-8")], source) from None
    try:
        _merge(data, _legacy_api_env(env))
        _merge(data, _env_overrides(env))
    except ConfigError as exc:
        raise ConfigError(exc.problems, source) from None
    problems: list[tuple[str, str]] = []
    _resolve_files(data, Settings, "", base, problems)
    if problems:
        raise ConfigError(problems, source)
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_validation_problems(exc), source) from None
