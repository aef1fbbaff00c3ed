"""Shared benchmark inputs: a large real OpenBao audit log, made once and cached under var/bench."""

from __future__ import annotations

import hashlib
import heapq
import os
import re
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path

CACHE = Path(__file__).resolve().parent.parent / "var" / "bench"
#: Where ``python -m bench`` writes its table, the explanations of unmet targets and the profiles
#: they come from (git-ignored).
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "bench"


def real_openbao_log(rounds: int = 60) -> Path:
    """An audit log written by a real OpenBao server driven through its API (cached)."""
    from vaultwatch.cli.demo import drive_traffic, setup_org
    from vaultwatch.demo.servers import OpenBaoServer

    out = CACHE / f"openbao-audit-{rounds}.log"
    if out.exists():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    with OpenBaoServer(CACHE / f"bao-{uuid.uuid4().hex[:8]}") as srv:
        drive_traffic(srv, setup_org(srv.client()), rounds)
        srv.stop()
        out.write_bytes(srv.audit_log.read_bytes())
    return out


def scaled_lines(path: Path, n: int) -> list[bytes]:
    """``n`` real lines: the log repeated, each copy with fresh request ids (so dedup sees new
    entries, as it would in a long real log)."""
    base = [line for line in path.read_bytes().splitlines() if line.strip()]
    out: list[bytes] = []
    copy = 0
    while len(out) < n:
        tag = f"{copy:08x}".encode()
        for line in base:
            # Request ids are UUIDs; replacing their first 8 hex chars keeps the shape.
            i = line.find(b'"id":"')
            if i >= 0 and line[i + 6 : i + 14].isalnum():
                line = line[: i + 6] + tag + line[i + 14 :]
            out.append(line)
            if len(out) == n:
                break
        copy += 1
    return out


def rate(fn: Callable[[], int], repeat: int = 3) -> float:
    """Best items/second over ``repeat`` runs of ``fn`` (which returns the item count)."""
    best = 0.0
    for _ in range(repeat):
        t0 = time.perf_counter()
        n = fn()
        dt = time.perf_counter() - t0
        best = max(best, n / dt)
    return best


_EVAL = CACHE.parent / "eval"
_TIME_HEAD = b'{"time":"'
_HMAC_HEAD = re.compile(rb"hmac-sha256:[0-9a-f]{8}")
_UUID_HEAD = re.compile(rb'"[0-9a-f]{8}(?=-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")')
_REQUEST_ID = re.compile(rb'"request":\{"id":"')
_DISPLAY = re.compile(rb'"display_name":"([^"]*)"')
_SHARED_NAMES = frozenset({b"", b"root", b"token", b"token-token"})
#: Every organisation log is shifted to start here, so copies of different organisations overlap.
_START = datetime(2026, 3, 2, 15, 0)  # noqa: DTZ001 - the log times are UTC, read zoneless


#: The generated organisations the many-identities input is made of: the first eight of
#: ``make eval`` (seeds 1-8, default size). Fixed, so the input is the same on every machine and
#: in every run whatever else ``var/eval`` holds (an input that grew with the eval cache made the
#: replay ratios incomparable between runs).
BENCH_SEEDS: tuple[int, ...] = tuple(range(1, 9))


def organisation_logs() -> list[Path]:
    """The audit logs of the :data:`BENCH_SEEDS` organisations (real OpenBao lines, two weeks
    each), generated once by a real OpenBao server and cached under ``var/eval`` as ``make eval``
    caches them."""
    from vaultwatch.demo.orgs import generate_org

    return [generate_org(seed, workdir=_EVAL).audit_path for seed in BENCH_SEEDS]


def _copy_lines(path: Path, copy: int, keep: int) -> Iterator[bytes]:
    """One organisation log as copy ``copy``: every HMAC, UUID, request id and named display name
    made distinct (new tokens, entities and requests: new identities), times shifted to
    :data:`_START` plus ``copy`` milliseconds, and one request in ``keep`` kept (both its entries)."""
    tag = f"{copy:08x}".encode()
    hmac_sub = b"hmac-sha256:" + tag
    uuid_sub = b'"' + tag
    rid_sub = b'"request":{"id":"' + tag + b"-"
    shift: timedelta | None = None

    def display(m: re.Match[bytes]) -> bytes:
        name = m.group(1)
        return m.group(0) if name in _SHARED_NAMES else b'"display_name":"' + name + b"-c" + tag + b'"'

    with open(path, "rb") as f:
        for line in f:
            if not line.startswith(_TIME_HEAD) or line[35:37] != b'Z"':
                continue
            rid = line.find(b'"request":{"id":"')
            if keep > 1 and rid >= 0 and zlib.crc32(line[rid + 17 : rid + 53]) % keep:
                continue
            t = datetime.fromisoformat(line[9:35].decode())
            if shift is None:
                shift = _START - t + timedelta(milliseconds=copy)
            stamp = (t + shift).strftime("%Y-%m-%dT%H:%M:%S.%f").encode()
            line = _TIME_HEAD + stamp + line[35:]
            line = _HMAC_HEAD.sub(hmac_sub, line)
            line = _UUID_HEAD.sub(uuid_sub, line)
            line = _REQUEST_ID.sub(rid_sub, line, count=1)
            yield _DISPLAY.sub(display, line)


