"""The embedded demo stack: the whole streaming system on one machine, with nothing to set up.

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

:class:`DemoTraffic` drives :class:`vaultwatch.demo.traffic.Traffic`'s organisation on the real clock:
a few simulated days of services, CI pipelines, rotations and people, as fast as the server
answers, then a few attacks. Its progress (setup, warm-up, attacks) is readable from another
thread, for the demo's progress bar.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..api.app import create_app
from ..api.auth import AuthConfig, hash_password
from .servers import AuditDevice, KafkaBroker, OpenBaoServer, ServerError, free_port
from .traffic import DAY, Call, Traffic, forwarding_listener

__all__ = [
    "DEMO_ATTACKS",
    "DemoLogin",
    "DemoStack",
    "DemoStopped",
    "DemoTraffic",
    "TrafficProgress",
]

log = logging.getLogger(__name__)

#: The attacks the demo injects after its warm-up (kinds of :data:`vaultwatch.demo.traffic.ATTACK_KINDS`).
DEMO_ATTACKS: Final = ("developer-reads-runtime", "brute-force", "root-token-use")
TOPIC: Final = "vault-audit"


class DemoStopped(Exception):
    """Raised inside the traffic when the demo is asked to stop."""


# -- traffic ------------------------------------------------------------------------------------
@dataclass
class TrafficProgress:
    """What the traffic thread has done so far; read from the display thread."""

    phase: str = "waiting"  # waiting | setup | warm-up | attacks | done | failed | stopped
    requests: int = 0
    sim_days: float = 0.0
    warmup_days: float = 0.0
    error: str | None = None
    attacks_started: list[str] = field(default_factory=list)

    @property
    def warmup_fraction(self) -> float:
        """0..1 through the warm-up, in simulated time."""
        if self.warmup_days <= 0:
            return 1.0
        return max(0.0, min(1.0, self.sim_days / self.warmup_days))


class DemoTraffic(Traffic):
    """The traffic generator's organisation on the real clock, stoppable, reporting progress.

    Entries carry the server's own times (nothing is rewritten): the simulated clock only orders
    the plan, so ``days`` simulated days run in as long as the server takes to answer them.
    """

    def __init__(
        self,
        url: str,
        root_token: str,
        *,
        seed: int = 0,
        stop: threading.Event | None = None,
        progress: TrafficProgress | None = None,
        pace: float = 0.0,
    ) -> None:
        super().__init__(url, root_token, None, seed=seed)
        self._stop_event = stop or threading.Event()
        self.progress = progress or TrafficProgress()
        self._pace = pace

    @property
    def stopping(self) -> bool:
        """True once the demo was asked to stop."""
        return self._stop_event.is_set()

    @property
    def passwords(self) -> dict[str, str]:
        """The userpass passwords the organisation was given (for ``--keep``'s credentials file)."""
        return dict(self._passwords)

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
        if self._pace > 0:
            self._stop_event.wait(self._pace)
        return result

    def _record(self, call: Call) -> None:
        p = self.progress
        p.requests += 1
        p.sim_days = max(0.0, (call.ts - self.t0) / DAY)
        if call.label not in ("benign", "setup") and call.label not in p.attacks_started:
            p.attacks_started.append(call.label)
            p.phase = "attacks"

    def play(
        self,
        days: int,
        warmup_days: int,
        attacks: Sequence[str] = DEMO_ATTACKS,
        *,
        on_setup: Callable[[], None] | None = None,
    ) -> int:
        """Set up the organisation (then call ``on_setup``), run ``days`` days with ``attacks``
        after ``warmup_days``; returns the number of requests."""
        p = self.progress
        p.warmup_days = float(warmup_days)
        p.phase = "setup"
        self.setup()
        if on_setup is not None:
            on_setup()
        self.plan_benign(days)
        # Packed close together after the warm-up, so the demo does not wait on simulated days.
        self.plan_attacks(warmup_days, attacks, spacing=0.1)
        p.phase = "warm-up"
        made = self.run()
        p.phase = "done"
        return made


# -- the API ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DemoLogin:
    """The demo's own API credentials: a UI user (admin) and an API key (viewer)."""

    user: str
    password: str = field(repr=False)
    api_key: str = field(repr=False)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def _demo_auth(workdir: Path) -> tuple[AuthConfig, DemoLogin]:
    """An API auth configuration with a fresh demo user and API key, hashes only on disk."""
    login = DemoLogin(
        user="demo",
        password=secrets.token_urlsafe(12),
        api_key=f"demo.{secrets.token_urlsafe(24)}",
    )
    users, keys = workdir / "api-users.toml", workdir / "api-keys.toml"
    _write_private(
        users,
        f'[[users]]\nname = "{login.user}"\npassword_hash = "{hash_password(login.password)}"\n'
        'role = "admin"\n',
    )
    digest = hashlib.sha256(login.api_key.encode()).hexdigest()
    _write_private(keys, f'[[keys]]\nid = "demo"\nhash = "sha256:{digest}"\nrole = "viewer"\n')
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


def _port_free(host: str, port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


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
        self.ui_url = ""
        self.api_kind = "full"  # always the real API (vaultwatch.api); shown by `vaultwatch demo --json`
        self.settings: Any = None
        self.store: Any = None
        self.worker: Any = None
        self.shipper: Any = None
        self._socket: Any = None
        self._producer: Any = None
        self._quarantine: Any = None
        self._api: Any = None
        self._api_store: Any = None
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
            AuditDevice("file", "file", {"file_path": str(bao_dir / "audit.log")}),
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
        self.shipper = Shipper(
            self._socket,
            self._producer,
            self.topic,
            quarantine=self._quarantine,
            max_batch=500,
            poll_timeout=0.2,
        )
        self._spawn("shipper", self.shipper.run)

    def _start_worker(self) -> None:
        from ..service.wiring import build_worker, open_store

        self.store = open_store(self.settings)
        self.worker = build_worker(self.settings, store=self.store, checkpoint_interval=2.0)
        self._spawn("worker", self.worker.run)

    def _start_api(self) -> None:
        from ..service.ops import BackgroundServer
        from ..service.wiring import open_store

        port = self.api_port
        if port is None:
            port = 8080 if _port_free(self.api_host, 8080) else free_port()
        elif port == 0:
            port = free_port()
        # Its own connection pool: the API reads while the worker writes (SQLite WAL).
        self._api_store = open_store(self.settings)
        auth, self.login = _demo_auth(self.workdir)
        app = create_app(self.settings, store=self._api_store, auth=auth)
        self._api = BackgroundServer(app, self.api_host, port).start()
        if not _answers(f"http://{self.api_host}:{port}/healthz"):
            raise ServerError(f"the API did not answer /healthz on {self.api_host}:{port}")
        self.ui_url = f"http://{self.api_host}:{port}/"
        self.write_credentials()

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
        s = self.shipper.stats if self.shipper is not None else None
        w = self.worker.stats if self.worker is not None else {}
        return {
            "received": received,
            "shipped": s.shipped if s is not None else 0,
            "handled": (s.lines if s is not None else 0),
            "consumed": int(w.get("records", 0)),
            "events": int(w.get("events", 0)),
        }

    def drained(self) -> bool:
        """Everything OpenBao sent has been shipped and consumed (at this instant)."""
        c = self.counters()
        return c["handled"] >= c["received"] and c["consumed"] >= c["shipped"]

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
            data["ui_login"] = {"username": self.login.user, "password": self.login.password}
            data["api_key"] = self.login.api_key
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
