"""Real receivers on loopback for the delivery tests, and a strict RFC 5424 + CEF parser.

* :class:`HttpReceiver` — a threaded HTTP server answering from a per-request schedule of
  :class:`Reply` (status, headers, delay), recording arrival time, path, headers and body.
* :class:`SmtpReceiver` — aiosmtpd's ``Controller`` on 127.0.0.1, recording messages.
* :class:`SyslogUdpReceiver` / :class:`SyslogTcpReceiver` — listeners that parse what they get
  (octet-counted frames for TCP/TLS) with :func:`parse_5424`.
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# --- HTTP -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    delay: float = 0.0
    trickle: float = 0.0  # send the status line one byte at a time over this many seconds


@dataclass(frozen=True)
class Received:
    at: float
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class HttpReceiver:
    """A loopback HTTP receiver. ``schedule`` replies are used in order, then ``default``."""

    def __init__(
        self, default: Reply | None = None, port: int = 0, tls: ssl.SSLContext | None = None
    ) -> None:
        self.default = default or Reply()
        self.schedule: list[Reply] = []
        self.requests: list[Received] = []
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                with receiver.lock:
                    reply = receiver.schedule.pop(0) if receiver.schedule else receiver.default
                    receiver.requests.append(
                        Received(
                            time.monotonic(),
                            self.command,
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            body,
                        )
                    )
                    receiver.arrived.notify_all()
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.trickle:
                    line = b"HTTP/1.0 200 OK\r\n"
                    try:
                        for byte in line:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            time.sleep(reply.trickle / len(line))
                    except OSError:
                        return
                    self.close_connection = True
                    return
                try:
                    self.send_response(reply.status)
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.send_header("content-length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except OSError:  # the client gave up (timeout): nothing to answer
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.scheme = "http"
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def replies(self, *replies: Reply) -> None:
        with self.lock:
            self.schedule.extend(replies)

    def set_default(self, reply: Reply) -> None:
        with self.lock:
            self.default = reply

    def received(self) -> list[Received]:
        with self.lock:
            return list(self.requests)

    def wait_for(self, n: int, timeout: float = 10.0) -> list[Received]:
        """Block until at least ``n`` requests arrived."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while len(self.requests) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {n} requests, got {len(self.requests)}")
                self.arrived.wait(left)
            return list(self.requests)

    def __enter__(self) -> HttpReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


# --- SMTP -------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SmtpReceiver:
    """aiosmtpd on 127.0.0.1 recording every message; optional AUTH with one accepted password."""

    def __init__(
        self,
        *,
        password: str | None = None,
        refuse_with: str | None = None,
        starttls: ssl.SSLContext | None = None,
        implicit_tls: ssl.SSLContext | None = None,
    ) -> None:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword

        self.messages: list[tuple[list[str], Message]] = []
        self.port = free_port()
        receiver = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                if refuse_with:
                    return refuse_with
                receiver.messages.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
                return "250 OK"

        def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
            ok = isinstance(auth_data, LoginPassword) and auth_data.password.decode() == password
            return AuthResult(success=ok, handled=False)

        kwargs: dict[str, Any] = {}
        if password is not None:
            kwargs.update(authenticator=authenticator, auth_require_tls=starttls is not None)
        if starttls is not None:
            kwargs.update(tls_context=starttls, require_starttls=True)
        if implicit_tls is not None:
            kwargs.update(ssl_context=implicit_tls)
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, **kwargs)

    def __enter__(self) -> SmtpReceiver:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


# --- syslog: a strict RFC 5424 + CEF parser ---------------------------------------------------------


class ParseFailure(ValueError):
    pass


@dataclass
class SyslogRecord:
    pri: int
    timestamp: str
    hostname: str
    app_name: str
    procid: str
    msgid: str
    sd: dict[str, dict[str, str]]
    msg: str
    cef_header: list[str] = field(default_factory=list)
    cef_ext: dict[str, str] = field(default_factory=dict)