def _merge_key(line: bytes) -> bytes:
    return line[9:35]  # the time, one fixed format after _copy_lines


def many_identities_log(copies: int = 180, keep: int = 8) -> Path:
    """A large audit log with thousands of identities (cached under var/bench).

    ``copies`` copies of the generated organisations' logs (round robin), each with its own
    tokens, entities and request ids, all aligned on one start time and merged in time order:
    about 28 identities per copy (180 copies: over 5,000), two weeks of event time, one request in
    ``keep`` kept so the file stays a size a loaded 2-core machine can replay several times.
    """
    sources = organisation_logs()
    names = hashlib.sha256("\n".join(p.parent.name for p in sources).encode()).hexdigest()[:8]
    out = CACHE / f"many-{copies}x{keep}-{names}.log"
    if out.exists():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    streams = [_copy_lines(sources[c % len(sources)], c, keep) for c in range(copies)]
    tmp = out.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        merged: Iterator[bytes] = heapq.merge(*streams, key=_merge_key)
        f.writelines(merged)
    tmp.replace(out)
    return out


@dataclass(frozen=True)
class Row:
    """One line of issue 17's table: a measured figure against its target, or why there is none."""

    name: str
    target: str
    value: float | None = None
    met: bool | None = None
    unit: str = ""
    note: str = ""
    #: The 1-minute load average when the row was made (right after its measurement).
    load: float = field(default_factory=lambda: os.getloadavg()[0])
    #: Why an unmet target is not met: figures measured in the same run (a profile's top costs).
    why: tuple[str, ...] = ()
    #: What meeting it would take, computed from those figures.
    takes: str = ""

    def explained(self, why: Iterable[str], takes: str) -> Row:
        """This row with the measured reasons it misses its target and what meeting it takes."""
        return replace(self, why=tuple(why), takes=takes)

    @classmethod
    def ratio(cls, name: str, value: float, at_least: float, note: str = "") -> Row:
        return cls(name, f">= {at_least:g}", value, value >= at_least, "", note)

    @classmethod
    def at_most(cls, name: str, value: float, limit: float, unit: str, note: str = "") -> Row:
        return cls(name, f"< {limit:g} {unit}", value, value < limit, unit, note)

    @classmethod
    def missing(cls, name: str, target: str, reason: str) -> Row:
        return cls(name, target, note=reason)


def load_average() -> str:
    """The 1/5/15-minute load averages and the core count: every ratio is read against them."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def shares(costs: dict[str, float], total: float, per: float, unit: str, top: int = 6) -> list[str]:
    """The ``top`` largest of ``costs`` (seconds) as lines: microseconds per ``unit`` (``per``
    of them in ``total`` seconds) and the share of ``total`` each takes, largest first."""
    out = []
    for name, sec in sorted(costs.items(), key=lambda kv: -kv[1])[:top]:
        out.append(f"{name:52s} {sec / per * 1e6:9.2f} us/{unit} {sec / total * 100:5.1f} %")
    return out


def write_artifact(name: str, text: str) -> Path:
    """``text`` into :data:`ARTIFACTS`/``name`` (made if missing); its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    path.write_text(text)
    return path


def explanations(rows: list[Row]) -> list[str]:
    """For every row whose target is not met: its figure, why (as measured) and what it takes."""
    out: list[str] = []
    for r in rows:
        if r.met is not False:
            continue
        shown = "-" if r.value is None else f"{r.value:.2f}" + (f" {r.unit}" if r.unit else "")
        out.append(f"- {r.name}: {shown}, target {r.target}")
        out += [f"    {line}" for line in r.why] or ["    (no profile was measured for this row)"]
        if r.takes:
            out.append(f"    takes: {r.takes}")
    return out


def print_table(rows: list[Row]) -> None:
    """Issue 17's table: benchmark, measured figure, target, met / not met / not measured; then,
    for each target not met, why and what it would take (figures of this run), also written to
    :data:`ARTIFACTS`/``table.txt``."""
    lines = [f"issue 17 table ({load_average()}):"]
    lines.append(f"| {'benchmark':58s} | {'measured':>10s} | {'target':>10s} | status       | load | note")
    lines.append(f"| {'-' * 58} | {'-' * 10} | {'-' * 10} | ------------ | ---- | ----")
    for r in rows:
        if r.value is None:
            shown, status = "-", "not measured"
        else:
            shown = f"{r.value:.2f}" + (f" {r.unit}" if r.unit else "")
            status = "met" if r.met else "NOT met"
        lines.append(
            f"| {r.name:58s} | {shown:>10s} | {r.target:>10s} | {status:12s} | {r.load:4.1f} | {r.note}"
        )
    why = explanations(rows)
    if why:
        lines += ["", "targets not met: why, as measured in this run, and what meeting them takes", *why]
    text = "\n".join(lines)
    print("\n" + text)
    try:
        write_artifact("table.txt", text + "\n")
    except OSError as exc:  # a read-only checkout still prints the table
        print(f"(could not write {ARTIFACTS / 'table.txt'}: {exc})")
