"""Parse throughput: the full ingest path against a bare msgspec decode of the same bytes.

Target: the full path (parse + identity + outcome + redaction + dedup) runs at 0.7 or more of a
bare ``msgspec`` decode of the same lines into the same struct, measured in the same run.
"""

from __future__ import annotations

import json

import msgspec

from bench.common import rate, real_openbao_log, scaled_lines
from ingest.dedup import Deduplicator
from ingest.event import Entry
from ingest.parse import Parser


def main(n: int = 200_000) -> dict[str, float]:
    lines = scaled_lines(real_openbao_log(), n)
    decoder = msgspec.json.Decoder(Entry)

    def bare() -> int:
        dec = decoder.decode
        for line in lines:
            dec(line)
        return len(lines)

    def full() -> int:
        parse = Parser().parse
        dedup = Deduplicator()
        for line in lines:
            dedup.is_duplicate(parse(line))
        return len(lines)

    def stdlib() -> int:
        loads = json.loads
        for line in lines[: n // 5]:
            loads(line)
        return n // 5

    r_bare, r_full, r_json = rate(bare), rate(full), rate(stdlib)
    result = {
        "lines": float(len(lines)),
        "bare_msgspec_lines_per_s": r_bare,
        "ingest_lines_per_s": r_full,
        "json_loads_lines_per_s": r_json,
        "ratio_ingest_to_bare": r_full / r_bare,
    }
    print("parse benchmark (real OpenBao log, scaled):")
    for k, v in result.items():
        print(f"  {k:28s} {v:12.2f}")
    print(f"  target ratio >= 0.70: {'met' if result['ratio_ingest_to_bare'] >= 0.7 else 'NOT met'}")
    return result


if __name__ == "__main__":
    main()