_HEAD = re.compile(r"<(\d{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+) ")
_RAW_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_KEY = re.compile(r"[A-Za-z0-9_]+=")


def _unescape(text: str, specials: str) -> str:
    """Strictly undo ``\\<special>``, ``\\\\``, ``\\n``, ``\\r``, ``\\xHH``; anything else is an error."""
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if _RAW_CONTROL.match(c):
            raise ParseFailure(f"raw control character {ord(c):#x}")
        if c != "\\":
            out.append(c)
            i += 1
            continue
        if i + 1 >= len(text):
            raise ParseFailure("dangling backslash")
        n = text[i + 1]
        if n == "\\" or n in specials:
            out.append(n)
            i += 2
        elif n == "n":
            out.append("\n")
            i += 2
        elif n == "r":
            out.append("\r")
            i += 2
        elif n == "x" and re.fullmatch(r"[0-9a-f]{2}", text[i + 2 : i + 4]):
            out.append(chr(int(text[i + 2 : i + 4], 16)))
            i += 4
        else:
            raise ParseFailure(f"bad escape \\{n}")
    return "".join(out)


def _parse_sd(text: str, i: int) -> tuple[dict[str, dict[str, str]], int]:
    sd: dict[str, dict[str, str]] = {}
    if text.startswith("-", i):
        return sd, i + 1
    while i < len(text) and text[i] == "[":
        j = i + 1
        m = re.compile(r"[!-~]+?(?=[ \]])").match(text, j)
        if not m or any(c in m.group() for c in '="]'):
            raise ParseFailure("bad SD-ID")
        sd_id = m.group()
        params: dict[str, str] = {}
        j = m.end()
        while text[j] == " ":
            pm = re.compile(r' ([!-~]+?)="').match(text, j)
            if not pm:
                raise ParseFailure("bad SD-PARAM")
            j = pm.end()
            raw: list[str] = []
            while True:
                if j >= len(text):
                    raise ParseFailure("unterminated SD value")
                c = text[j]
                if c == "\\" and j + 1 < len(text):
                    raw.append(text[j : j + 2])
                    j += 2
                    continue
                if c == '"':
                    break
                if c == "]":
                    raise ParseFailure("raw ] in SD value")
                raw.append(c)
                j += 1
            params[pm.group(1)] = _unescape("".join(raw), '"]')
            j += 1
        if text[j] != "]":
            raise ParseFailure("SD element not closed")
        sd[sd_id] = params
        i = j + 1
    if not sd:
        raise ParseFailure("no structured data")
    return sd, i


def parse_cef(msg: str) -> tuple[list[str], dict[str, str]]:
    """Split a CEF message into its 7 header fields and extension dict, strictly."""
    if not msg.startswith("CEF:"):
        raise ParseFailure("not CEF")
    header: list[str] = []
    cur: list[str] = []
    i = 4
    while len(header) < 7:
        if i >= len(msg):
            raise ParseFailure("short CEF header")
        c = msg[i]
        if c == "\\" and i + 1 < len(msg):
            cur.append(msg[i : i + 2])
            i += 2
            continue
        if c == "|":
            header.append(_unescape("".join(cur), "|"))
            cur = []
        else:
            cur.append(c)
        i += 1
    ext: dict[str, str] = {}
    rest = msg[i:]
    pos = 0
    while pos < len(rest):
        km = _KEY.match(rest, pos)
        if not km:
            raise ParseFailure("bad extension key")
        key = km.group()[:-1]
        j = km.end()
        start = j
        while j < len(rest):
            if rest[j] == "\\":
                j += 2
                continue
            if rest[j] == "=":
                raise ParseFailure("unescaped = in value")
            if rest[j] == " " and _KEY.match(rest, j + 1):
                break
            j += 1
        if key in ext:
            raise ParseFailure(f"duplicate key {key}")
        ext[key] = _unescape(rest[start:j], "=")
        pos = j + 1
    return header, ext


