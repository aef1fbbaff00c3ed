"""Where the time goes: the ingest path and a full replay, per stage and per detector.

``python -m bench.profile ingest`` times each step of the ingest path after the decode on the
bench input's first lines; ``python -m bench.profile replay`` replays the bench input (or any log)
with every detector's ``observe`` / ``witness`` / ``due`` and the engine's own stages wrapped in
timers, and prints the cost per event of each, in microseconds, with call counts. With
``--flame DIR`` (and py-spy installed in the venv) each profile is also recorded as a flame graph
(``DIR/<name>.svg``) and as collapsed stacks (``DIR/<name>.txt``), from a separate process.

The timers cost about a quarter of a microsecond per wrapped call; the report subtracts that
overhead (measured here) from each figure, so small figures are approximate. Compare figures of
the same run: the machine is shared.
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import Any

from bench.common import load_average, many_identities_log


class _Timers:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        seconds, calls = self.seconds, self.calls
        seconds.setdefault(name, 0.0)
        calls.setdefault(name, 0)
        clock = time.perf_counter

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[name] += clock() - t0
                calls[name] += 1

        return timed


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


def report_replay(path: Path) -> None:
    over = _overhead()
    t_null = profile_null(path)
    out = profile_replay(path)
    t: _Timers = out["timers"]
    n = out["events"]
    total = out["total"]
    print(f"replay profile of {path.name} ({load_average()})")
    print(f"  lines {out['lines']}, events {n}, identities {out['result'].identities}")
    print(f"  timer overhead {over * 1e6:.3f} us per wrapped call (subtracted below)")
    print(f"  replay, timers on: {total:.1f} s = {total / n * 1e6:.1f} us/event")
    print(
        f"  replay, null engine: {t_null:.1f} s = {t_null / n * 1e6:.1f} us/event (read, order, parse, dedup)"
    )
    print("  nested: _process holds every other engine stage; _observe holds the detectors' observe;")
    print("  _behave holds behaviour.observe, _signals, _queue_row and the _score_model calls made there")
    print(f"  {'stage':58s} {'calls':>9s} {'us/event':>9s} {'us/call':>8s} {'share':>6s}")
    rows = []
    for name, sec in t.seconds.items():
        calls = t.calls[name]
        net = max(sec - calls * over, 0.0)
        rows.append((net, name, calls))
    for net, name, calls in sorted(rows, reverse=True):
        per_call = net / calls * 1e6 if calls else 0.0
        print(f"  {name:58s} {calls:9d} {net / n * 1e6:9.2f} {per_call:8.2f} {net / total * 100:5.1f}%")


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


def _flame(name: str, argv: list[str], out: Path) -> None:
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        print("py-spy is not installed: no flame graph (pip install py-spy)")
        return
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "bench.profile", *argv]
    env = dict(os.environ, VAULTWATCH_PROFILE_CHILD="1")
    for fmt, suffix in (("flamegraph", "svg"), ("raw", "txt")):
        target = out / f"{name}.{suffix}"
        subprocess.run(
            [spy, "record", "-r", "200", "-f", fmt, "-o", str(target), "--", *cmd], env=env, check=True
        )
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
