"""Rotation compliance from KV v2 metadata, read periodically through the Vault API.

The audit stream shows writes as they happen (the detection engine's ``rotation-overdue``
tracker); the metadata shows the truth even for writes vaultwatch never saw: the current
version's ``created_time``. This monitor walks the secrets that the access policy's rotation
classes cover (JWT keys daily, API keys weekly, TLS monthly, DB credentials on deploy, by
default), computes each one's age, and raises ``rotation-overdue`` alerts that name both the
metadata age and the last write seen in the audit stream. Ages are exported as gauges.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import Any

from detect.alert import Alert, Reason
from detect.engine import Engine
from detect.policy import AccessPolicy, RotationClass, default_policy
from detect.types import Finding
from ingest.event import Identity

from .client import VaultClientError

__all__ = ["SecretAge", "RotationMonitor", "human"]

log = logging.getLogger(__name__)
_GLOB = re.compile(r"[*?\[]")
DETECTOR = "rotation-overdue"


def human(seconds: float) -> str:
    """``3d 4h``, ``5h 10m``, ``42s``."""
    s = int(max(0, seconds))
    d, rem = divmod(s, 86400)
    h, rem = divmod(rem, 3600)
    m, sec = divmod(rem, 60)
    if d:
        return f"{d}d {h}h"
    if h:
        return f"{h}h {m}m"
    return f"{m}m {sec}s" if m else f"{sec}s"


def _ts(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class SecretAge:
    path: str  # logical path: <mount>/<secret path>
    rotation_class: str
    age_seconds: float
    limit_seconds: float | None  # None for on-deploy classes
    last_rotated: float  # created_time of the current version
    current_version: int
    overdue: bool
    reason: str


class RotationMonitor:
    """Reads KV v2 metadata for every secret a rotation class covers and judges its age.

    ``last_deploy`` returns the time of the last deploy (for on-deploy classes, e.g. DB
    credentials); ``last_stream_write(path)`` the last write the audit stream showed for a
    secret, so an alert can name both. Overdue secrets become findings that ``engine`` turns into
    alerts (:meth:`detect.engine.Engine.external`), so the engine's suppressions, aggregation
    and alert ids apply to them as to every other detector; by default the monitor keeps its own
    rules-free engine.
    """

    def __init__(
        self,
        vault: Any,
        policy: AccessPolicy | None = None,
        *,
        last_deploy: Callable[[], float | None] = lambda: None,
        last_stream_write: Callable[[str], float | None] = lambda path: None,
        engine: Engine | None = None,
    ) -> None:
        self.vault = vault
        self.policy = policy or default_policy()
        self.last_deploy = last_deploy
        self.last_stream_write = last_stream_write
        self._alerted: dict[str, float] = {}  # path -> deadline already alerted
        self.engine = engine or Engine({"behaviour_enabled": False, "model_enabled": False}, detectors=[])

    def _secrets(self, cls: RotationClass) -> Iterator[str]:
        """Logical paths of existing secrets covered by ``cls`` (listing only the glob's base)."""
        for glob in cls.paths:
            m = _GLOB.search(glob)
            literal = glob[: m.start()] if m else glob
            mount, _, rest = literal.partition("/")
            base = rest.rsplit("/", 1)[0] + "/" if "/" in rest else ""
            for sub in self._walk(mount, base):
                full = f"{mount}/{sub}"
                if fnmatchcase(full, glob):
                    yield full

    def _walk(self, mount: str, folder: str) -> Iterator[str]:
        try:
            keys = self.vault.call(self.vault.hvac.secrets.kv.v2.list_secrets, path=folder, mount_point=mount)
        except VaultClientError:
            return  # nothing there (404) or not listable
        for key in keys["data"]["keys"]:
            if key.endswith("/"):
                yield from self._walk(mount, folder + key)
            else:
                yield folder + key

    def scan(self, now: float) -> list[SecretAge]:
        """The age of every covered secret at ``now`` (POSIX seconds)."""
        out: list[SecretAge] = []
        deploy = self.last_deploy()
        for cls in self.policy.rotation:
            for path in sorted(set(self._secrets(cls))):
                mount, _, sub = path.partition("/")
                meta = self.vault.call(
                    self.vault.hvac.secrets.kv.v2.read_secret_metadata, path=sub, mount_point=mount
                )["data"]
                current = int(meta.get("current_version") or 0)
                version = (meta.get("versions") or {}).get(str(current)) or {}
                created = _ts(version.get("created_time")) or _ts(meta.get("updated_time")) or now
                age = now - created
                if cls.every is not None:
                    overdue = age > cls.every
                    why = f"current version is {human(age)} old; rotate every {human(cls.every)}"
                else:
                    overdue = deploy is not None and now > deploy + cls.within and created < deploy
                    why = (
                        f"not rotated since the deploy at {_iso(deploy)} (due within {human(cls.within)})"
                        if deploy is not None
                        else "rotates on deploy; no deploy seen yet"
                    )
                out.append(SecretAge(path, cls.name, age, cls.every, created, current, overdue, why))
        return out

    def alerts(self, now: float, ages: list[SecretAge] | None = None) -> list[Alert]:
        """``rotation-overdue`` alerts for overdue secrets, once per secret and deadline."""
        out: list[Alert] = []
        for a in ages if ages is not None else self.scan(now):
            if not a.overdue:
                self._alerted.pop(a.path, None)
                continue
            deadline = a.last_rotated + (a.limit_seconds or 0)
            if self._alerted.get(a.path) == deadline:
                continue
            self._alerted[a.path] = deadline
            seen = self.last_stream_write(a.path)
            dedup = f"{DETECTOR}:{a.path}:{int(a.last_rotated)}"
            reasons = (
                Reason(
                    "metadata age",
                    human(a.age_seconds),
                    f"rotate every {human(a.limit_seconds)}" if a.limit_seconds else "rotate on deploy",
                    1.0,
                ),
                Reason(
                    "last write in the audit stream",
                    _iso(seen) if seen else "none seen",
                    f"current version {a.current_version} created {_iso(a.last_rotated)}",
                    0.5,
                ),
            )
            finding = Finding(
                detector=DETECTOR,
                title=f"{a.path} is overdue for rotation ({a.rotation_class}): {a.reason}",
                severity="medium",
                score=60,
                family="rotation",
                identity=Identity(key=f"secret:{a.path}", kind="secret"),
                dedup_key=dedup,
                paths=(a.path,),
                first_ts=now,
                last_ts=now,
                reasons=reasons,
                labels={"rotation_class": a.rotation_class, "source": "kv-metadata"},
            )
            # The metadata version is the evidence: the same overdue version keeps its alert id.
            out.extend(self.engine.external(finding, now, evidence=f"metadata:{a.current_version}"))
        return out