def parse_5424(data: bytes) -> SyslogRecord:
    """Parse one RFC 5424 record whose MSG is CEF; raises :class:`ParseFailure`."""
    text = data.decode("utf-8")
    m = _HEAD.match(text)
    if not m:
        raise ParseFailure("bad 5424 header")
    sd, i = _parse_sd(text, m.end())
    msg = ""
    if i < len(text):
        if text[i] != " ":
            raise ParseFailure("no space before MSG")
        msg = text[i + 1 :]
    header, ext = parse_cef(msg)
    return SyslogRecord(int(m.group(1)), *m.groups()[1:], sd=sd, msg=msg, cef_header=header, cef_ext=ext)  # type: ignore[arg-type, misc]


def split_octet_counted(stream: bytes) -> Iterator[bytes]:
    """Frames of an RFC 6587 octet-counted stream; raises on a malformed frame."""
    i = 0
    while i < len(stream):
        sp = stream.index(b" ", i)
        length = int(stream[i:sp])
        frame = stream[sp + 1 : sp + 1 + length]
        if len(frame) != length:
            raise ParseFailure("truncated frame")
        yield frame
        i = sp + 1 + length


# --- syslog listeners -------------------------------------------------------------------------------


class _Listener:
    def __init__(self) -> None:
        self.records: list[SyslogRecord] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.sock: socket.socket

    def _serve(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _add(self, data: bytes) -> None:
        with self.cond:
            try:
                self.records.append(parse_5424(data))
            except (ParseFailure, UnicodeDecodeError) as exc:
                self.errors.append(str(exc))
            self.cond.notify_all()

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def wait_for(self, n: int, timeout: float = 10.0) -> list[SyslogRecord]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.records) + len(self.errors) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {n} records, got {len(self.records)}")
                self.cond.wait(left)
            assert not self.errors, self.errors
            return list(self.records)

    def __enter__(self) -> Any:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(5)
        self.sock.close()


class SyslogUdpReceiver(_Listener):
    def __init__(self) -> None:
        super().__init__()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)

    def _serve(self) -> None:
        while not self.stop_event.is_set():
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            self._add(data)


class SyslogTcpReceiver(_Listener):
    """Octet-counted TCP, or TLS when ``tls`` (a server SSLContext) is given."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        super().__init__()
        self.tls = tls
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.05)

    def _serve(self) -> None:
        while not self.stop_event.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with contextlib.ExitStack() as stack:
                stack.enter_context(conn)
                conn.settimeout(5)
                stream: socket.socket = conn
                if self.tls is not None:
                    try:
                        stream = stack.enter_context(self.tls.wrap_socket(conn, server_side=True))
                    except (ssl.SSLError, OSError) as exc:
                        with self.cond:
                            self.errors.append(f"tls: {exc}")
                            self.cond.notify_all()
                        continue
                chunks = []
                while True:
                    try:
                        chunk = stream.recv(65536)
                    except (ssl.SSLError, OSError):
                        break
                    if not chunk:
                        break
                    chunks.append(chunk)
                try:
                    frames = list(split_octet_counted(b"".join(chunks)))
                except (ParseFailure, ValueError) as exc:
                    with self.cond:
                        self.errors.append(f"framing: {exc}")
                        self.cond.notify_all()
                    continue
                for frame in frames:
                    self._add(frame)


# --- TLS ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsPair:
    """A throwaway CA-signed server certificate: ``server`` context for receivers, ``client``
    context trusting only that CA."""

    server: ssl.SSLContext
    client: ssl.SSLContext


def make_tls(tmp_dir: Any, names: tuple[str, ...] = ("hooks.test", "localhost")) -> TlsPair:
    """A CA and a server certificate for ``names`` (and 127.0.0.1), written under ``tmp_dir``."""
    import datetime as dt
    import ipaddress
    from pathlib import Path

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vaultwatch test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    base = Path(tmp_dir)
    (base / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (base / "server.pem").write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(base / "server.pem")
    client = ssl.create_default_context(cafile=str(base / "ca.pem"))
    return TlsPair(server=server, client=client)
