"""Fuzz campaign over the parser, the identity resolver and the redactor (``make fuzz``).

Structure-aware: real OpenBao/Vault audit lines are decoded, mutated as JSON (hostile values in the
fields that are read -- times at the calendar's edges, Unicode-digit and 5,000-digit ports, huge
ints, odd types, unknown fields, nesting past the depth limit, strings past the size limit) and
re-encoded, or mutated as bytes (truncation, flips, invalid UTF-8, prefixes). Each input goes
through :meth:`Parser.parse_unguarded` (no last-resort guard), and the parts that parse feed the
identity resolver, the redactor and the codec round trip directly. Anything but an
:class:`~ingest.AuditEvent` or a :class:`~ingest.ParseError`, or a broken invariant (port or time
out of bounds, a round trip that fails) is a finding. Findings are minimised and written to the
regression corpus (``tests/ingest/fuzz_corpus``), which the suite replays.

Seeds are read at run time, never copied into the repository: ``../shared/reference`` and
``../shared/fixtures`` when present, the cached real OpenBao log of ``bench/common.py`` when
present, and a few synthetic entries written here.

    python -m bench.fuzz --inputs 1000000 --workers 2
"""

from __future__ import annotations

import argparse
import hashlib
import math
import multiprocessing
import random
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from ingest import AuditEvent, ParseError, Parser
from ingest.codec import encode_entry
from ingest.event import Auth, Request, Response
from ingest.identity import MAX_PORT, classify_outcome, login_target, resolve_identity, split_address
from ingest.parse import MAX_TIME, MIN_TIME
from ingest.redact import has_plaintext, redact_path, redact_text, redact_tree

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
CORPUS = ROOT / "tests" / "ingest" / "fuzz_corpus"
#: Small limits, so that inputs past them are cheap to make.
MAX_LINE_BYTES = 64 * 1024
MAX_DEPTH = 32
_roundtrip = Parser(max_line_bytes=2 * MAX_LINE_BYTES + 4096, max_depth=MAX_DEPTH)

_SYNTHETIC: tuple[dict[str, Any], ...] = (
    {
        "time": "2026-03-01T10:00:00.123456Z",
        "type": "request",
        "auth": {"token_type": "default"},
        "request": {
            "id": "00000000-1111-2222-3333-444444444444",
            "operation": "update",
            "namespace": {"id": "root"},
            "path": "auth/userpass/login/fuzz-user",
            "data": {"password": "hmac-sha256:00ff"},
            "remote_address": "192.0.2.10",
            "remote_port": 40000,
        },
    },
    {
        "time": "2026-03-01T10:00:01Z",
        "type": "response",
        "auth": {
            "client_token": "hmac-sha256:aa",
            "accessor": "hmac-sha256:bb",
            "display_name": "token-ci",
            "policies": ["default", "ci"],
            "metadata": {"role": "ci"},
            "entity_id": "ent-1",
            "token_type": "service",
            "token_ttl": 3600,
            "num_uses": 0,
            "policy_results": {"allowed": True, "granting_policies": [{"name": "ci", "type": "acl"}]},
        },
        "request": {
            "id": "55555555-1111-2222-3333-444444444444",
            "client_id": "cid",
            "operation": "read",
            "mount_point": "kv/",
            "mount_type": "kv",
            "namespace": {"id": "root", "path": "team/"},
            "path": "kv/data/app",
            "remote_address": "[2001:db8::1]:8200",
            "headers": {"user-agent": ["fuzz"]},
            "wrap_ttl": 60,
        },
        "response": {
            "mount_point": "kv/",
            "data": {"data": {"k": "hmac-sha256:cc"}, "metadata": {"version": 1}},
            "wrap_info": {"ttl": 60, "token": "hmac-sha256:dd", "creation_time": "2026-03-01T10:00:01Z"},
            "auth": {"client_token": "hmac-sha256:ee", "policies": ["root"]},
        },
        "error": "1 error occurred:\n\t* permission denied\n\n",
    },
)

