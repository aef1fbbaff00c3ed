"""Pre-deployment validation of a secrets setup through the Vault API (``vaultwatch check``).

What the seed design asks before every deployment, checked against the live server:

* every required secret exists and is readable by the checking identity, in the right format
  (a JWT signing key is a PEM private key of an allowed type and size; a TLS certificate parses,
  matches its key and is not about to expire; API keys match a pattern; DB credentials present);
* audit logging is on (at least one device, two recommended), no device logs raw values, no
  secrets engine is tuned to leave request or response keys un-HMAC'd;
* policies follow least privilege: runtime policies only read runtime paths, CI policies only
  touch build paths and CI tokens are short-lived, developer policies never reach the service's
  secrets, and nobody but the admin role has ``sudo`` or a wildcard over ``sys/``.

Results never contain a secret value: only paths, field names, types, sizes and dates.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from .client import VaultClient, VaultClientError
from .policy_hcl import PathRule, PolicyParseError, glob_reaches, glob_within, parse_policy

__all__ = ["CheckResult", "CheckSpec", "load_spec", "run_checks", "parse_duration"]

PASS, WARN, FAIL = "pass", "warn", "fail"


@dataclass(frozen=True)
class CheckResult:
    check: str  # e.g. "secret.format", "audit.devices", "policy.runtime"
    target: str  # a path, device or policy name: never a value
    status: str  # pass | warn | fail
    detail: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


CheckSpec = dict[str, Any]


def load_spec(path: str | Path | None = None) -> CheckSpec:
    """The check specification: the packaged default (the seed's), overlaid by ``path``."""
    default = tomllib.loads(resources.files("vaultwatch.vault").joinpath("default_check.toml").read_text())
    if path is None:
        return default
    try:
        user = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise ValueError(f"cannot read check spec {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"invalid TOML in {path}: {exc}") from None
    merged = dict(default)
    for k, v in user.items():
        merged[k] = {**default[k], **v} if isinstance(v, dict) and isinstance(default.get(k), dict) else v
    return merged


def parse_duration(value: str | int | float) -> float:
    """Seconds from ``90``, ``"15m"``, ``"1h30m"``, ``"7d"``."""
    if isinstance(value, (int, float)):
        return float(value)
    parts = re.findall(r"(\d+(?:\.\d+)?)([smhd])", value.strip())
    if not parts or "".join(a + b for a, b in parts) != value.strip():
        if value.strip().isdigit():
            return float(value)
        raise ValueError(f"not a duration: {value!r}")
    mult = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(float(n) * mult[u] for n, u in parts)


# -- secrets -----------------------------------------------------------------------------------
def _check_private_key(pem: str, spec: dict[str, Any]) -> tuple[str, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        return FAIL, "not a valid unencrypted PEM private key"
    allowed = set(spec.get("allowed_key_types", ["rsa", "ec", "ed25519"]))
    if isinstance(key, rsa.RSAPrivateKey):
        bits, kind = key.key_size, "rsa"
        if kind in allowed and bits < int(spec.get("min_rsa_bits", 2048)):
            return FAIL, f"RSA key of {bits} bits, below {spec.get('min_rsa_bits', 2048)}"
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        bits, kind = key.curve.key_size, "ec"
        if kind in allowed and bits < int(spec.get("min_ec_bits", 256)):
            return FAIL, f"EC key on {key.curve.name}, below {spec.get('min_ec_bits', 256)} bits"
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        bits, kind = 256, "ed25519"
    else:
        return FAIL, f"key type {type(key).__name__} is not allowed"
    if kind not in allowed:
        return FAIL, f"{kind} keys are not allowed (allowed: {', '.join(sorted(allowed))})"
    return PASS, f"{kind} private key, {bits} bits"


def _check_tls(data: dict[str, Any], spec: dict[str, Any], min_days: float, now: datetime) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert_pem, key_pem = (
        data.get(spec.get("cert_field", "certificate")),
        data.get(spec.get("key_field", "private_key")),
    )
    if not isinstance(cert_pem, str):
        return FAIL, f"field {spec.get('cert_field', 'certificate')!r} missing"
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
    except ValueError:
        return FAIL, "certificate does not parse as PEM X.509"
    if isinstance(key_pem, str):
        try:
            key = serialization.load_pem_private_key(key_pem.encode(), password=None)
        except (ValueError, TypeError):
            return FAIL, "private key does not parse"
        fmt = serialization.PublicFormat.SubjectPublicKeyInfo
        enc = serialization.Encoding.DER
        if key.public_key().public_bytes(enc, fmt) != cert.public_key().public_bytes(enc, fmt):
            return FAIL, "certificate does not match its private key"
    else:
        return FAIL, f"field {spec.get('key_field', 'private_key')!r} missing"
    not_after = cert.not_valid_after_utc
    days = (not_after - now).total_seconds() / 86400
    if days < 0:
        return FAIL, f"certificate expired on {not_after.date().isoformat()}"
    if days < min_days:
        return (
            FAIL,
            f"certificate expires in {days:.1f} days ({not_after.date().isoformat()}), under {min_days:g}",
        )
    return PASS, f"certificate valid until {not_after.date().isoformat()} ({days:.0f} days), matches its key"


def _check_secret(
    vc: VaultClient, mount: str, spec: dict[str, Any], cfg: CheckSpec, now: datetime
) -> list[CheckResult]:
    path = spec["path"]
    target = f"{mount}/{path}"
    try:
        resp = vc.call(
            vc.hvac.secrets.kv.v2.read_secret_version,
            path=path,
            mount_point=mount,
            raise_on_deleted_version=True,
        )
    except VaultClientError as exc:
        msg = str(exc)
        reason = (
            "missing"
            if "InvalidPath" in msg
            else ("not readable by this identity" if "Forbidden" in msg else msg)
        )
        return [CheckResult("secret.readable", target, FAIL, reason)]
    data = (resp.get("data") or {}).get("data") or {}
    out = [CheckResult("secret.readable", target, PASS, f"readable, {len(data)} field(s)")]
    kind = spec.get("kind", "present")
    if kind == "present":
        status, detail = (PASS, "present") if data else (FAIL, "secret has no fields")
    elif kind == "jwt_signing_key":
        pem = data.get(spec.get("field", "private_key"))
        status, detail = (
            _check_private_key(pem, spec)
            if isinstance(pem, str)
            else (FAIL, f"field {spec.get('field')!r} missing")
        )
    elif kind == "tls_certificate":
        status, detail = _check_tls(data, spec, float(cfg.get("tls_min_days", 14)), now)
    elif kind == "api_keys":
        pattern = re.compile(spec.get("pattern", r"^\S{32,}$"))
        bad = sorted(k for k, v in data.items() if not isinstance(v, str) or not pattern.fullmatch(v))
        status, detail = (
            (FAIL, f"field(s) not matching the API key pattern: {', '.join(bad)}")
            if bad or not data
            else (PASS, f"{len(data)} API key(s) match the pattern")
        )
    elif kind == "db_credentials":
        missing = [f for f in spec.get("fields", ["username", "password"]) if not data.get(f)]
        status, detail = (
            (FAIL, f"missing or empty: {', '.join(missing)}") if missing else (PASS, "credentials present")
        )
    else:
        status, detail = FAIL, f"unknown secret kind {kind!r} in the check spec"
    out.append(CheckResult(f"secret.{kind}", target, status, detail))
    return out


# -- audit -------------------------------------------------------------------------------------
def _check_audit(vc: VaultClient, cfg: CheckSpec) -> list[CheckResult]:
    out: list[CheckResult] = []
    audit = cfg.get("audit", {})
    try:
        devices = vc.audit_devices()
    except VaultClientError as exc:
        return [
            CheckResult("audit.devices", "sys/audit", FAIL, f"cannot list audit devices (needs sudo): {exc}")
        ]
    n, lo, rec = len(devices), int(audit.get("min_devices", 1)), int(audit.get("recommended_devices", 2))
    status = FAIL if n < lo else (WARN if n < rec else PASS)
    out.append(
        CheckResult("audit.devices", "sys/audit", status, f"{n} audit device(s) enabled; {rec} recommended")
    )
    for path, dev in sorted(devices.items()):
        raw = str((dev.get("options") or {}).get("log_raw", "false")).lower() in ("true", "1")
        out.append(
            CheckResult(
                "audit.log_raw",
                path,
                FAIL if raw else PASS,
                "logs secrets in clear (log_raw=true)" if raw else "values are HMAC'd",
            )
        )
    mounts = vc.call(vc.hvac.sys.list_mounted_secrets_engines)
    mounts = mounts.get("data", mounts)
    for path, m in sorted(mounts.items()):
        if not isinstance(m, dict) or "type" not in m:
            continue
        conf = m.get("config") or {}
        keys = (conf.get("audit_non_hmac_request_keys") or []) + (
            conf.get("audit_non_hmac_response_keys") or []
        )
        if keys:
            out.append(
                CheckResult(
                    "audit.non_hmac_keys",
                    path,
                    FAIL,
                    f"tuned to log these keys in clear: {', '.join(sorted(set(keys)))}",
                )
            )
    if not any(r.check == "audit.non_hmac_keys" for r in out):
        out.append(
            CheckResult("audit.non_hmac_keys", "sys/mounts", PASS, "no secrets engine leaves keys un-HMAC'd")
        )
    return out


# -- policies ----------------------------------------------------------------------------------
def _policies(vc: VaultClient) -> dict[str, list[PathRule] | str]:
    names = vc.call(vc.hvac.sys.list_acl_policies)
    keys = (names.get("data") or {}).get("keys") or names.get("keys") or []
    out: dict[str, list[PathRule] | str] = {}
    for name in keys:
        if name == "root":
            continue
        text = vc.call(vc.hvac.sys.read_acl_policy, name)["data"]["policy"]
        try:
            out[name] = parse_policy(text)
        except PolicyParseError as exc:
            out[name] = str(exc)
    return out


def _check_policies(vc: VaultClient, cfg: CheckSpec) -> list[CheckResult]:
    roles, scope = cfg.get("roles", {}), cfg.get("scope", {})
    try:
        policies = _policies(vc)
    except VaultClientError as exc:
        return [CheckResult("policy.read", "sys/policies/acl", FAIL, str(exc))]
    out: list[CheckResult] = []
    admin = set(roles.get("admin", []))
    for name, rules in sorted(policies.items()):
        if isinstance(rules, str):
            out.append(CheckResult("policy.parse", name, FAIL, f"cannot parse policy: {rules}"))
            continue
        if name in roles.get("runtime", []):
            allowed = scope.get("runtime_paths", [])
            bad = [
                r
                for r in rules
                if r.grants and (r.grants - {"read"} or not any(glob_within(r.path, a) for a in allowed))
            ]
            out.append(_scope_result("policy.runtime", name, bad, "grants only read on runtime paths"))
        if name in roles.get("ci", []):
            allowed = scope.get("ci_paths", [])
            bad = [r for r in rules if r.grants and not any(glob_within(r.path, a) for a in allowed)]
            out.append(_scope_result("policy.ci", name, bad, "touches only build paths"))
        if name in roles.get("developer", []):
            prefixes = scope.get("protected_prefixes", [])
            bad = [r for r in rules if r.grants and any(glob_reaches(r.path, p) for p in prefixes)]
            out.append(
                _scope_result("policy.developer", name, bad, "no direct access to the service's secrets")
            )
        if name not in admin:
            bad = [
                r
                for r in rules
                if "sudo" in r.grants or (r.grants and r.path in ("*", "sys/*", "+/*", "sys/+/*"))
            ]
            out.append(_scope_result("policy.sys", name, bad, "no sudo and no wildcard over sys/"))
    out.extend(_check_ci_ttls(vc, cfg))
    return out


def _scope_result(check: str, name: str, bad: list[PathRule], ok: str) -> CheckResult:
    if not bad:
        return CheckResult(check, name, PASS, ok)
    shown = "; ".join(f'path "{r.path}" {list(r.capabilities)}' for r in bad[:5])
    return CheckResult(check, name, FAIL, f"violates least privilege: {shown}")


def _check_ci_ttls(vc: VaultClient, cfg: CheckSpec) -> list[CheckResult]:
    """CI tokens are short-lived: every AppRole or token role carrying a CI policy has a short TTL."""
    ci = set(cfg.get("roles", {}).get("ci", []))
    limit = parse_duration(cfg.get("ci_max_ttl", "1h"))
    out: list[CheckResult] = []
    auths = vc.call(vc.hvac.sys.list_auth_methods)
    auths = auths.get("data", auths)
    for mount, meta in sorted(auths.items()):
        if not isinstance(meta, dict) or meta.get("type") != "approle":
            continue
        mp = mount.rstrip("/")
        try:
            names = vc.call(vc.hvac.auth.approle.list_roles, mount_point=mp)["data"]["keys"]
        except VaultClientError:
            continue  # no roles
        for role in names:
            data = vc.call(vc.hvac.auth.approle.read_role, role, mount_point=mp)["data"]
            if not ci & set(data.get("token_policies") or data.get("policies") or []):
                continue
            ttl, max_ttl = float(data.get("token_ttl") or 0), float(data.get("token_max_ttl") or 0)
            effective = max(ttl, max_ttl) or float("inf")  # 0 means "system default": not short
            target = f"auth/{mp}/role/{role}"
            if effective > limit:
                shown = "system default" if effective == float("inf") else f"{effective:.0f}s"
                out.append(
                    CheckResult("ci.token_ttl", target, FAIL, f"CI tokens live {shown}, over {limit:.0f}s")
                )
            else:
                out.append(
                    CheckResult("ci.token_ttl", target, PASS, f"CI tokens live at most {effective:.0f}s")
                )
    return out


def run_checks(vc: VaultClient, cfg: CheckSpec, *, now: datetime | None = None) -> list[CheckResult]:
    """Run every check; never raises for a failed check, only for an unusable spec."""
    now = now or datetime.now(UTC)
    mount = cfg.get("kv_mount", "logos")
    results: list[CheckResult] = []
    for spec in cfg.get("secret", []):
        if "path" not in spec:
            raise ValueError("every [[secret]] in the check spec needs a path")
        results.extend(_check_secret(vc, mount, spec, cfg, now))
    results.extend(_check_audit(vc, cfg))
    results.extend(_check_policies(vc, cfg))
    return results
