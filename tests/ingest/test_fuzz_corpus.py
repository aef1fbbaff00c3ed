"""The fuzz campaign's findings, replayed, and a short campaign in the suite.

``tests/ingest/fuzz_corpus`` holds the minimised inputs that ``make fuzz`` (``bench/fuzz.py``) found
breaking the parser's contract or its invariants before issue 18's fix: ``ValueError`` from
Unicode-digit and 5,000-digit ports, ``year 0 is out of range`` from a zoneless time at year 1, a
``remote_port`` outside 0-65535 kept, a zoneless time read in local time. Each must now give an
``AuditEvent`` that holds the invariants, or a ``ParseError``; nothing else.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.fuzz import CORPUS, MAX_DEPTH, MAX_LINE_BYTES, campaign, run_one
from ingest import Parser

CASES = sorted(CORPUS.glob("*.bin"))


def test_the_corpus_is_there() -> None:
    assert len(CASES) >= 5
    kinds = {p.name.split("-")[0] for p in CASES}
    assert {"valueerror", "finding"} <= kinds


@pytest.mark.parametrize("case", CASES, ids=[p.name for p in CASES])
def test_corpus_input_obeys_the_contract(case: Path) -> None:
    parser = Parser(max_line_bytes=MAX_LINE_BYTES, max_depth=MAX_DEPTH)
    run_one(parser, case.read_bytes())  # raises on any exception but ParseError, or a broken invariant


def test_a_short_campaign_finds_nothing() -> None:
    t = campaign(4000, workers=1, seed=18)
    assert t["inputs"] == 4000 and t["events"] > 200 and t["direct"] > 500
    assert {"wrong_type", "invalid_json", "too_large", "too_deep"} <= set(t["reasons"])
    assert not t["findings"], dict(t["findings"])
