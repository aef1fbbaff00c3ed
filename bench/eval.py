"""The detection scoreboard: N generated organisations, every detector, the worst organisation first.

``make eval`` (``python -m bench.eval``) draws ``--orgs`` organisations from ``--seed`` with
:func:`vaultwatch.demo.orgs.generate_org` (each a real OpenBao server driven from a random
deployment spec; logs cached under ``var/eval/<spec_hash>/``), and runs on each log:

* **vaultwatch** with its default configuration, untouched: the production ``vaultwatch replay``
  command, as a subprocess, exactly as a user would run it;
* the three naive baselines of :mod:`bench.naive_baselines`;
* the two peer rule sets of :mod:`bench.peer_rules` (Datadog's out-of-the-box Vault rules,
  HashiCorp's Day-1 audit alerts), re-implemented from their published logic.

Each is scored with :mod:`bench.eval_score` against the generator's labels (never against any
detector's output) and the tables, per threat kind and per organisation, go to stdout,
``test-artifacts/eval.md`` and ``test-artifacts/eval.json``. The headline is the **worst**
organisation (lowest recall, then most false alerts) and the median one.

    .venv/bin/python -m bench.eval                       # 20 organisations
    .venv/bin/python -m bench.eval --orgs 3 --size small --jobs 2
    .venv/bin/python -m bench.eval --log audit.log --labels labels.json   # score one log
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ingest.errors import ParseError
from ingest.event import AuditEvent
from ingest.parse import Parser
from vaultwatch.demo.orgs import generate_org

from .eval_score import Labels, OrgScore, load_labels, score_org, summarize
from .naive_baselines import NAIVE, naive_alerts
from .peer_rules import DATADOG, HASHICORP, datadog_rules, hashicorp_rules

__all__ = [
    "DETECTORS",
    "OrgResult",
    "ParsedLog",
    "evaluate_org",
    "main",
    "read_log",
    "render_markdown",
    "run_vaultwatch",
    "score_log",
    "to_json",
]

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "var" / "eval"
ARTIFACTS = ROOT / "test-artifacts"
VAULTWATCH = "vaultwatch"
DETECTORS: tuple[str, ...] = (VAULTWATCH, *NAIVE, DATADOG, HASHICORP)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)  # noqa: T201 - progress output


# -- one log ----------------------------------------------------------------------------------
@dataclass
class ParsedLog:
    """A log's parsed events (in file order) and the request id of every entry (None if none)."""

    events: list[AuditEvent]
    request_ids: list[str | None]
    unparsed: int = 0


def _raw_request_id(line: bytes) -> str | None:
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    req = entry.get("request") if isinstance(entry, dict) else None
    rid = req.get("id") if isinstance(req, dict) else None
    return rid if isinstance(rid, str) else None