# -- hostile values ------------------------------------------------------------------------------
_TIMES = (
    "0001-01-01T00:00:00",
    "0001-01-01T00:00:00+05:00",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59-05:00",
    "9999-12-31T23:59:59.999999999Z",
    "9999-12-31T23:59:59",
    "1969-12-31T23:59:59Z",
    "1970-01-01T00:00:00+00:01",
    "2199-12-31T23:59:59.999999Z",
    "2200-01-01T00:00:00Z",
    "2026-02-30T00:00:00Z",
    "2026-01-01T24:00:00Z",
    "2026-01-01T00:00:60Z",
    "2026-01-01T00:00:00+24:00",
    "2026-01-01T00:00:00-23:59",
    "2026-01-01",
    "2026-01-01T00:00:00.000000000000000000001Z",
    "",
    "now",
)
_DIGITS = "\u00b2\u00b3\u00b9\u0660\u0661\u06f1\u0967\u09e7\uff11\U0001d7ce\u2460"
_PORT_TEXTS = (
    lambda r: "".join(r.choice(_DIGITS) for _ in range(r.randint(1, 6))),
    lambda r: "9" * r.choice((5, 6, 20, 4300, 4301, 5000)),
    lambda r: str(r.choice((-1, 0, 65535, 65536, 99999, 2**31, 2**63))),
    lambda r: r.choice(("", " 80", "+80", "-1", "0x50", "8_0", "80 ", "٨٠", "1e3")),
)
_STRINGS = (
    "",
    "hmac-sha256:",
    "[REDACTED]",
    "auth/token/lookup/s.AAAAAAAAAAAAAAAAAAAAAAAA",
    "auth/token/revoke/hvs.CAES" + "A" * 40,
    "auth/approle/login",
    "auth/userpass/login/",
    "auth//login/x",
    "\u0000",
    "\ufeff",
    "\u202e",
    "a" * 70_000,
    "password=canary-fuzz-value token: hvs.CAESIABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "postgres://u:canary@h/db",
    "-----BEGIN RSA PRIVATE KEY-----" + "A" * 100,
    "root",
    "response-wrapping",
    "token-" + "\u00b2" * 10,
    "1.2.3.4:\u00b2",
)


