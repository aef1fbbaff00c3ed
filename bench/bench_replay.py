"""Replay throughput against parse-only throughput on the same log, in the same run.

``vaultwatch replay`` = read + parse + dedup + the detection engine (rules and behaviour). The
target is a replay rate of at least 0.5 of the parse-only rate. Also reported: the engine alone
with behaviour only, replay through an engine that does nothing (what reading, ordering and
dedup cost on their own: the best ratio detection could ever reach), and the baseline state size
per identity (msgpack bytes).
"""

from __future__ import annotations

import importlib
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from bench.common import real_openbao_log, scaled_lines
from detect.alert import Alert
from detect.engine import Engine
from ingest.event import AuditEvent
from ingest.parse import Parser
from vaultwatch.service.replay import replay


class _NullEngine(Engine):
    """An engine that judges nothing: replay's own cost (read, parse, order, dedup)."""

    def process(self, event: AuditEvent) -> list[Alert]:
        return []

    def flush(self, now: float) -> list[Alert]:
        return []


def _best(fn: object, repeat: int = 2) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - t0)
    return best


def main(n: int = 100_000, log: str | None = None) -> dict[str, float]:
    """Measure on ``log`` (any audit log) or on ``n`` lines of a real OpenBao log."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "audit.log"
        if log:
            path = Path(log)
            n = sum(1 for line in path.read_bytes().splitlines() if line.strip())
        else:
            lines = scaled_lines(real_openbao_log(), n)
            path.write_bytes(b"\n".join(lines) + b"\n")

        def parse_only() -> None:
            parse = Parser().parse
            with open(path, "rb") as f:
                for line in f:
                    parse(line)

        def replay_full() -> None:
            replay([path], engine=Engine(seed=0))

        def replay_behaviour() -> None:
            replay([path], engine=Engine(seed=0, detectors=[]))

        def replay_null() -> None:
            replay([path], engine=_NullEngine(seed=0, detectors=[]))

        Engine(seed=0)  # imports (scikit-learn, rules) outside the timings
        importlib.import_module("sklearn.ensemble")
        # Interleaved, best of three: on a shared machine, load shifts between runs.
        t_parse = t_full = t_beh = t_null = float("inf")
        for _ in range(3):
            t_parse = min(t_parse, _best(parse_only, 1))
            t_full = min(t_full, _best(replay_full, 1))
            t_beh = min(t_beh, _best(replay_behaviour, 1))
            t_null = min(t_null, _best(replay_null, 1))
        tracemalloc.start()
        eng = Engine(seed=0, detectors=[])
        replay([path], engine=eng)
        in_memory = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        sizes = [eng.identity_summary(k)["bytes"] for k in eng.identities()]
    out = {
        "lines": float(n),
        "parse_lines_per_s": n / t_parse,
        "replay_lines_per_s": n / t_full,
        "replay_behaviour_only_lines_per_s": n / t_beh,
        "replay_null_engine_lines_per_s": n / t_null,
        "ratio_replay_to_parse": t_parse / t_full,
        "ratio_behaviour_only_to_parse": t_parse / t_beh,
        "ratio_null_engine_to_parse": t_parse / t_null,
        "detection_us_per_line": (t_full - t_null) / n * 1e6,
        "identities": float(len(sizes)),
        "median_bytes_per_identity": float(statistics.median(sizes)) if sizes else 0.0,
        "max_bytes_per_identity": float(max(sizes)) if sizes else 0.0,
        "traced_engine_memory_mb": in_memory / 1e6,
    }
    for k, v in out.items():
        print(f"{k:40s} {v:14.2f}")
    target = "meets" if out["ratio_replay_to_parse"] >= 0.5 else "below"
    print(f"replay/parse ratio {out['ratio_replay_to_parse']:.2f} ({target} the 0.5 target)")
    return out


if __name__ == "__main__":
    main(log=sys.argv[1] if len(sys.argv) > 1 else None)
