"""The embedded demo stack: the whole streaming system on one machine, with nothing to set up.

Long because it starts, wires and stops every real part of the demo (OpenBao, broker, shipper,
worker, API, traffic) in the order their lifecycles need.

::

    OpenBao dev server ──socket audit device──▶ SocketSource ─▶ Shipper ─▶ Kafka-protocol broker
          │ (file audit device too, for the record)                          │ topic, keyed by identity
          ▼                                                                   ▼
    realistic traffic (vaultwatch.demo.traffic)                      Worker: detect ─▶ SQLite alert store
                                                                                   ▲
                                                              API / web UI ────────┘

Every part is the real one: a real ``bao`` server, the real Tansu broker speaking the Kafka
protocol, the shipper and pipeline worker of ``vaultwatch ship`` / ``vaultwatch run`` in threads
of this process, and the API served by uvicorn. :class:`DemoStack` starts and stops them in the
right order (the socket listener before OpenBao, which refuses to start when its socket audit
device cannot connect; OpenBao before the listener on the way down).

:class:`DemoTraffic` gives :class:`vaultwatch.demo.traffic.Traffic`'s organisation a past: its
setup and a week or so of its ordinary work run against the demo's own OpenBao as fast as it
answers, and the file audit device's entries are moved onto the past days (a slow exfiltration
among them). The shipper drops the socket device's real-clock copy of those entries and ships the
rewritten history first (:class:`_HistoryFirst`), so the worker learns its baselines before any
live entry arrives. Then live traffic runs on the real clock, at night in the organisation's
time, with attacks one by one. Its progress (setup, history, live) is readable from another
thread, for the demo's progress bar.

The history is generated afresh on each run, not cached: identities are keyed by the entity ids
of the server that wrote them, and the dev server starts empty each time, so another run's
history would describe identities this server does not have. One instance per service keeps it
small (about 1,500 requests for eight days).

OpenBao gets its root token in its environment (:class:`~vaultwatch.demo.servers.OpenBaoServer`),
never on its command line, and vaultwatch's API talks to it with a token of its own (exposure queries,
identity names). The API has a UI login (admin), an analyst key and a viewer key.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
import os
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Final, NamedTuple

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ingest.sources.base import RawRecord

from ..api.app import create_app
from ..api.auth import AuthConfig, hash_password
from .servers import AuditDevice, KafkaBroker, OpenBaoServer, ServerError, free_port
from .traffic import APPS, BENIGN, DAY, HOUR, SETUP, Call, GeneratedLog, Traffic, forwarding_listener

__all__ = [
    "DEMO_ATTACKS",
    "DemoLogin",
    "DemoStack",
    "DemoStopped",
    "DemoTraffic",
    "TrafficProgress",
    "port_free",
]

log = logging.getLogger(__name__)

#: The attacks of the demo: the slow harvest happens in the history (it takes days); the others
#: run live, in this order, while the demo is watched.
DEMO_ATTACKS: Final = (
    "slow-harvest",
    "developer-reads-runtime",
    "stolen-ci-credential",
    "brute-force",
    "root-token-use",
)
HISTORY_ATTACKS: Final = frozenset({"slow-harvest"})
TOPIC: Final = "vault-audit"
#: What the demo's vaultwatch may do in OpenBao: exposure queries (audit HMACs of a token, the
#: audit devices), identity names, and KV metadata (when a secret was last rotated).
VAULTWATCH_POLICY: Final = (
    'path "sys/audit-hash/*" { capabilities = ["update"] }\n'
    'path "sys/audit" { capabilities = ["read", "sudo"] }\n'
    'path "identity/*" { capabilities = ["read", "list"] }\n'
    'path "+/metadata/*" { capabilities = ["read", "list"] }\n'
)
#: The organisation's clock is set so that the live traffic happens at this hour of its night.
LIVE_HOUR: Final = 2.5


class DemoStopped(Exception):
    """Raised inside the traffic when the demo is asked to stop."""


# -- traffic ------------------------------------------------------------------------------------
@dataclass
class TrafficProgress:
    """What the traffic thread has done so far; read from the display thread."""

    phase: str = "waiting"  # waiting | setup | history | live | done | failed | stopped
    requests: int = 0
    sim_days: float = 0.0
    history_days: float = 0.0
    error: str | None = None
    attacks_started: list[str] = field(default_factory=list)

    @property
    def history_fraction(self) -> float:
        """0..1 through the history, in simulated time."""
        if self.history_days <= 0:
            return 1.0
        return max(0.0, min(1.0, self.sim_days / self.history_days))


class DemoTraffic(Traffic):
    """The traffic generator's organisation with a past, then live on the real clock.

    :meth:`play` sets the organisation up, drives ``history_days`` simulated days of its ordinary
    work (and the slow harvest) as fast as the server answers, and rewrites those audit entries
    onto the past (:meth:`Traffic.rewrite`): the history ends a few hours before now, and the
    organisation's clock is set so that *now* is ``LIVE_HOUR`` at night for it. ``on_history``
    receives the rewritten history; the demo ships it before anything live, so the baselines
    are learned. Then a few minutes of live traffic run on the real clock (the server's own
    times, nothing rewritten): the services keep working, and the attacks come one by one.
    One service instance per application keeps the history small and quick to generate.
    """

    def __init__(
        self,
        url: str,
        root_token: str,
        audit_log: str | Path,
        *,
        history_days: int = 8,
        seed: int = 0,
        stop: threading.Event | None = None,
        progress: TrafficProgress | None = None,
        now: float | None = None,
    ) -> None:
        now = time.time() if now is None else now
        start = datetime.fromtimestamp(now - history_days * DAY - LIVE_HOUR * HOUR, UTC)
        super().__init__(url, root_token, audit_log, seed=seed, start=start)
        self.history_days = history_days
        self._stop_event = stop or threading.Event()
        self.progress = progress or TrafficProgress()
        self._live = False
        self._history: GeneratedLog | None = None
        self._first_live = 0

    @property
    def stopping(self) -> bool:
        """True once the demo was asked to stop."""
        return self._stop_event.is_set()

    @property
    def passwords(self) -> dict[str, str]:
        """The userpass passwords the organisation was given (for ``--keep``'s credentials file)."""
        return dict(self._passwords)

    def _build_actors(self) -> None:
        super()._build_actors()
        for name, instances in self._instances.items():
            self._instances[name] = instances[:1]

    def call(
        self,
        actor: Any,
        fn: Callable[[Any], Any],
        *,
        gap: tuple[float, float] = (0.4, 4.0),
        anonymous: bool = False,
    ) -> Any:
        """One real request (see :meth:`Traffic.call`); raises :class:`DemoStopped` when asked to stop."""
        if self._stop_event.is_set():
            raise DemoStopped
        result = super().call(actor, fn, gap=gap, anonymous=anonymous)
        self._record(self.calls[-1])
        return result

    def _record(self, call: Call) -> None:
        p = self.progress
        p.requests += 1
        if not self._live:
            p.sim_days = max(0.0, (call.ts - self.t0) / DAY)
        if call.label not in ("benign", "setup") and call.label not in p.attacks_started:
            p.attacks_started.append(call.label)

    def play(
        self,
        live_seconds: float = 90.0,
        attacks: Sequence[str] = DEMO_ATTACKS,
        *,
        on_setup: Callable[[], None] | None = None,
        on_history: Callable[[GeneratedLog], None] | None = None,
    ) -> int:
        """Set up the organisation (then ``on_setup``), drive and rewrite its history (then
        ``on_history``), then run ``live_seconds`` of live traffic with the live ``attacks``;
        returns the number of requests."""
        p = self.progress
        p.history_days = float(self.history_days)
        p.phase = "setup"
        self.setup()
        if on_setup is not None:
            on_setup()
        p.phase = "history"
        self.plan_benign(self.history_days)
        if "slow-harvest" in attacks:
            # One new secret an hour for 40 hours, ending the evening before the live traffic.
            self.plan_attack_at("slow-harvest", self.t0 + (self.history_days - 2) * DAY + 0.5 * HOUR)
        self.run()
        history = self.rewrite(self.workdir_file("history.log"))
        self._history = history
        if on_history is not None:
            on_history(history)
        p.phase = "live"
        self._live = True
        self._first_live = len(self.calls)
        self._plan_live(live_seconds, [k for k in attacks if k not in HISTORY_ATTACKS])
        self._run_live()
        p.phase = "done"
        return len(self.calls)

    def ground_truth(self) -> GeneratedLog | None:
        """What the organisation and its attacks did so far, to judge the demo's alerts by.

        The rewritten history's labels, plus those of the live requests made so far (read
        from the audit log by :meth:`Traffic.request_labels`, so a refused login counts too),
        and each attack's request ids in log order. None until the history is rewritten. Safe
        to call while the live traffic runs.
        """
        history = self._history
        if history is None:
            return None
        live = self.request_labels(self._first_live)
        order: dict[str, list[str]] = {}
        for rid, label in live.items():  # in the log's order
            if label not in (BENIGN, SETUP):
                order.setdefault(label, []).append(rid)
        scenarios = {
            kind: replace(sc, request_ids=sc.request_ids or tuple(order.get(kind, ())))
            for kind, sc in dict(self.scenarios).items()
        }
        return replace(history, labels={**history.labels, **live}, scenarios=scenarios)

    def workdir_file(self, name: str) -> Path:
        """A file beside the server's audit log."""
        assert self.audit_log is not None
        return self.audit_log.parent / name

    def _plan_live(self, seconds: float, attacks: Sequence[str]) -> None:
        t = time.time()
        self._at(t)
        # At night the services keep refreshing; nobody else works.
        for app in APPS:
            for inst in self._instances[app.name]:
                at = t + 1.0 + self.rng.uniform(0, 10)
                while at < t + seconds:
                    self._schedule(at, BENIGN, partial(self._service_refresh, app, inst))
                    at += 20.0 + self.rng.uniform(-3, 3)
        # The attacks come one by one, so the live table shows each as it is detected.
        span = max(seconds - 20.0, 10.0)
        for i, kind in enumerate(attacks):
            self.plan_attack_at(kind, t + 8.0 + i * span / max(len(attacks), 1))

    def _run_live(self) -> None:
        """Run the plan on the real clock: each action when its time comes."""
        plan = self._plan
        heapq.heapify(plan)
        while plan:
            item = heapq.heappop(plan)
            delay = item.ts - time.time()
            if delay > 0 and self._stop_event.wait(delay):
                raise DemoStopped
            self._now = time.time()
            self._label = item.label
            item.run()
        self._label = BENIGN

    def _attack_stolen_ci_credential(self) -> None:
        """A CI pipeline's AppRole credentials, stolen, used at night from a network the
        organisation never used: its usual build secrets, then a look around."""
        app = APPS[0]
        thief = self._attacker(f"ci-{app.name}", "203.0.113.45", self._approle_login(f"ci-{app.name}"))
        if self.ensure_login(thief):
            for sec in app.build:
                self.read(thief, f"{app.name}/build/{sec}")
            self.list(thief, f"{app.name}/")
            for sec in app.runtime[:2]:
                self.read(thief, f"{app.name}/runtime/{sec}")


# -- the API ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DemoLogin:
    """The demo's own API credentials: a UI user (role admin), an API key with role analyst
    (may acknowledge, resolve and annotate alerts) and one with role viewer (read only)."""

    user: str
    password: str = field(repr=False)
    api_key: str = field(repr=False)
    viewer_key: str = field(repr=False)

    def as_dict(self) -> dict[str, Any]:
        """The ``credentials.json`` entries, each credential with its role."""
        return {
            "ui_login": {"username": self.user, "password": self.password, "role": "admin"},
            "api_key": self.api_key,
            "api_keys": {
                "analyst": {"key": self.api_key, "role": "analyst", "header": "X-API-Key"},
                "viewer": {"key": self.viewer_key, "role": "viewer", "header": "X-API-Key"},
            },
        }


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def _demo_auth(workdir: Path) -> tuple[AuthConfig, DemoLogin]:
    """An API auth configuration with a fresh demo user and API keys, hashes only on disk."""
    login = DemoLogin(
        user="demo",
        password=secrets.token_urlsafe(12),
        api_key=f"demo-analyst.{secrets.token_urlsafe(24)}",
        viewer_key=f"demo-viewer.{secrets.token_urlsafe(24)}",
    )
    users, keys = workdir / "api-users.toml", workdir / "api-keys.toml"
    _write_private(
        users,
        f'[[users]]\nname = "{login.user}"\npassword_hash = "{hash_password(login.password)}"\n'
        'role = "admin"\n',
    )
    entries = []
    for key_id, key, role in (
        ("demo-analyst", login.api_key, "analyst"),
        ("demo-viewer", login.viewer_key, "viewer"),
    ):
        digest = hashlib.sha256(key.encode()).hexdigest()
        entries.append(f'[[keys]]\nid = "{key_id}"\nhash = "sha256:{digest}"\nrole = "{role}"\n')
    _write_private(keys, "\n".join(entries))
    jwt_key = _jwt_key(workdir / "api-jwt.pem")
    # Plain http on loopback: a Secure cookie would never come back from the browser.
    cfg = AuthConfig(users_file=users, api_keys_file=keys, jwt_key_file=jwt_key, cookie_secure=False)
    return cfg, login


def _jwt_key(path: Path) -> Path:
    """A fresh Ed25519 signing key for the API's tokens."""
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_private(path, pem.decode())
    return path


def _answers(url: str, timeout: float = 5.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback http
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def port_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be bound now (racy by nature, like :func:`free_port`)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


class _HistoryPos(NamedTuple):
    """Where a history record is (its line in the rewritten history): nothing to commit."""

    line: int
    too_large: int = 0


class _HistoryFirst:
    """The socket source behind a gate: the rewritten history first, then the live entries.

    While the history is generated, OpenBao's socket device streams it on the real clock; those
    lines are dropped here (and committed). :meth:`feed` hands over the same entries rewritten
    onto the past, and the number of socket lines they account for; the shipper then gets the
    history, and after it every socket line past that number. The history's records are not
    the socket's to commit.
    """

    name = "socket"

    def __init__(self, live: Any) -> None:
        self.live = live
        self.name = live.name
        self._lock = threading.Lock()
        self._history: list[bytes] | None = None
        self._skip: int | None = None
        self._seen = 0
        self.dropped = 0
        self.history_lines = 0

    def feed(self, history: Path, socket_lines: int) -> None:
        """Ship ``history``'s lines next; drop the first ``socket_lines`` socket lines."""
        lines = [ln for ln in history.read_bytes().splitlines() if ln.strip()]
        with self._lock:
            self._history = lines
            self._skip = socket_lines
            self.history_lines = len(lines)

    def batches(self, max_records: int = 1000, timeout: float = 1.0) -> Iterator[list[RawRecord]]:
        for batch in self.live.batches(max_records=max_records, timeout=timeout):
            with self._lock:
                history, self._history = self._history, None
                skip = self._skip
            if history:
                for i in range(0, len(history), max_records):
                    chunk = history[i : i + max_records]
                    yield [RawRecord(line, _HistoryPos(i + n), self.name) for n, line in enumerate(chunk)]
            keep: list[RawRecord] = []
            for rec in batch:
                self._seen += 1
                if skip is None or self._seen <= skip:
                    self.dropped += 1
                else:
                    keep.append(rec)
            if batch and not keep:
                self.live.commit(batch[-1])
            yield keep

    def commit(self, record: RawRecord) -> None:
        if not isinstance(record.position, _HistoryPos):
            self.live.commit(record)

    def close(self) -> None:
        self.live.close()


# -- the stack ----------------------------------------------------------------------------------
class DemoStack:
    """OpenBao + socket listener + shipper + broker + worker + API, started and stopped together.

    ``workdir`` holds everything (server files, spool, SQLite store, archive). ``api_port`` None
    tries 8080, then any free port. ``partitions`` is the topic's partition count.
    """

    def __init__(
        self,
        workdir: str | Path,
        *,
        partitions: int = 1,
        api_host: str = "127.0.0.1",
        api_port: int | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.partitions = partitions
        self.api_host = api_host
        self.api_port = api_port
        # A fresh root token per run: the demo's server is reachable by anything on this machine.
        self.root_token = secrets.token_urlsafe(24)
        self.topic = TOPIC
        self.bao: OpenBaoServer | None = None
        self.broker: KafkaBroker | None = None
        self.traffic_url = ""
        #: The file audit device's log (the traffic rewrites its history from it).
        self.audit_log = self.workdir / "openbao" / "audit.log"
        self.ui_url = ""
        self.api_kind = "full"  # always the real API (vaultwatch.api); shown by `vaultwatch demo --json`
        self.settings: Any = None
        self.store: Any = None
        self.worker: Any = None
        self.shipper: Any = None
        self._socket: Any = None
        self._gate: _HistoryFirst | None = None
        self._producer: Any = None
        self._quarantine: Any = None
        self._api: Any = None
        self._api_store: Any = None
        self._vault: Any = None
        self._threads: list[threading.Thread] = []
        self.errors: list[str] = []
        self.login: DemoLogin | None = None
        self.credentials_path = self.workdir / "credentials.json"
        self._passwords: dict[str, str] = {}
        self._stopped = False

    def __repr__(self) -> str:  # the root token never shows
        return f"DemoStack(workdir={str(self.workdir)!r}, ui={self.ui_url!r})"

    # -- start ---------------------------------------------------------------------------------
    def start(self, step: Callable[[str], None] = lambda _msg: None) -> DemoStack:
        """Start every part, in order; on failure stop what was started and re-raise."""
        try:
            self._start(step)
        except BaseException:
            self.stop(drain=False)
            raise
        return self

    def _start(self, step: Callable[[str], None]) -> None:
        from ingest.sources.socket import SocketSource

        self.workdir.mkdir(parents=True, exist_ok=True)
        step("listening as OpenBao's socket audit device")
        self._socket = SocketSource("127.0.0.1:0", spool_dir=self.workdir / "spool").start()
        step("starting a real OpenBao dev server (file + socket audit devices)")
        bao_dir = self.workdir / "openbao"
        devices = [
            AuditDevice("file", "file", {"file_path": str(self.audit_log)}),
            AuditDevice("socket", "vaultwatch", {"address": self._socket.address, "socket_type": "tcp"}),
        ]
        fwd = free_port()
        self.bao = OpenBaoServer(
            bao_dir, devices=devices, root_token=self.root_token, extra_config=forwarding_listener(fwd)
        ).start()
        self.traffic_url = f"http://127.0.0.1:{fwd}"
        step("starting the Kafka-protocol broker")
        self.broker = KafkaBroker().start()
        self._create_topic()
        step("starting the shipper, the pipeline worker and the API")
        self.settings = self._settings()
        self._start_shipper()
        self._start_worker()
        self._start_api()

    def _settings(self) -> Any:
        from ..settings import ApiConfig, ArchiveConfig, KafkaConfig, Settings, StoreConfig

        assert self.broker is not None
        return Settings(
            kafka=KafkaConfig(
                bootstrap=self.broker.bootstrap,
                topic=self.topic,
                group_id="vaultwatch-demo",
                max_poll_records=500,
            ),
            store=StoreConfig(url=f"sqlite:///{(self.workdir / 'vaultwatch.db').resolve()}"),
            archive=ArchiveConfig(enabled=True, path=self.workdir / "archive", flush_interval_s=10.0),
            api=ApiConfig(host=self.api_host, port=self.api_port or 8080),
        )

    def _create_topic(self) -> None:
        from ingest.kafka_config import import_kafka

        assert self.broker is not None
        import_kafka()
        from kafka.admin import KafkaAdminClient, NewTopic

        admin = KafkaAdminClient(bootstrap_servers=[self.broker.bootstrap], client_id="vaultwatch-demo")
        try:
            admin.create_topics([NewTopic(self.topic, num_partitions=self.partitions, replication_factor=1)])
        finally:
            admin.close()

    def _start_shipper(self) -> None:
        from ingest.kafka_config import ProducerSettings, import_kafka, producer_config
        from ingest.quarantine import FileQuarantine
        from ingest.ship import Shipper

        ks = self.settings.kafka.client_settings()
        self._producer = import_kafka().KafkaProducer(**producer_config(ks, ProducerSettings(linger_ms=5)))
        self._quarantine = FileQuarantine(self.workdir / "quarantine.jsonl")
        self._gate = _HistoryFirst(self._socket)
        self.shipper = Shipper(
            self._gate,
            self._producer,
            self.topic,
            quarantine=self._quarantine,
            max_batch=500,
            poll_timeout=0.2,
        )
        self._spawn("shipper", self.shipper.run)

    def _start_worker(self) -> None:
        from ..service.wiring import build_worker, open_store, run_both

        self.store = open_store(self.settings)
        self.worker = build_worker(self.settings, store=self.store, checkpoint_interval=2.0)
        worker = self.worker
        # Both stages, as `vaultwatch run` runs them: the cross-identity detectors (the access
        # model, sensitive first access, spraying...) are stage 2's.
        self._spawn("worker", lambda: run_both(worker))

    def _start_api(self) -> None:
        from ..service.ops import BackgroundServer
        from ..service.wiring import open_store

        port = self.api_port
        if port is None:
            port = 8080 if port_free(self.api_host, 8080) else free_port()
        elif port == 0:
            port = free_port()
        elif not port_free(self.api_host, port):
            raise ServerError(
                f"port {port} on {self.api_host} is in use: "
                "pass --port with another port, or --port 0 for any free one"
            )
        # Its own connection pool: the API reads while the worker writes (SQLite WAL).
        self._api_store = open_store(self.settings)
        auth, self.login = _demo_auth(self.workdir)
        self._vault = self._vault_client()
        app = create_app(self.settings, store=self._api_store, auth=auth, vault_client=self._vault)
        self._api = BackgroundServer(app, self.api_host, port).start()
        if not _answers(f"http://{self.api_host}:{port}/healthz"):
            raise ServerError(f"the API did not answer /healthz on {self.api_host}:{port}")
        self.ui_url = f"http://{self.api_host}:{port}/"
        self.write_credentials()

    def _vault_client(self) -> Any:
        """An hvac client for the API (exposure queries, identity names) with its own token.

        Not the root token: vaultwatch gets what it needs (audit HMACs, audit devices, identity
        and KV metadata reads) under a policy of its own, as in a real deployment.
        """
        import hvac

        assert self.bao is not None
        root = self.bao.client()
        root.sys.create_or_update_acl_policy("vaultwatch", VAULTWATCH_POLICY)
        resp = root.auth.token.create(policies=["vaultwatch"], ttl="24h", display_name="vaultwatch")
        root.adapter.close()
        return hvac.Client(url=self.bao.addr, token=resp["auth"]["client_token"])

    def _spawn(self, name: str, target: Callable[[], Any]) -> None:
        def body() -> None:
            try:
                target()
            except Exception as exc:  # noqa: BLE001 - reported by the demo, not a traceback
                log.error("demo %s stopped: %s: %s", name, type(exc).__name__, exc)
                self.errors.append(f"{name}: {type(exc).__name__}: {exc}")

        t = threading.Thread(target=body, name=f"vaultwatch-demo-{name}", daemon=True)
        t.start()
        self._threads.append(t)

    # -- while running -------------------------------------------------------------------------
    def alerts(self, limit: int = 500) -> list[Any]:
        """The stored alerts, oldest first."""
        from alerts.store import AlertQuery

        store = self._api_store or self.store
        if store is None:
            return []
        page = store.list_alerts(AlertQuery(limit=limit, sort="first_seen", descending=False))
        return list(page.items)

    def counters(self) -> dict[str, int]:
        """Lines received on the socket, shipped to the topic, and consumed by the worker."""
        received = self._socket.stats().received if self._socket is not None else 0
        if self._gate is not None:  # the history replaces what the socket streamed of it
            received += self._gate.history_lines - self._gate.dropped
        s = self.shipper.stats if self.shipper is not None else None
        w = self.worker.stats if self.worker is not None else {}
        return {
            "received": received,
            "shipped": s.shipped if s is not None else 0,
            "handled": (s.lines if s is not None else 0),
            "consumed": int(w.get("records", 0)),
            "events": int(w.get("events", 0)),
        }

    def feed_history(self, history: GeneratedLog) -> None:
        """Ship the organisation's rewritten history before any live entry (see :class:`DemoTraffic`)."""
        if self._gate is None:
            raise ServerError("the demo's shipper is not running")
        self._gate.feed(history.path, history.entries)

    def drained(self) -> bool:
        """Everything OpenBao sent has been shipped and consumed (at this instant)."""
        c = self.counters()
        cross = getattr(self.worker, "cross_worker", None)
        judged = cross is None or cross.pending() == 0  # stage 2 holds nothing back
        return c["handled"] >= c["received"] and c["consumed"] >= c["shipped"] and judged

    def wait_drained(self, timeout: float, stop: threading.Event | None = None) -> bool:
        """Wait until :meth:`drained` holds for a second in a row, or ``timeout``."""
        deadline = time.monotonic() + timeout
        steady_since: float | None = None
        stop = stop or threading.Event()
        while time.monotonic() < deadline and not stop.is_set():
            if self.drained():
                steady_since = steady_since or time.monotonic()
                if time.monotonic() - steady_since >= 1.0:
                    return True
            else:
                steady_since = None
            stop.wait(0.2)
        return self.drained()

    def write_credentials(self, passwords: dict[str, str] | None = None) -> Path:
        """Write every demo credential to ``credentials.json`` in the work dir (mode 0600).

        The demo prints this file's path, never its content: the OpenBao address and root
        token, the API's demo user and key, and (once known) the organisation's passwords.
        """
        if passwords is not None:
            self._passwords = dict(passwords)
        data: dict[str, Any] = {
            "openbao": {"addr": self.traffic_url, "root_token": self.root_token},
            "openbao_userpass": self._passwords,
            "ui": self.ui_url,
        }
        if self.login is not None:
            data.update(self.login.as_dict())
        _write_private(self.credentials_path, json.dumps(data, indent=2) + "\n")
        return self.credentials_path

    # -- stop ----------------------------------------------------------------------------------
    def stop_openbao(self) -> None:
        """Stop the OpenBao server (no more audit entries)."""
        if self.bao is not None:
            self.bao.stop()

    def stop(self, *, drain: bool = True, drain_timeout: float = 20.0) -> None:
        """Stop everything, the sources first; with ``drain``, let the pipeline finish first.

        Idempotent; safe after a failed :meth:`start`. Every step is bounded and a failing step
        (a broker that already died, say) does not keep the later ones from running, so no
        server process outlives the demo.
        """
        if self._stopped:
            return
        self._stopped = True
        _quietly("OpenBao", self.stop_openbao)
        if drain and self.shipper is not None and self.worker is not None:
            _quietly("pipeline drain", lambda: self.wait_drained(drain_timeout))
        if self.shipper is not None:
            self.shipper.stop()
        for t in self._threads:
            if t.name.endswith("shipper"):
                t.join(timeout=10)
        if self._producer is not None:
            _quietly("producer", lambda: self._producer.close(timeout=3))
        if self._socket is not None:
            _quietly("socket listener", self._socket.close)
        if self._quarantine is not None:
            _quietly("quarantine", self._quarantine.close)
        if self.worker is not None:
            _quietly("worker", self.worker.stop)
        for t in self._threads:
            t.join(timeout=15)
        self._threads = []
        dlq = getattr(self.worker, "dlq", None)
        if dlq is not None:
            _quietly("dead-letter queue", dlq.close)
        if self._api is not None:
            _quietly("API", self._api.stop)
        if self._vault is not None:
            _quietly("Vault client", self._vault.adapter.close)
        for store in (self._api_store, self.store):
            if store is not None:
                _quietly("store", store.close)
        if self.broker is not None:
            _quietly("broker", self.broker.stop)
        if self.bao is not None:
            _quietly("OpenBao", self.bao.cleanup)


def _quietly(what: str, step: Callable[[], Any]) -> None:
    try:
        step()
    except Exception as exc:  # noqa: BLE001 - shutting down: report and carry on
        log.warning("stopping the demo's %s: %s", what, type(exc).__name__)
