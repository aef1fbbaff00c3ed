"""Where the time goes: the ingest path and a full replay, per stage and per detector.

``python -m bench.profile ingest`` times each step of the ingest path after the decode on the
bench input's first lines; ``python -m bench.profile replay`` replays the bench input (or any log)
with every detector's ``observe`` / ``witness`` / ``due`` and the engine's own stages wrapped in
timers, and prints the cost per event of each, in microseconds, with call counts. With
``--flame DIR`` (and py-spy installed in the venv) each profile is also recorded as a flame graph
(``DIR/<name>.svg``) and as collapsed stacks (``DIR/<name>.txt``), from a separate process.

The timers cost about a quarter of a microsecond per wrapped call; the report subtracts that
overhead (measured here) from each figure, so small figures are approximate. Each timer also
keeps its *own* time (its calls' time less that of the timed calls made inside them), so the
own times add up to the whole without counting a nested stage twice. Compare figures of the same
run: the machine is shared. ``python -m bench`` calls :func:`replay_costs`,
:func:`ingest_steps` and :func:`flame` for a row that misses its target.
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import Any

from bench.common import load_average, many_identities_log


class _Timers:
    """Timers around calls: total seconds, own seconds (less the timed calls inside) and calls."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.own: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        #: Timed calls made directly inside each timer's calls.
        self.inner_calls: dict[str, int] = {}
        # Per thread, per open timed call: its name and the time spent in timed calls inside it.
        self._local = threading.local()

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        seconds, own, calls, nested, local = self.seconds, self.own, self.calls, self.inner_calls, self._local
        seconds.setdefault(name, 0.0)
        own.setdefault(name, 0.0)
        calls.setdefault(name, 0)
        nested.setdefault(name, 0)
        clock = time.perf_counter

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            inner: list[float] = local.__dict__.setdefault("inner", [])
            names: list[str] = local.__dict__.setdefault("names", [])
            inner.append(0.0)
            names.append(name)
            t0 = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                dt = clock() - t0
                seconds[name] += dt
                own[name] += dt - inner.pop()
                names.pop()
                if inner:
                    inner[-1] += dt
                    nested[names[-1]] += 1
                calls[name] += 1

        return timed

    def net_own(self, overhead: float) -> dict[str, float]:
        """Own seconds of each timer less the overhead of the timed calls made inside it (most of
        a wrapper's cost falls outside the timed window, in its caller's time; never below 0)."""
        return {k: max(v - self.inner_calls[k] * overhead, 0.0) for k, v in self.own.items()}


