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

from bench.common import Row, many_identities_log, rate
from ingest.dedup import Deduplicator
from ingest.event import Entry
from ingest.parse import Parser

NAME = "ingest path / bare msgspec decode into the same struct"
TARGET = 0.6


def measure(n: int = 60_000) -> dict[str, float]:
    with open(many_identities_log(), "rb") as f:
        lines = list(islice(f, n))
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


def rows() -> list[Row]:
    out = measure()
    print("parse benchmark (real OpenBao lines from the generated organisations):")
    for k, v in out.items():
        print(f"  {k:28s} {v:12.2f}")
    note = f"{out['us_per_line_after_decode']:.1f} us/line after the decode"
    return [Row.ratio(NAME, out["ratio_ingest_to_bare"], TARGET, note)]


def failed_rows(reason: str) -> list[Row]:
    return [Row.missing(NAME, f">= {TARGET:g}", reason)]


def main() -> None:
    for r in rows():
        print(f"{r.name}: {r.value:.2f} (target {r.target}: {'met' if r.met else 'NOT met'})")


if __name__ == "__main__":
    main()