def read_log(path: str | Path) -> ParsedLog:
    """Parse every line of an audit log; lines that do not parse keep their request id."""
    parser = Parser()
    out = ParsedLog([], [])
    with open(path, "rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                ev = parser.parse(line)
            except ParseError:
                out.unparsed += 1
                out.request_ids.append(_raw_request_id(line))
                continue
            out.events.append(ev)
            out.request_ids.append(ev.request_id)
    return out


def run_vaultwatch(
    audit_path: str | Path, alerts_out: str | Path, *, src: str | Path | None = None
) -> list[dict[str, Any]]:
    """``vaultwatch replay FILE --alerts-out PATH`` with the default configuration; its alerts.

    ``src``, when given, is another source tree of vaultwatch to run instead of the installed one
    (e.g. ``git archive HEAD`` unpacked somewhere, to measure *before* a working-tree change).
    """
    cmd = [
        sys.executable,
        "-c",
        "import sys; from vaultwatch.cli import main; sys.exit(main(sys.argv[1:]))",
        "replay",
        str(Path(audit_path).resolve()),
        "--alerts-out",
        str(Path(alerts_out).resolve()),
        "--json",
        "--no-progress",
    ]
    env = dict(os.environ)
    cwd = None
    if src is not None:
        # ``python -c`` puts the working directory first on sys.path: run from the other tree, or
        # the checkout the command was started in would shadow it.
        cwd = str(Path(src).resolve())
        env["PYTHONPATH"] = os.pathsep.join([cwd, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env, cwd=cwd)
    if done.returncode != 0:
        raise RuntimeError(f"vaultwatch replay failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    with open(alerts_out, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _to_ts(value: Any) -> float | None:
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def sim_start_of(spec: dict[str, Any]) -> float | None:
    """The simulated start named by the generator's spec (the organisation's setup precedes it)."""
    for key in ("start", "sim_start"):
        start = _to_ts(spec.get(key))
        if start is not None:
            return start
    return None


def score_log(
    org: str,
    audit_path: str | Path,
    labels: Labels,
    *,
    workdir: str | Path,
    seed: int = 0,
    sim_start: float | None = None,
    detectors: Sequence[str] = DETECTORS,
    vaultwatch_src: str | Path | None = None,
) -> dict[str, OrgScore]:
    """Run every detector on one log and score it; ``workdir`` receives vaultwatch's alerts."""
    parsed = read_log(audit_path)
    setup = (
        {e.request_id for e in parsed.events if e.request_id and e.ts < sim_start}
        if sim_start is not None
        else set()
    )
    scores: dict[str, OrgScore] = {}

    def score(name: str, alerts: list[dict[str, Any]], seconds: float) -> None:
        s = score_org(alerts, parsed.request_ids, labels, org=org, detector=name, setup_ids=setup)
        s.seconds = seconds
        scores[name] = s

    if VAULTWATCH in detectors:
        t0 = time.monotonic()
        alerts = run_vaultwatch(
            audit_path, Path(workdir) / f"{org}-vaultwatch-alerts.jsonl", src=vaultwatch_src
        )
        score(VAULTWATCH, alerts, time.monotonic() - t0)
    if any(n in detectors for n in NAIVE):
        t0 = time.monotonic()
        made = naive_alerts(parsed.events, seed=seed)
        each = (time.monotonic() - t0) / len(made)
        for name, alerts in made.items():
            if name in detectors:
                score(name, alerts, each)
    if DATADOG in detectors:
        t0 = time.monotonic()
        alerts = datadog_rules(parsed.events)
        score(DATADOG, alerts, time.monotonic() - t0)
    if HASHICORP in detectors:
        t0 = time.monotonic()
        alerts = hashicorp_rules(parsed.events)
        score(HASHICORP, alerts, time.monotonic() - t0)
    return {name: scores[name] for name in detectors if name in scores}


# -- one organisation -------------------------------------------------------------------------
@dataclass
class OrgResult:
    """One generated organisation and every detector's score on it."""

    org: str
    seed: int
    spec_hash: str
    entries: int
    threats: int
    generate_seconds: float
    score_seconds: float
    scores: dict[str, OrgScore] = field(default_factory=dict)
    spec_path: str = ""


def evaluate_org(
    seed: int,
    *,
    size: str | None = None,
    days: int | None = None,
    cache: str | Path = CACHE,
    detectors: Sequence[str] = DETECTORS,
    vaultwatch_src: str | Path | None = None,
) -> OrgResult:
    """Generate (or reuse) the organisation of ``seed`` and score every detector on it."""
    org = f"org-{seed}"
    _say(f"  {org}: generating (size {size or 'default'})")
    t0 = time.monotonic()
    made = generate_org(seed, size=size, days=days, workdir=Path(cache))
    gen_s = time.monotonic() - t0
    labels = load_labels(made.labels_path)
    spec = json.loads(Path(made.spec_path).read_text())
    sim_start = sim_start_of(spec if isinstance(spec, dict) else {})
    skipped = (
        f" ({len(labels.not_executed)} planned threats made no request: not scored)"
        if labels.not_executed
        else ""
    )
    _say(f"  {org}: {made.spec_hash} ready in {gen_s:.0f}s, {len(labels.threats)} threats{skipped}; scoring")
    t1 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"vaultwatch-eval-{seed}-") as tmp:
        scores = score_log(
            org,
            made.audit_path,
            labels,
            workdir=tmp,
            seed=seed,
            sim_start=sim_start,
            detectors=detectors,
            vaultwatch_src=vaultwatch_src,
        )
    first = next(iter(scores.values()))
    return OrgResult(
        org,
        seed,
        made.spec_hash,
        first.entries,
        len(labels.threats),
        gen_s,
        time.monotonic() - t1,
        scores,
        str(made.spec_path),
    )


# -- the report -------------------------------------------------------------------------------
def _pct(x: float) -> str:
    return f"{x:.0%}"


def _num(x: float | None, fmt: str = "g") -> str:
    return "-" if x is None else format(x, fmt)


def render_markdown(results: Sequence[OrgResult], meta: dict[str, Any]) -> str:
    """The scoreboard as Markdown: headline (worst and median organisation), per kind, per org."""
    names = [d for d in DETECTORS if all(d in r.scores for r in results)]
    days = f"; {meta['days']} days" if meta.get("days") else ""
    size = meta.get("size") or "default"
    seeds = ", ".join(str(r.seed) for r in results)
    entries = sum(r.entries for r in results)
    threats = sum(r.threats for r in results)
    lines = [
        "# Detection scoreboard",
        "",
        f"{len(results)} generated organisations (seeds {seeds}; size {size}{days}), "
        f"{entries} audit entries, {threats} threat instances. vaultwatch "
        f"({meta.get('vaultwatch_src') or 'installed'}) runs with its default configuration, "
        f"untouched. Wall time {meta.get('seconds', 0):.0f}s.",
        "",
        "Detected = an alert at medium or above sharing an event id with the threat instance (`any` = at "
        "any severity). Delay = events from the first/triggering request of the instance to the first "
        "one in a detecting alert. False alerts = medium+ alerts on benign events only, per 10k benign "
        "entries (setup-only alerts are not counted). Worst organisation = lowest recall, then most "
        "false alerts.",
        "",
        "## Headline: worst and median organisation",
        "",
        "| detector | worst org | recall | recall (any) | false/10k | missed there | median recall "
        "| median false/10k | median delay |",
        "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for name in names:
        scores = [r.scores[name] for r in results]
        s = summarize(scores)
        worst = next(x for x in scores if x.org == s.worst_org)
        lines.append(
            f"| {name} | {s.worst_org} | {_pct(s.worst_recall)} | {_pct(worst.recall_any)} "
            f"| {s.worst_false_per_10k:.2f} | {', '.join(s.worst_missed) or '-'} | {_pct(s.median_recall)} "
            f"| {s.median_false_per_10k:.2f} | {_num(s.median_delay)} |"
        )
    lines += ["", "## Per threat kind (detected / instances, median delay in events)", ""]
    kinds = sorted({o.kind for r in results for s in r.scores.values() for o in s.outcomes})
    lines.append("| kind | " + " | ".join(names) + " |")
    lines.append("| --- |" + " ---: |" * len(names))
    summaries = {n: summarize([r.scores[n] for r in results]) for n in names}
    for kind in kinds:
        cells = []
        for n in names:
            ks = summaries[n].kinds.get(kind)
            if ks is None:
                cells.append("-")
                continue
            cell = f"{ks.detected}/{ks.instances}"
            if ks.median_delay is not None:
                cell += f" ({ks.median_delay:g})"
            if ks.detected_any > ks.detected:
                cell += f" +{ks.detected_any - ks.detected} low"
            cells.append(cell)
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    lines += ["", "## Per organisation (recall · false alerts per 10k benign entries)", ""]
    lines.append("| org | spec | entries | threats | " + " | ".join(names) + " |")
    lines.append("| --- | --- | ---: | ---: |" + " ---: |" * len(names))
    for r in results:
        cells = [f"{_pct(r.scores[n].recall)} · {r.scores[n].false_per_10k:.2f}" for n in names]
        lines.append(f"| {r.org} | {r.spec_hash} | {r.entries} | {r.threats} | " + " | ".join(cells) + " |")
    lines += ["", "## Misses and false alerts of vaultwatch, per organisation", ""]
    for r in results:
        vw = r.scores.get(VAULTWATCH)
        if vw is None:
            continue
        missed = ", ".join(
            f"{o.instance}" + (" (low only)" if o.detected_any else "") for o in vw.outcomes if not o.detected
        )
        top = ", ".join(f"{k} {v}" for k, v in list(vw.false_by_rule.items())[:6])
        lines.append(
            f"- {r.org}: missed {missed or 'none'}; false alerts {vw.false_alerts} ({top or '-'}); "
            f"setup-only alerts {vw.setup_alerts}"
        )
    lines.append("")
    return "\n".join(lines)


def to_json(results: Sequence[OrgResult], meta: dict[str, Any]) -> dict[str, Any]:
    """The scoreboard as plain JSON: meta, per-detector summary, and every organisation's scores."""
    names = [d for d in DETECTORS if all(d in r.scores for r in results)]
    return {
        "meta": meta,
        "summary": {n: summarize([r.scores[n] for r in results]).to_dict() for n in names},
        "orgs": [
            {
                "org": r.org,
                "seed": r.seed,
                "spec_hash": r.spec_hash,
                "entries": r.entries,
                "threats": r.threats,
                "generate_seconds": round(r.generate_seconds, 1),
                "score_seconds": round(r.score_seconds, 1),
                "scores": {n: s.to_dict() for n, s in r.scores.items()},
            }
            for r in results
        ],
    }


def _headline(results: Sequence[OrgResult]) -> str:
    out = []
    for name in [d for d in DETECTORS if all(d in r.scores for r in results)]:
        s = summarize([r.scores[name] for r in results])
        out.append(
            f"{name:32} worst {s.worst_org:>8}: recall {_pct(s.worst_recall):>4} false/10k "
            f"{s.worst_false_per_10k:7.2f} | median recall {_pct(s.median_recall):>4} false/10k "
            f"{s.median_false_per_10k:7.2f} delay {_num(s.median_delay)}"
        )
    return "\n".join(out)


def _task(
    seed: int, size: str | None, days: int | None, cache: str, src: str | None, detectors: Sequence[str]
) -> OrgResult:
    return evaluate_org(seed, size=size, days=days, cache=cache, vaultwatch_src=src, detectors=detectors)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--orgs", type=int, default=20, help="organisations to generate (default 20)")
    ap.add_argument("--seed", type=int, default=1, help="first organisation's seed (then seed+1, ...)")
    ap.add_argument("--seeds", type=int, nargs="+", help="exactly these seeds (instead of --orgs/--seed)")
    ap.add_argument(
        "--size", choices=("small", "medium", "large"), help="organisation size (generator default)"
    )
    ap.add_argument("--days", type=int, help="simulated days (generator default for the size)")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="organisations at once")
    ap.add_argument("--cache", type=Path, default=CACHE, help="generated logs cache (default var/eval)")
    ap.add_argument("--out", type=Path, default=ARTIFACTS, help="directory for eval.md and eval.json")
    ap.add_argument(
        "--vaultwatch-src",
        type=Path,
        help="run vaultwatch from this source tree (e.g. `git archive HEAD` unpacked), not the installed one",
    )
    ap.add_argument(
        "--log", type=Path, help="score this one audit log instead of generating (needs --labels)"
    )
    ap.add_argument("--labels", type=Path, help="labels JSON for --log")
    ap.add_argument(
        "--detectors",
        nargs="+",
        choices=DETECTORS,
        default=list(DETECTORS),
        metavar="NAME",
        help=f"score only these (default all: {', '.join(DETECTORS)})",
    )
    args = ap.parse_args(argv)
    detectors = tuple(args.detectors)
    t0 = time.monotonic()
    src = str(args.vaultwatch_src) if args.vaultwatch_src else None
    results: list[OrgResult] = []
    if args.log:
        if not args.labels:
            ap.error("--log needs --labels")
        labels = load_labels(args.labels)
        with tempfile.TemporaryDirectory(prefix="vaultwatch-eval-") as tmp:
            scores = score_log(
                args.log.stem,
                args.log,
                labels,
                workdir=tmp,
                seed=args.seed,
                vaultwatch_src=src,
                detectors=detectors,
            )
        first = next(iter(scores.values()))
        results.append(
            OrgResult(args.log.stem, args.seed, "-", first.entries, len(labels.threats), 0.0, 0.0, scores)
        )
    else:
        seeds = args.seeds or [args.seed + i for i in range(args.orgs)]
        _say(f"eval: {len(seeds)} organisations, {args.jobs} at a time, cache {args.cache}")
        if args.jobs <= 1:
            for n, seed in enumerate(seeds, 1):
                results.append(
                    evaluate_org(
                        seed,
                        size=args.size,
                        days=args.days,
                        cache=args.cache,
                        vaultwatch_src=src,
                        detectors=detectors,
                    )
                )
                _say(f"[{n}/{len(seeds)}] org-{seed} done ({time.monotonic() - t0:.0f}s)")
        else:
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx) as pool:
                futures = {
                    pool.submit(_task, seed, args.size, args.days, str(args.cache), src, detectors): seed
                    for seed in seeds
                }
                for n, fut in enumerate(as_completed(futures), 1):
                    results.append(fut.result())
                    _say(f"[{n}/{len(seeds)}] org-{futures[fut]} done ({time.monotonic() - t0:.0f}s)")
        results.sort(key=lambda r: r.seed)
    meta = {
        "orgs": len(results),
        "seeds": [r.seed for r in results],
        "vaultwatch_src": src or "installed",
        "size": args.size,
        "days": args.days,
        "seconds": round(time.monotonic() - t0, 1),
        "generate_seconds_median": statistics.median(r.generate_seconds for r in results),
    }
    text = render_markdown(results, meta)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "eval.md").write_text(text)
    (args.out / "eval.json").write_text(json.dumps(to_json(results, meta), indent=1) + "\n")
    print(text)  # noqa: T201
    print("\n" + _headline(results))  # noqa: T201
    _say(f"eval: wrote {args.out / 'eval.md'} and eval.json in {meta['seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
