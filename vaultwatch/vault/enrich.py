"""Identity enrichment: entity ids become names, aliases, metadata and groups.

Audit entries name an entity only by its UUID. The enricher asks the identity API (through
:class:`~vaultwatch.vault.client.VaultClient`) and caches the answer with a TTL, so alerts and the UI show
``alice (userpass)`` rather than a UUID, and peer groups can use Vault groups.

Detection never waits for it: :meth:`IdentityEnricher.get` answers from the cache at once and
queues a background look-up for a miss or a stale entry. When the Vault API is unreachable the
enricher keeps serving what it has (stale entries included), backs off, and says so in
``stats``. Results can be persisted through a small :class:`EnrichmentStore` so a restart starts
warm.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from .client import VaultClientError

__all__ = ["EntityInfo", "IdentityEnricher", "EnrichmentStore", "MemoryEnrichmentStore"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EntityInfo:
    entity_id: str
    name: str | None
    aliases: tuple[dict[str, str], ...] = ()  # {"name", "mount_path", "mount_type"}
    groups: tuple[str, ...] = ()  # group names
    policies: tuple[str, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)
    disabled: bool = False
    fetched_at: float = 0.0
    found: bool = True  # False: the entity does not exist (deleted)

    @property
    def label(self) -> str:
        """What a human reads: ``name (mount_type)`` or the id."""
        if not self.name:
            return self.entity_id
        kinds = sorted({a.get("mount_type", "") for a in self.aliases if a.get("mount_type")})
        return f"{self.name} ({', '.join(kinds)})" if kinds else self.name

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["label"] = self.label
        return d


class EnrichmentStore(Protocol):
    def load_entities(self) -> list[EntityInfo]: ...

    def save_entity(self, info: EntityInfo) -> None: ...


class MemoryEnrichmentStore:
    def __init__(self) -> None:
        self.items: dict[str, EntityInfo] = {}

    def load_entities(self) -> list[EntityInfo]:
        return list(self.items.values())

    def save_entity(self, info: EntityInfo) -> None:
        self.items[info.entity_id] = info


class IdentityEnricher:
    """Cache of entity details with TTL, filled in the background.

    ``lookup`` is the blocking fetch (``vault -> EntityInfo``); by default it uses the identity
    API through the given client. ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        vault: Any,
        *,
        ttl: float = 3600.0,
        store: EnrichmentStore | None = None,
        clock: Callable[[], float] = time.time,
        max_queue: int = 10_000,
        backoff: tuple[float, float] = (1.0, 60.0),
    ) -> None:
        self.vault = vault
        self.ttl = ttl
        self.store = store
        self._clock = clock
        self._cache: dict[str, EntityInfo] = {}
        self._groups: dict[str, str] = {}
        self._queue: queue.Queue[str] = queue.Queue(maxsize=max_queue)
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._backoff_min, self._backoff_max = backoff
        self.stats = {"hits": 0, "misses": 0, "fetched": 0, "errors": 0, "dropped": 0, "unreachable": 0}
        if store is not None:
            for info in store.load_entities():
                self._cache[info.entity_id] = info

    # -- non-blocking read path -----------------------------------------------------------------
    def get(self, entity_id: str) -> EntityInfo | None:
        """Cached details (possibly stale) at once; schedules a refresh when missing or stale."""
        info = self._cache.get(entity_id)
        if info is not None and self._clock() - info.fetched_at < self.ttl:
            self.stats["hits"] += 1
            return info
        self.stats["misses"] += 1
        self._schedule(entity_id)
        return info

    def _schedule(self, entity_id: str) -> None:
        with self._lock:
            if entity_id in self._pending:
                return
            try:
                self._queue.put_nowait(entity_id)
            except queue.Full:
                self.stats["dropped"] += 1
                return
            self._pending.add(entity_id)

    # -- background fetching --------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="identity-enricher", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def drain(self, timeout: float = 10.0) -> None:
        """Wait until queued look-ups are done (tests, one-shot commands)."""
        deadline = time.monotonic() + timeout
        while self._pending and time.monotonic() < deadline:
            time.sleep(0.02)

    def _run(self) -> None:
        delay = self._backoff_min
        while not self._stop.is_set():
            try:
                entity_id = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self.refresh(entity_id)
                delay = self._backoff_min
            except Exception as exc:  # noqa: BLE001 - enrichment must never take the service down
                self.stats["errors"] += 1
                unreachable = isinstance(exc, OSError) or "unreachable" in str(exc)
                if unreachable:
                    self.stats["unreachable"] += 1
                log.warning("identity enrichment failed (%s); retrying in %.0fs", type(exc).__name__, delay)
                with self._lock:
                    self._pending.discard(entity_id)
                if self._stop.wait(delay):
                    return
                delay = min(self._backoff_max, delay * 2)
                continue
            with self._lock:
                self._pending.discard(entity_id)

    def refresh(self, entity_id: str) -> EntityInfo:
        """Fetch one entity now (blocking) and cache it."""
        info = self._fetch(entity_id)
        self._cache[entity_id] = info
        self.stats["fetched"] += 1
        if self.store is not None:
            self.store.save_entity(info)
        return info

    def _fetch(self, entity_id: str) -> EntityInfo:
        hv = self.vault.hvac
        try:
            data = self.vault.call(hv.secrets.identity.read_entity, entity_id=entity_id)["data"]
        except VaultClientError as exc:
            if "InvalidPath" in str(exc):
                return EntityInfo(entity_id=entity_id, name=None, fetched_at=self._clock(), found=False)
            raise
        aliases = tuple(
            {
                "name": str(a.get("name", "")),
                "mount_path": str(a.get("mount_path", "")),
                "mount_type": str(a.get("mount_type", "")),
            }
            for a in data.get("aliases") or []
        )
        groups = tuple(sorted(self._group_name(g) for g in (data.get("group_ids") or [])))
        return EntityInfo(
            entity_id=entity_id,
            name=data.get("name"),
            aliases=aliases,
            groups=groups,
            policies=tuple(data.get("policies") or ()),
            metadata={str(k): str(v) for k, v in (data.get("metadata") or {}).items()},
            disabled=bool(data.get("disabled")),
            fetched_at=self._clock(),
        )

    def _group_name(self, group_id: str) -> str:
        name = self._groups.get(group_id)
        if name is None:
            try:
                resp = self.vault.call(self.vault.hvac.secrets.identity.read_group, group_id=group_id)
                name = str(resp["data"].get("name") or group_id)
            except Exception:  # noqa: BLE001 - a group we cannot read is shown by id
                name = group_id
            self._groups[group_id] = name
        return name
