"""The detection engine against naive baselines on real OpenBao traffic, over several seeds.

Each seed gets a fresh OpenBao dev server, the organisation of :mod:`vaultwatch.demo.traffic` and
``--days`` simulated days of its work with the thirteen attack kinds after ``--warmup`` days;
the server's audit log (on the simulated clock) is replayed through :class:`detect.engine.Engine`
and the three baselines of :mod:`vaultwatch.demo.scenarios`. Prints one Markdown report per seed and
a summary line per detector. Nothing is cached: every run generates into a temporary directory.

:func:`naive_alerts` runs the same three baselines on any parsed log and returns their alerts as
plain dicts, for the organisation scoreboard (``bench/eval.py``).

    .venv/bin/python bench/naive_baselines.py --seeds 1 2 3 --days 28
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from detect.engine import Engine
from ingest.event import AuditEvent
from ingest.parse import Parser
from vaultwatch.demo.scenarios import (
    NaiveAlert,
    Report,
    evaluate,
    first_seen_baseline,
    isolation_forest_baseline,
    requests_of,
    static_threshold_baseline,
)
from vaultwatch.demo.traffic import generate, traffic_server

DAY = 86400.0
#: The baselines' names, as the scoreboard prints them.
NAIVE = ("first-seen template", "static thresholds", "IsolationForest hourly counts")


def learning_end(events: Sequence[AuditEvent], *, max_days: float = 7.0) -> float:
    """When the learning baselines stop learning: half the log's span, at most ``max_days``."""
    if not events:
        return 0.0
    first = min(e.ts for e in events)
    last = max(e.ts for e in events)
    return first + min(max_days * DAY, (last - first) / 2)


def naive_alerts(
    events: Sequence[AuditEvent], *, seed: int = 0, learn_until: float | None = None
) -> dict[str, list[dict[str, Any]]]:
    """The three naive baselines on ``events`` (a parsed log, in order): alerts as plain dicts.

    Every baseline alert counts as ``medium``. The learning baselines learn until
    ``learn_until`` (default :func:`learning_end`): the same cut for every organisation, never
    taken from the labels.
    """
    reqs = requests_of(events)
    until = learning_end(events) if learn_until is None else learn_until

    def as_dicts(name: str, made: Sequence[NaiveAlert]) -> list[dict[str, Any]]:
        return [
            {"detector": name, "title": name, "severity": a.severity, "event_ids": list(a.event_ids)}
            for a in made
        ]

    return {
        NAIVE[0]: as_dicts(NAIVE[0], first_seen_baseline(reqs, until)),
        NAIVE[1]: as_dicts(NAIVE[1], static_threshold_baseline(reqs)),
        NAIVE[2]: as_dicts(NAIVE[2], isolation_forest_baseline(reqs, until, seed=seed)),
    }


def run_seed(seed: int, days: int, warmup: int, workdir: Path) -> Report:
    server, url = traffic_server(workdir / f"bao-{seed}")
    t0 = time.monotonic()
    with server as srv:
        generated = generate(
            url,
            srv.root_token,
            srv.audit_log,
            workdir / f"audit-{seed}.log",
            days=days,
            warmup_days=warmup,
            seed=seed,
        )
    traffic_s = time.monotonic() - t0
    parser = Parser()
    with open(generated.path, "rb") as fh:
        events = [parser.parse(line) for line in fh if line.strip()]
    report = evaluate(generated, events, engine=Engine(seed=seed), seed=seed)
    report.timings = {"traffic": traffic_s, **report.timings}
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--days", type=int, default=28)
    ap.add_argument("--warmup", type=int, default=14)
    ap.add_argument("--out", type=Path, help="also write the reports here (Markdown)")
    args = ap.parse_args(argv)
    if args.days < args.warmup + 14:
        ap.error("--days must leave 14 days after --warmup for the attack schedule")
    reports: list[Report] = []
    with tempfile.TemporaryDirectory(prefix="vaultwatch-bench-") as tmp:
        for seed in args.seeds:
            report = run_seed(seed, args.days, args.warmup, Path(tmp))
            reports.append(report)
            print(f"\n## seed {seed}\n\n{report.markdown()}")
    summary = [
        "",
        "## Summary over seeds",
        "",
        "| detector | mean recall | mean false per 10k | missed (any seed) |",
    ]
    summary.append("| --- | ---: | ---: | --- |")
    names = ["engine", *reports[0].baselines]
    for name in names:
        evals = [r.engine if name == "engine" else r.baselines[name] for r in reports]
        got = [e for e in evals if e is not None]
        missed = sorted({k for e in got for k in e.missed})
        summary.append(
            f"| {name} | {statistics.mean(e.recall for e in got):.0%} "
            f"| {statistics.mean(e.false_per_10k for e in got):.2f} | {', '.join(missed) or '-'} |"
        )
    text = "\n".join(summary)
    print(text)
    if args.out:
        args.out.write_text("\n\n".join(r.markdown() for r in reports) + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