class Raw:
    """A JSON token spliced in verbatim (e.g. an integer of 5,000 digits, which json can't write)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _odd(r: random.Random, depth_hint: int = 0) -> Any:
    k = r.randrange(16)
    if k == 0:
        return Raw(r.choice(("-", "")) + "9" * r.choice((19, 20, 40, 300, 4300, 4301, 5000)))
    if k == 1:
        return Raw(r.choice(("1e400", "-1e400", "1e-400", "0.0", "-0", "1.5", "NaN", "Infinity")))
    if k == 2:
        return r.choice((True, False, None))
    if k == 3:
        return r.choice((2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, -1, 0, 65535, 65536))
    if k == 4:
        return _nest(r, r.choice((MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, MAX_DEPTH + 5, 200, 2000)))
    if k == 5:
        return [r.choice(_STRINGS), 1, None, {"x": []}]
    if k == 6:
        return {"a": r.choice(_STRINGS), "b": [1, {"c": "plain"}]}
    if k == 7:
        return "".join(r.choice(_DIGITS) for _ in range(r.randint(1, 8)))
    if k == 8:
        return Raw('"' + r.choice(("\\ud800", "\\udfff", "\\ud800\\udc00", "\\u0000", "\\x", "\\")) + '"')
    if k == 9:
        return "x" * r.choice((MAX_LINE_BYTES - 200, MAX_LINE_BYTES, MAX_LINE_BYTES + 1))
    if k == 10:
        return r.choice(_TIMES)
    if k == 11:
        return "1.2.3.4:" + r.choice(_PORT_TEXTS)(r)
    return r.choice(_STRINGS)


def _nest(r: random.Random, depth: int) -> Any:
    if depth > 100:  # past what an encoder will write: spliced in as text
        if r.random() < 0.5:
            return Raw("[" * depth + "]" * depth)
        return Raw('{"n":' * depth + '"leaf"' + "}" * depth)
    node: Any = r.choice(("leaf", 1, None, []))
    for _ in range(depth):
        node = {"n": node} if r.random() < 0.5 else [node]
    return node


# Fields the parser reads, with generators of hostile values for each.
_FIELD_VALUES: dict[tuple[str, ...], Callable[[random.Random], Any]] = {
    ("time",): lambda r: r.choice(_TIMES) if r.random() < 0.8 else _odd(r),
    ("type",): lambda r: r.choice(("", "request", "response", "x-request", "\u0000", "requestrequest")),
    ("error",): lambda r: r.choice(_STRINGS) if r.random() < 0.7 else _odd(r),
    ("request", "remote_address"): lambda r: r.choice(
        (
            "1.2.3.4:" + r.choice(_PORT_TEXTS)(r),
            "[::1]:" + r.choice(_PORT_TEXTS)(r),
            "[::1",
            "[]:",
            ":",
            "::",
            "1.2.3.4:5:6",
            "[" * 5 + "]",
        )
    ),
    ("request", "remote_port"): lambda r: r.choice((-1, 0, 65535, 65536, 2**63, -(2**63) - 1)),
    ("request", "wrap_ttl"): lambda r: _odd(r),
    ("request", "path"): lambda r: r.choice(_STRINGS),
    ("request", "data"): lambda r: _odd(r) if r.random() < 0.5 else {"password": r.choice(_STRINGS)},
    ("request", "headers"): lambda r: {"authorization": _odd(r), "x-forwarded-for": [r.choice(_STRINGS)]},
    ("request", "namespace"): lambda r: {"id": "x", "path": r.choice(_STRINGS)},
    ("request", "client_token"): lambda r: r.choice(_STRINGS),
    ("auth", "policies"): lambda r: r.choice((["root"], ["response-wrapping"], [], _odd(r))),
    ("auth", "metadata"): lambda r: _odd(r),
    ("auth", "token_ttl"): lambda r: _odd(r),
    ("auth", "num_uses"): lambda r: _odd(r),
    ("auth", "display_name"): lambda r: r.choice(_STRINGS),
    ("auth", "entity_id"): lambda r: r.choice(_STRINGS),
    ("auth", "client_token"): lambda r: r.choice(_STRINGS),
    ("auth", "policy_results"): lambda r: {"allowed": _odd(r), "granting_policies": [_odd(r)]},
    ("response", "data"): lambda r: {"error": r.choice(_STRINGS), "deep": _odd(r)},
    ("response", "wrap_info"): lambda r: {"ttl": _odd(r), "token": r.choice(_STRINGS)},
    ("response", "auth"): lambda r: {"client_token": r.choice(_STRINGS), "policies": _odd(r)},
    ("response", "supplemental_audit_data"): lambda r: _odd(r),
}
_FIELDS = tuple(_FIELD_VALUES)


def _paths(node: Any, prefix: tuple[Any, ...] = (), limit: int = 400) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    stack = [(prefix, node)]
    while stack and len(out) < limit:
        path, n = stack.pop()
        if isinstance(n, dict):
            for k, v in n.items():
                out.append((*path, k))
                stack.append(((*path, k), v))
        elif isinstance(n, list):
            for i, v in enumerate(n):
                out.append((*path, i))
                stack.append(((*path, i), v))
    return out


def _get_parent(root: Any, path: tuple[Any, ...]) -> Any:
    node = root
    for p in path[:-1]:
        node = node[p]
    return node


def _set(root: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node: Any = root
    for p in path[:-1]:
        child = node.get(p) if isinstance(node, dict) else None
        if not isinstance(child, dict):
            child = {}
            node[p] = child
        node = child
    node[path[-1]] = value


def _random_path(root: Any, r: random.Random, *, dict_parent: bool = False) -> tuple[Any, ...] | None:
    """A random member path, walking down from the root (cheap: no enumeration of the tree)."""
    node, best = root, None
    path: tuple[Any, ...] = ()
    while isinstance(node, dict | list) and node:
        key = r.choice(list(node)) if isinstance(node, dict) else r.randrange(len(node))
        if not dict_parent or isinstance(node, dict):
            best = (*path, key)
        path = (*path, key)
        node = node[key]
        if r.random() < 0.35:
            break
    return best


def _random_dict(root: dict[str, Any], r: random.Random) -> dict[str, Any]:
    node, best = root, root
    while True:
        kids = [v for v in node.values() if isinstance(v, dict)]
        if not kids or r.random() < 0.4:
            return best
        node = best = r.choice(kids)


def mutate_tree(entry: dict[str, Any], r: random.Random) -> dict[str, Any]:
    """Apply 1-3 structure-aware mutations to a decoded entry (in place); returns it."""
    for _ in range(r.choice((1, 1, 2, 3))):
        k = r.randrange(10)
        if k < 4:
            fpath = r.choice(_FIELDS)
            _set(entry, fpath, _FIELD_VALUES[fpath](r))
        elif k < 6:
            path = _random_path(entry, r)
            if path:
                _get_parent(entry, path)[path[-1]] = _odd(r)
        elif k == 6:
            target = _random_dict(entry, r)
            target[r.choice(("unknown", "zz_new", "client_token", "data", "auth"))] = _odd(r)
        elif k == 7:
            path = _random_path(entry, r, dict_parent=True)
            if path:
                _get_parent(entry, path).pop(path[-1], None)
        elif k == 8:
            entry.pop(r.choice(("time", "type", "auth", "request", "response")), None)
        else:
            path = _random_path(entry, r)
            if path:
                _get_parent(entry, path)[path[-1]] = _nest(r, r.choice((MAX_DEPTH, MAX_DEPTH + 1, 100)))
    return entry


def encode(entry: Any) -> bytes:
    """JSON for a tree that may hold :class:`Raw` tokens."""
    raws: list[str] = []

    def hook(obj: Any) -> Any:
        if isinstance(obj, Raw):
            raws.append(obj.text)
            return f"\x00RAW{len(raws) - 1}\x00"
        raise TypeError(type(obj).__name__)

    out = msgspec.json.encode(entry, enc_hook=hook)
    for i, text in enumerate(raws):
        out = out.replace(b'"\\u0000RAW%d\\u0000"' % i, text.encode("utf-8", "surrogatepass"), 1)
    return out


def mutate_bytes(line: bytes, r: random.Random) -> bytes:
    """Byte-level mutations of a serialised line."""
    b = bytearray(line)
    for _ in range(r.choice((1, 2, 4))):
        k = r.randrange(9)
        i = r.randrange(len(b) + 1)
        if k == 0:
            del b[i:]
        elif k == 1 and b:
            b[min(i, len(b) - 1)] ^= 1 << r.randrange(8)
        elif k == 2:
            b[i:i] = r.choice((b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\xe2\x82"))
        elif k == 3:
            b[0:0] = r.choice(
                (b"VAULT-AUDIT ", b"<134>1 host vault - - ", b"<json:object>", b"   ", b"[1,2]")
            )
        elif k == 4:
            b[i:i] = r.choice((b"{", b"}", b"[", b"]", b'"', b",", b":", b"\\", b"\\u"))
        elif k == 5:
            b[i:i] = b"[" * r.choice((33, 1000, 5000))
        elif k == 6:
            b += b"x" * r.choice((1, MAX_LINE_BYTES))
        elif k == 7 and b:
            j = r.randrange(len(b))
            b[j:j] = b[j : j + r.randint(1, 64)]
        else:
            b[i:i] = r.choice((b'"time":"0001-01-01T00:00:00",', b'"type":"request",', b'"request":{},'))
    return bytes(b)


# -- the targets ------------------------------------------------------------------------------
class Finding(Exception):
    """A broken invariant (not an exception the code raised itself)."""


def check_event(ev: AuditEvent, parser: Parser) -> None:
    """Invariants of a parsed event, then the codec round trip and the direct targets."""
    if ev.remote_port is not None and not 0 <= ev.remote_port <= MAX_PORT:
        raise Finding(f"remote_port {ev.remote_port} out of range")
    if ev.time.tzinfo is None or not MIN_TIME <= ev.time < MAX_TIME or not math.isfinite(ev.ts):
        raise Finding("event time out of bounds")
    # The re-encoding may be longer than the line (fractions of seconds padded, empty parts
    # written out): a reader of forwarded entries needs headroom over the raw-line limit.
    again = _roundtrip.parse_unguarded(encode_entry(ev))
    if again.identity.key != ev.identity.key or again.outcome != ev.outcome:
        raise Finding("codec round trip changed the identity or outcome")
    msgspec.json.encode(ev)


def direct_targets(entry: Any) -> int:
    """Call the identity resolver and the redactor on the mutated parts themselves."""
    n = 0
    if not isinstance(entry, dict):
        return n
    for key, cls in (("auth", Auth), ("request", Request), ("response", Response)):
        part = entry.get(key)
        if isinstance(part, dict):
            try:
                entry[key] = msgspec.convert(part, cls)
            except msgspec.ValidationError:
                entry[key] = None
        else:
            entry[key] = None
    auth, req, resp = entry["auth"] or Auth(), entry["request"] or Request(), entry["response"]
    path = req.path if isinstance(req.path, str) else ""
    ip, _ = split_address(req.remote_address)
    resolve_identity(auth, req, path, ip)
    login_target(path, req)
    err = entry.get("error")
    classify_outcome("request", err if isinstance(err, str) else None, auth, resp, path)
    redact_path(path)
    n += 4
    for tree in (req.data, req.headers, resp.data if resp is not None else None):
        if tree is None:
            continue
        try:
            has_plaintext(tree, MAX_DEPTH)
            redact_tree(tree, "x", [], MAX_DEPTH, values=[])
        except ParseError as exc:
            if exc.reason != "too_deep":
                raise
        n += 1
    if isinstance(err, str):
        out = redact_text(err, [v for v in (req.client_token, auth.client_token) if v])
        if redact_text(out) != out:
            raise Finding("redact_text is not idempotent")
        n += 1
    return n


def run_one(parser: Parser, line: bytes, *, direct: bool = True) -> int:
    """One input through the parser and, when it parses, every check; then, when it is a JSON
    object, its parts straight into the identity resolver and the redactor. Raises on a finding.
    Returns the number of direct calls made."""
    try:
        ev = parser.parse_unguarded(line)
    except ParseError:
        pass
    else:
        check_event(ev, parser)
    return direct_calls(line) if direct else 0


def direct_calls(line: bytes) -> int:
    """The identity resolver and the redactor called on the parts of ``line`` (a JSON object)."""
    try:
        tree = msgspec.json.decode(line)
    except (msgspec.DecodeError, RecursionError):
        return 0
    return direct_targets(tree)


def generate(seeds: list[bytes], seed: int) -> Iterator[tuple[bytes, Any]]:
    """Endless (line, decoded tree or None) inputs from ``seeds``."""
    r = random.Random(seed)
    trees = [msgspec.json.decode(s) for s in seeds]
    while True:
        base = r.choice(seeds)
        k = r.random()
        if k < 0.08:
            yield base, None  # the real line itself, or a prefix of it below
        elif k < 0.75:
            tree = msgspec.json.decode(base) if r.random() < 0.5 else _copy(r.choice(trees))
            tree = mutate_tree(tree, r)
            yield encode(tree), tree
        else:
            tree = mutate_tree(msgspec.json.decode(base), r) if r.random() < 0.5 else None
            yield mutate_bytes(encode(tree) if tree is not None else base, r), None


def _copy(tree: Any) -> Any:
    return msgspec.json.decode(msgspec.json.encode(tree))


def _fingerprint(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    last = tb[-1] if tb else None
    where = f"{Path(last.filename).name}:{last.lineno}" if last else "?"
    return f"{type(exc).__name__}@{where}"


def worker(args: tuple[list[bytes], int, int, Any]) -> dict[str, Any]:
    """Run ``n`` inputs; return counts, throughput and the first input of each finding."""
    seeds, n, seed, _ = args
    parser = Parser(max_line_bytes=MAX_LINE_BYTES, max_depth=MAX_DEPTH)
    r = random.Random(seed ^ 0x5EED)
    reasons: Counter[str] = Counter()
    findings: Counter[str] = Counter()
    examples: dict[str, bytes] = {}
    direct = events = 0
    t0 = time.perf_counter()
    for i, (line, tree) in enumerate(generate(seeds, seed)):
        if i >= n:
            break
        try:
            try:
                ev = parser.parse_unguarded(line)
            except ParseError as exc:
                reasons[exc.reason] += 1
            else:
                events += 1
                check_event(ev, parser)
            if tree is not None and r.random() < 0.25:
                direct += direct_calls(line)
        except Exception as exc:
            fp = _fingerprint(exc)
            findings[fp] += 1
            examples.setdefault(fp, line)
    return {
        "inputs": n,
        "events": events,
        "reasons": reasons,
        "direct": direct,
        "findings": findings,
        "examples": examples,
        "seconds": time.perf_counter() - t0,
    }


# -- seeds, minimising, the corpus --------------------------------------------------------------
def load_seeds(limit: int = 2000) -> tuple[list[bytes], list[str]]:
    """Real lines read at run time (never copied into the repo), plus the synthetic entries."""
    files: list[Path] = []
    for base in (SHARED / "reference", SHARED / "fixtures"):
        if base.is_dir():
            files += sorted(p for p in base.iterdir() if p.suffix in (".jsonl", ".log"))
    files += sorted((ROOT / "var" / "bench").glob("openbao-audit-*.log"))[:1]
    parser = Parser()
    seeds: list[bytes] = []
    used: list[str] = []
    for f in files:
        got = 0
        for line in f.read_bytes().splitlines():
            try:
                parser.parse(line)
                msgspec.json.decode(line)
            except (ParseError, msgspec.DecodeError):
                continue
            seeds.append(line)
            got += 1
            if got >= limit:
                break
        if got:
            used.append(f"{f.name} ({got})")
    seeds += [msgspec.json.encode(e) for e in _SYNTHETIC]
    used.append(f"synthetic ({len(_SYNTHETIC)})")
    return seeds, used


def fails(parser: Parser, line: bytes) -> str | None:
    """The finding's fingerprint for ``line``, or None when it passes."""
    try:
        run_one(parser, line)
    except Exception as exc:
        return _fingerprint(exc)
    return None