def _overhead() -> float:
    """Seconds one timer wrapper adds to a call (median of a few measurements)."""
    t = _Timers()

    def g(a: int, b: int) -> None:
        return None

    f = t.wrap("x", g)
    n = 200_000
    out = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            f(1, 2)
        t1 = time.perf_counter()
        for _ in range(n):
            g(1, 2)
        t2 = time.perf_counter()
        out.append(((t1 - t0) - (t2 - t1)) / n)
    return sorted(out)[len(out) // 2]


def profile_replay(path: Path) -> dict[str, Any]:
    """One replay of ``path`` with timers around every detector and the engine's stages."""
    from detect.engine import Engine
    from vaultwatch.service.replay import replay

    eng = Engine(seed=0)
    t = _Timers()
    for det in eng.detectors:
        name = getattr(det, "name", type(det).__name__)
        for method in ("observe", "witness", "due"):
            fn = getattr(det, method, None)
            if fn is not None:
                setattr(det, method, t.wrap(f"detector {name}.{method}", fn))
    # Engine stages (exclusive of one another, except where noted in the report).
    for stage in (
        "_process",
        "_observe",
        "_route",
        "_behave",
        "_signals",
        "_queue_row",
        "_finding",
        "_habit",
        "_unanswered",
        "_expire_pending",
        "_score_model",
        "_prune",
    ):
        setattr(eng, stage, t.wrap(f"engine {stage}", getattr(eng, stage)))
    nets = eng._networks  # noqa: SLF001 - profiling reaches in on purpose
    nets.record = t.wrap("engine networks.record", nets.record)  # type: ignore[method-assign]
    beh = eng._behaviour  # noqa: SLF001
    beh.observe = t.wrap("behaviour.observe (in _behave)", beh.observe)  # type: ignore[method-assign]
    t0 = time.perf_counter()
    result = replay([path], engine=eng)
    total = time.perf_counter() - t0
    return {"timers": t, "total": total, "events": result.events, "lines": result.lines, "result": result}


def profile_null(path: Path) -> float:
    """Seconds of a replay of ``path`` through an engine that judges nothing."""
    from bench.bench_replay import _NullEngine
    from vaultwatch.service.replay import replay

    t0 = time.perf_counter()
    replay([path], engine=_NullEngine(seed=0, detectors=[]))
    return time.perf_counter() - t0


def replay_costs(path: Path, t_null: float | None = None) -> dict[str, Any]:
    """A timed replay of ``path`` (and a null-engine one unless ``t_null`` is given): the whole,
    the replay's own part (``null``: read, order, parse, dedup) and each stage's own seconds
    (``own``, timer overhead subtracted; with ``null`` they add up to about ``total``)."""
    over = _overhead()
    null = profile_null(path) if t_null is None else t_null
    out = profile_replay(path)
    t: _Timers = out["timers"]
    own = t.net_own(over)
    # What the timers do not cover: the engine's process around its stages, and the timers.
    covered = sum(own.values())
    return {
        "events": out["events"],
        "lines": out["lines"],
        "identities": out["result"].identities,
        "total": out["total"],
        "null": null,
        "overhead_us": over * 1e6,
        "own": own,
        "seconds": dict(t.seconds),
        "calls": dict(t.calls),
        "uncovered": max(out["total"] - null - covered, 0.0),
    }


def format_replay(path: Path, c: dict[str, Any]) -> str:
    """:func:`replay_costs` as the report ``python -m bench.profile replay`` prints."""
    n, total = c["events"], c["total"]
    lines = [f"replay profile of {path.name} ({load_average()})"]
    lines.append(f"  lines {c['lines']}, events {n}, identities {c['identities']}")
    lines.append(f"  timer overhead {c['overhead_us']:.3f} us per wrapped call (taken from the own column)")
    lines.append(f"  replay, timers on: {total:.1f} s = {total / n * 1e6:.1f} us/event")
    lines.append(
        f"  replay, null engine: {c['null']:.1f} s = {c['null'] / n * 1e6:.1f} us/event "
        "(read, order, parse, dedup)"
    )
    lines.append("  nested: _process holds every other engine stage; _observe holds the detectors' observe;")
    lines.append(
        "  _behave holds behaviour.observe, _signals, _queue_row and the _score_model calls made there"
    )
    lines.append(
        "  us/event, us/call: whole calls, timers inside included; own us/ev: less the timed calls made"
    )
    lines.append("  inside and their timers' overhead (the own column adds up, with the null engine)")
    lines.append(
        f"  {'stage':58s} {'calls':>9s} {'us/event':>9s} {'us/call':>8s} {'own us/ev':>9s} {'share':>6s}"
    )
    for name in sorted(c["seconds"], key=lambda k: -c["own"][k]):
        calls = c["calls"][name]
        net = c["seconds"][name]
        own = c["own"][name]
        per_call = net / calls * 1e6 if calls else 0.0
        lines.append(
            f"  {name:58s} {calls:9d} {net / n * 1e6:9.2f} {per_call:8.2f} {own / n * 1e6:9.2f}"
            f" {own / total * 100:5.1f}%"
        )
    return "\n".join(lines)


def report_replay(path: Path) -> None:
    print(format_replay(path, replay_costs(path)))


class _TimedDecoder:
    """A parser's decoder with its ``decode`` timed (the decoder's type does not take attributes)."""

    def __init__(self, inner: Any, decode: Callable[..., Any]) -> None:
        self._inner = inner
        self.decode = decode


def ingest_steps(lines: list[bytes], rounds: int = 3) -> dict[str, float]:
    """Microseconds per line of each step of the ingest path (parse + dedup) on ``lines``: the
    decode, the clean-entry build, identity resolutions, the header check, the general (redacting)
    path, dedup, and the rest of ``parse``; own times (best of ``rounds``), timer overhead
    subtracted."""
    from ingest.dedup import Deduplicator
    from ingest.parse import Parser

    over = _overhead()
    best: dict[str, float] = {}
    for _ in range(rounds):
        t = _Timers()
        parser = Parser()
        dec = parser._decoder  # noqa: SLF001 - profiling reaches in on purpose
        parser._decoder = _TimedDecoder(dec, t.wrap("decode (msgspec)", dec.decode))  # type: ignore[assignment]  # noqa: SLF001
        for name, label in (
            ("_build_clean", "build the event (clean entry)"),
            ("_build_general", "build the event (general path: redaction)"),
            ("_resolve_cached", "identity resolution (cache miss)"),
            ("_headers_clean", "audited-header check"),
            ("_strip", "prefix strip"),
        ):
            setattr(parser, name, t.wrap(label, getattr(parser, name)))
        parse = t.wrap("parse (the rest: guard, size check)", parser.parse)
        dedup = t.wrap("dedup", Deduplicator().is_duplicate)
        gc.collect()
        for line in lines:
            dedup(parse(line))
        for k, v in t.net_own(over).items():
            us = v / len(lines) * 1e6
            best[k] = min(best.get(k, us), us)
    return best


def report_ingest(n: int = 60_000) -> None:
    import msgspec

    from ingest.dedup import Deduplicator
    from ingest.event import Entry
    from ingest.parse import Parser

    with open(many_identities_log(), "rb") as fh:
        lines = list(islice(fh, n))
    dec = msgspec.json.Decoder(Entry)

    def best(fn: Callable[[], None], rounds: int = 5) -> float:
        out = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
        return min(out) / len(lines) * 1e6

    def bare() -> None:
        d = dec.decode
        for line in lines:
            d(line)

    def parse() -> None:
        p = Parser().parse
        for line in lines:
            p(line)

    def full() -> None:
        p = Parser().parse
        dd = Deduplicator().is_duplicate
        for line in lines:
            dd(p(line))

    gc.collect()
    b, p, f = best(bare), best(parse), best(full)
    print(f"ingest profile, {len(lines)} lines ({load_average()})")
    print(
        f"  bare decode {b:.2f} us/line, parse {p:.2f}, parse + dedup {f:.2f}; after the decode {f - b:.2f}"
    )
    print(f"  ratio ingest / bare {b / f:.2f}")
    print("  steps (own us/line, best of 3, timers on):")
    for name, us in sorted(ingest_steps(lines).items(), key=lambda kv: -kv[1]):
        print(f"    {name:50s} {us:7.2f}")


def py_spy() -> str | None:
    """The py-spy executable (the venv's first), or None when it is not installed."""
    return shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")


def flame(name: str, argv: list[str], out: Path) -> list[Path]:
    """Flame graph and collapsed stacks of ``python -m bench.profile ARGV`` (run plain, under
    py-spy) as ``out/<name>.svg`` and ``.txt``; nothing when py-spy is not installed."""
    spy = py_spy()
    if spy is None:
        return []
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "bench.profile", *argv]
    env = dict(os.environ, VAULTWATCH_PROFILE_CHILD="1")
    written: list[Path] = []
    for fmt, suffix in (("flamegraph", "svg"), ("raw", "txt")):
        target = out / f"{name}.{suffix}"
        subprocess.run(
            [spy, "record", "-r", "200", "-f", fmt, "-o", str(target), "--", *cmd],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        written.append(target)
    return written


def _flame(name: str, argv: list[str], out: Path) -> None:
    if py_spy() is None:
        print("py-spy is not installed: no flame graph (pip install py-spy)")
        return
    for target in flame(name, argv, out):
        print(f"wrote {target}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("ingest", "replay"))
    ap.add_argument("log", nargs="?", help="replay: any audit log (default: the many-identities input)")
    ap.add_argument("--flame", metavar="DIR", help="also record py-spy flame graphs into DIR")
    ap.add_argument("--name", help="file name of the flame graph (default: the profile's name)")
    args = ap.parse_args()
    path = Path(args.log) if args.log else many_identities_log()
    if args.flame and not os.environ.get("VAULTWATCH_PROFILE_CHILD"):
        child = [args.what, str(path)]
        _flame(args.name or args.what, child, Path(args.flame))
    if os.environ.get("VAULTWATCH_PROFILE_CHILD"):
        _plain(args.what, path)  # under py-spy: no timers, nothing printed
    elif args.what == "ingest":
        report_ingest()
    else:
        report_replay(path)
    return 0


def _plain(what: str, path: Path) -> None:
    """What the flame graph samples: ten passes of the ingest path, or one plain full replay."""
    if what == "replay":
        from detect.engine import Engine
        from vaultwatch.service.replay import replay

        replay([path], engine=Engine(seed=0))
        return
    from ingest.dedup import Deduplicator
    from ingest.parse import Parser

    with open(path, "rb") as f:
        lines = list(islice(f, 60_000))
    for _ in range(10):
        p = Parser().parse
        dd = Deduplicator().is_duplicate
        for line in lines:
            dd(p(line))


if __name__ == "__main__":
    sys.exit(main())
