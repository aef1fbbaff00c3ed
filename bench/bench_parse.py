"""Parse throughput: the full ingest path against a bare msgspec decode of the same bytes.

Target (issue 17): the full path (parse + identity + outcome + redaction + dedup) runs at 0.6 or
more of a bare ``msgspec`` decode of the same lines into the same struct, measured in the same
run. The lines are real OpenBao lines from the generated organisations (:func:`many_identities_log`).
"""

from __future__ import annotations

import json
import statistics
from itertools import islice

import msgspec

from bench.common import Row, explanations, many_identities_log, rate, write_artifact
from ingest.dedup import Deduplicator
from ingest.event import Entry
from ingest.parse import Parser

NAME = "ingest path / bare msgspec decode into the same struct"
TARGET = 0.6


def _lines(n: int) -> list[bytes]:
    with open(many_identities_log(), "rb") as f:
        return list(islice(f, n))


def measure(n: int = 60_000) -> dict[str, float]:
    lines = _lines(n)
    decoder = msgspec.json.Decoder(Entry)

    def bare() -> int:
        dec = decoder.decode
        for line in lines:
            dec(line)
        return len(lines)

    def parse_only() -> int:
        parse = Parser().parse
        for line in lines:
            parse(line)
        return len(lines)

    parsers: list[Parser] = []

    def full() -> int:
        parser = Parser()
        parsers.append(parser)
        parse = parser.parse
        dedup = Deduplicator()
        for line in lines:
            dedup.is_duplicate(parse(line))
        return len(lines)

    def stdlib() -> int:
        loads = json.loads
        for line in lines[: n // 5]:
            loads(line)
        return n // 5

    # Interleaved; each ratio is the median over rounds of the ratio within a round (a round's
    # runs see nearly the same load on a shared machine).
    rounds = [(rate(bare, 1), rate(parse_only, 1), rate(full, 1)) for _ in range(5)]
    r_bare = max(r[0] for r in rounds)
    r_parse = max(r[1] for r in rounds)
    r_full = max(r[2] for r in rounds)
    r_json = rate(stdlib, 1)
    cache = parsers[-1].identity_cache_stats()
    return {
        "lines": float(len(lines)),
        "mean_line_bytes": sum(map(len, lines)) / len(lines),
        "bare_msgspec_lines_per_s": r_bare,
        "parse_lines_per_s": r_parse,
        "ingest_lines_per_s": r_full,
        "json_loads_lines_per_s": r_json,
        "ratio_parse_to_bare": statistics.median(p / b for b, p, _ in rounds),
        "ratio_ingest_to_bare": statistics.median(f / b for b, _, f in rounds),
        "us_per_line_after_decode": statistics.median((1 / f - 1 / b) * 1e6 for b, _, f in rounds),
        "general_path_lines": float(parsers[-1].general_path),
        "identity_cache_lookups": float(cache["lookups"]),
        "identity_cache_misses": float(cache["misses"]),
        "identity_cache_evictions": float(cache["evictions"]),
    }


def explain(row: Row, out: dict[str, float], steps: dict[str, float]) -> Row:
    """``row`` with why it misses :data:`TARGET` (the steps after the decode, in us/line, from
    :func:`bench.profile.ingest_steps` on the same lines) and what meeting it takes."""
    bare = 1e6 / out["bare_msgspec_lines_per_s"]
    after = out["us_per_line_after_decode"]
    # ingest / bare >= TARGET  <=>  ingest us/line <= bare / TARGET: after the decode <= that - bare.
    allowed = bare / TARGET - bare
    after_steps = {k: v for k, v in steps.items() if not k.startswith("decode")}
    timed = sum(after_steps.values())
    why = [
        f"bare decode {bare:.2f} us/line; the ingest path {bare + after:.2f}: {after:.2f} after the decode"
    ]
    why.append(
        f"after the decode, a timed pass over the same lines (best of 3 rounds): {timed:.2f} us/line "
        f"in all (the row's figure is a median over rounds); own us/line and share:"
    )
    for name, us in sorted(after_steps.items(), key=lambda kv: -kv[1])[:6]:
        why.append(f"  {name:48s} {us:7.2f} us/line {us / timed * 100 if timed else 0:5.1f} %")
    top = max(after_steps, key=lambda k: after_steps[k]) if after_steps else "-"
    takes = (
        f"reaching {TARGET:g} needs <= {allowed:.2f} us/line after the decode; today {after:.2f} "
        f"({after - allowed:.2f} us/line to cut; the largest step, {top}, is "
        f"{after_steps.get(top, 0.0):.2f})"
    )
    return row.explained(why, takes)


def rows() -> list[Row]:
    out = measure()
    print("parse benchmark (real OpenBao lines from the generated organisations):")
    for k, v in out.items():
        print(f"  {k:28s} {v:12.2f}")
    note = f"{out['us_per_line_after_decode']:.1f} us/line after the decode"
    row = Row.ratio(NAME, out["ratio_ingest_to_bare"], TARGET, note)
    if not row.met:
        from bench.profile import ingest_steps

        steps = ingest_steps(_lines(int(out["lines"])))
        row = explain(row, out, steps)
        text = "\n".join([f"ingest profile ({int(out['lines'])} lines)", *row.why, f"takes: {row.takes}"])
        path = write_artifact("ingest-profile.txt", text + "\n")
        print(f"  wrote {path}")
    return [row]


def failed_rows(reason: str) -> list[Row]:
    return [Row.missing(NAME, f">= {TARGET:g}", reason)]


def main() -> None:
    out = rows()
    for r in out:
        print(f"{r.name}: {r.value:.2f} (target {r.target}: {'met' if r.met else 'NOT met'})")
    print("\n".join(explanations(out)))


if __name__ == "__main__":
    main()
