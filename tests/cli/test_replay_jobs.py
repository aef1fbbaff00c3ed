"""``vaultwatch replay --jobs N``: identities sharded across processes, the cross stage once.

On a generated organisation (real OpenBao, cached under ``var/eval``) with spraying, credential
stuffing and peer-group habits in it, ``--jobs 3`` raises the alert ids of ``--jobs 1`` for every
pluggable detector; the behavioural core's peer and organisation priors are per shard (as they are
per partition in ``run``), so its ``behaviour-risk`` alerts are compared only at one job.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

from vaultwatch.cli import main
from vaultwatch.demo.orgs import generate_org

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def org_log() -> Path:
    return generate_org(3, size="small", workdir=ROOT / "var" / "eval").audit_path


def _replay(log: Path, out: Path, *extra: str) -> dict[str, str]:
    assert main(["replay", str(log), "--alerts-out", str(out), "--json", "--no-progress", *extra]) == 0
    alerts = [json.loads(line) for line in out.read_text().splitlines()]
    ids = {a["id"]: a["detector"] for a in alerts}
    assert len(ids) == len(alerts), "an alert written twice"
    return ids


def test_jobs_raise_the_alert_ids_of_one_job(org_log: Path, tmp_path: Path) -> None:
    one = _replay(org_log, tmp_path / "one.jsonl")
    again = _replay(org_log, tmp_path / "again.jsonl", "--jobs", "1")
    assert again == one
    db = tmp_path / "three.db"
    three = _replay(org_log, tmp_path / "three.jsonl", "--jobs", "3", "--store", f"sqlite:///{db}")
    by_det = Counter(one.values())
    assert (
        by_det["login-failure-burst"] and by_det["credential-stuffing"] and by_det["sensitive-first-access"]
    )

    def rules(ids: dict[str, str]) -> dict[str, str]:
        return {k: v for k, v in ids.items() if v != "behaviour-risk"}

    assert rules(three) == rules(one)
    # The store holds every alert once and one engine checkpoint per shard.
    eng = sa.create_engine(f"sqlite:///{db}")
    try:
        with eng.connect() as c:
            stored = [r[0] for r in c.execute(sa.text("SELECT id FROM alerts"))]
            cps = [r[0] for r in c.execute(sa.text("SELECT key FROM checkpoints"))]
    finally:
        eng.dispose()
    assert sorted(stored) == sorted(three)
    assert sorted(cps) == [f"engine/replay/files/{s}" for s in range(3)]


def test_jobs_must_be_positive(org_log: Path, tmp_path: Path) -> None:
    assert main(["replay", str(org_log), "--alerts-out", str(tmp_path / "x.jsonl"), "--jobs", "0"]) == 2
