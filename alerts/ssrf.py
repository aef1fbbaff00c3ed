"""The SSRF guard: where delivery is allowed to connect, and pinning the address that was checked.

Webhook URLs come from configuration that more people can edit than can reach the internal network,
so a URL must not become a way to reach it. :class:`Guard` accepts ``https`` only, resolves the
host and refuses private, loopback, link-local, CGNAT (100.64/10), multicast, reserved,
unspecified and IPv4-mapped IPv6 addresses (and anything else that is not globally routable).
Every resolved address must pass, so a name that resolves to one public and one private address
is refused.

Checking and then connecting by name would let a short-TTL DNS answer change in between (DNS
rebinding), so :class:`GuardedTransport` connects to the checked address itself, keeping the
original ``Host`` header and TLS server name (SNI and certificate verification use the name).

``allow_loopback=True`` additionally admits loopback addresses and plain ``http``; it exists for
tests and single-host setups and must be set explicitly.

Error messages name the category of the refusal, never the URL (it may hold a token).

httpx timeouts bound each phase (connect, each read, each write), so a receiver trickling one
byte per almost-timeout could hold an attempt for ever. Under :func:`attempt_deadline` every
network operation of the guarded transport is clamped to the time left, making the per-attempt
timeout a wall-clock bound.
"""

from __future__ import annotations

import contextlib
import contextvars
import ipaddress
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from alerts.errors import BlockedDestination

__all__ = ["Guard", "GuardedTransport", "Resolved", "attempt_deadline", "blocked_reason", "guarded_client"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]

_CGNAT = ipaddress.ip_network("100.64.0.0/10")


def blocked_reason(ip: IPAddress, *, allow_loopback: bool = False) -> str | None:
    """Why ``ip`` is not an acceptable destination, or None if it is."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return "ipv4-mapped"
    if ip.is_loopback:
        return None if allow_loopback else "loopback"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "cgnat"
    if ip.is_reserved:
        return "reserved"
    if ip.is_private:
        return "private"
    if not ip.is_global:
        return "not-global"
    return None


def _system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True, slots=True)
class Resolved:
    """A checked destination: the name asked for and the address to connect to."""

    host: str
    ip: str
    port: int


@dataclass(frozen=True, slots=True)
class Guard:
    """Destination policy. ``resolver(host, port)`` returns addresses (injectable for tests);
    ``tls_context`` replaces the system trust store for every TLS connection (e.g. a private CA)."""

    allow_loopback: bool = False
    resolver: Resolver = _system_resolver
    tls_context: ssl.SSLContext | None = None

    def check_url(self, url: httpx.URL | str) -> Resolved:
        """Check an HTTP(S) URL and resolve its host; raises :class:`BlockedDestination`."""
        u = httpx.URL(url) if isinstance(url, str) else url
        allowed = ("https", "http") if self.allow_loopback else ("https",)
        if u.scheme not in allowed:
            raise BlockedDestination(f"scheme {u.scheme or '(none)'!r} not allowed")
        port = u.port or (443 if u.scheme == "https" else 80)
        resolved = self.check_host(u.host, port)
        if u.scheme == "http" and not ipaddress.ip_address(resolved.ip).is_loopback:
            # plain http is only tolerated to loopback, never across a network
            raise BlockedDestination("plain http allowed only to loopback")
        return resolved

    def check_host(self, host: str, port: int) -> Resolved:
        """Resolve ``host`` and check every address; returns the first one, to be pinned."""
        if not host:
            raise BlockedDestination("no host")
        try:
            literal: IPAddress | None = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            addresses = [str(literal)]
        else:
            try:
                addresses = list(self.resolver(host, port))
            except (OSError, UnicodeError) as exc:
                raise BlockedDestination(f"cannot resolve destination ({type(exc).__name__})") from exc
        if not addresses:
            raise BlockedDestination("destination resolves to no address")
        for raw in addresses:
            ip = ipaddress.ip_address(raw.split("%", 1)[0])
            why = blocked_reason(ip, allow_loopback=self.allow_loopback)
            if why is not None:
                raise BlockedDestination(f"destination address is {why}")
        return Resolved(host=host, ip=addresses[0].split("%", 1)[0], port=port)


_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("attempt_deadline", default=None)


@contextlib.contextmanager
def attempt_deadline(seconds: float) -> Iterator[None]:
    """Within the block, guarded HTTP I/O fails with a timeout once ``seconds`` have passed."""
    token = _deadline.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


def _clamp(timeout: float | None, exc: type[Exception]) -> float | None:
    deadline = _deadline.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise exc("attempt deadline reached")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _clamp(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _clamp(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        tls = self._inner.start_tls(ssl_context, server_hostname, _clamp(timeout, httpcore.ConnectTimeout))
        return _DeadlineStream(tls)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(
            host, port, _clamp(timeout, httpcore.ConnectTimeout), local_address, socket_options
        )
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are not a delivery destination")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class GuardedTransport(httpx.BaseTransport):
    """An httpx transport that checks every request with a :class:`Guard` and connects to the
    checked address, keeping the ``Host`` header and the TLS server name of the original URL."""

    def __init__(self, guard: Guard, *, verify: ssl.SSLContext | bool = True) -> None:
        self.guard = guard
        self._inner = httpx.HTTPTransport(verify=verify, retries=0)
        # Same pool httpx builds, with the deadline-aware network backend. httpx exposes no
        # parameter for it; the pool is replaced before any connection exists.
        ctx = verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(verify=verify)
        self._inner._pool = httpcore.ConnectionPool(ssl_context=ctx, network_backend=_DeadlineBackend())

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        target = self.guard.check_url(request.url)
        pinned = request.url.copy_with(host=target.ip)
        headers = request.headers.copy()
        if "host" not in headers:
            headers["host"] = request.url.netloc.decode("ascii")
        extensions = dict(request.extensions)
        if request.url.scheme == "https":
            extensions["sni_hostname"] = target.host
        inner = httpx.Request(
            request.method,
            pinned,
            headers=headers,
            stream=request.stream,
            extensions=extensions,
        )
        return self._inner.handle_request(inner)

    def close(self) -> None:
        self._inner.close()


def guarded_client(guard: Guard, *, timeout: float) -> httpx.Client:
    """An httpx client for delivery: guarded and pinned, redirects never followed, one timeout
    for connect, read, write and pool."""
    return httpx.Client(
        transport=GuardedTransport(guard, verify=guard.tls_context or True),
        follow_redirects=False,
        timeout=httpx.Timeout(timeout),
        trust_env=False,
    )