def minimise(line: bytes, fp: str) -> bytes:
    """A smaller input with the same finding: drop JSON members, then byte chunks."""
    parser = Parser(max_line_bytes=MAX_LINE_BYTES, max_depth=MAX_DEPTH)
    try:
        tree = msgspec.json.decode(line)
    except msgspec.DecodeError:
        tree = None
    if isinstance(tree, dict):
        changed = True
        while changed:
            changed = False
            for path in sorted(_paths(tree), key=len, reverse=True):
                parent = _get_parent(tree, path)
                if not isinstance(parent, dict) or path[-1] not in parent:
                    continue
                trial = _copy(tree)
                _get_parent(trial, path).pop(path[-1])
                cand = encode(trial)
                if fails(parser, cand) == fp:
                    tree, line, changed = trial, cand, True
                    break
    if isinstance(tree, dict):  # replace the seed's own strings (ids, HMACs) where possible
        for path in _paths(tree):
            parent = _get_parent(tree, path)
            if not isinstance(parent[path[-1]], str) or len(parent[path[-1]]) < 3:
                continue
            trial = _copy(tree)
            _get_parent(trial, path)[path[-1]] = "s"
            cand = encode(trial)
            if fails(parser, cand) == fp:
                tree, line = trial, cand
    chunk = max(1, len(line) // 2)
    while chunk >= 1 and len(line) > 1:
        i, progressed = 0, False
        while i < len(line):
            cand = line[:i] + line[i + chunk :]
            if cand and fails(parser, cand) == fp:
                line, progressed = cand, True
            else:
                i += chunk
        if not progressed:
            chunk //= 2
    return line


def save_corpus(examples: dict[str, bytes], corpus: Path) -> list[Path]:
    corpus.mkdir(parents=True, exist_ok=True)
    saved = []
    for fp, line in sorted(examples.items()):
        small = minimise(line, fp)
        name = f"{fp.split('@')[0].lower()}-{hashlib.sha256(small).hexdigest()[:16]}.bin"
        out = corpus / name
        out.write_bytes(small)
        saved.append(out)
    return saved


def campaign(inputs: int, workers: int, seed: int = 1) -> dict[str, Any]:
    seeds, used = load_seeds()
    share = [inputs // workers + (1 if i < inputs % workers else 0) for i in range(workers)]
    t0 = time.perf_counter()
    jobs = [(seeds, n, seed * 1_000_003 + i, None) for i, n in enumerate(share)]
    if workers == 1:
        results = [worker(jobs[0])]
    else:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            results = pool.map(worker, jobs)
    wall = time.perf_counter() - t0
    total: dict[str, Any] = {
        "inputs": 0,
        "events": 0,
        "direct": 0,
        "reasons": Counter(),
        "findings": Counter(),
        "examples": {},
    }
    for res in results:
        for k in ("inputs", "events", "direct"):
            total[k] += res[k]
        total["reasons"].update(res["reasons"])
        total["findings"].update(res["findings"])
        for fp, line in res["examples"].items():
            total["examples"].setdefault(fp, line)
    total["wall"] = wall
    total["seeds"] = used
    total["seed_lines"] = len(seeds)
    return total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__.split("\n\n")[0])
    ap.add_argument("--inputs", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--corpus", type=Path, default=CORPUS, help="where findings are saved")
    ap.add_argument("--no-save", action="store_true", help="do not write findings to the corpus")
    args = ap.parse_args(argv)
    t = campaign(args.inputs, args.workers, args.seed)
    print(f"seeds: {t['seed_lines']} lines from {', '.join(t['seeds'])}")
    print(
        f"inputs: {t['inputs']:,} in {t['wall']:.1f}s with {args.workers} workers "
        f"= {t['inputs'] / t['wall']:,.0f} inputs/s"
    )
    print(f"parsed to events: {t['events']:,}; direct identity/redactor calls: {t['direct']:,}")
    print("parse errors by reason: " + ", ".join(f"{k}={v:,}" for k, v in t["reasons"].most_common()))
    found = sum(t["findings"].values())
    print(f"unexpected exceptions / broken invariants: {found}")
    for fp, count in t["findings"].most_common():
        print(f"  {count:>8,}  {fp}")
    if found and not args.no_save:
        for path in save_corpus(t["examples"], args.corpus):
            print(f"  saved {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
