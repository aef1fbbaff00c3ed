"""The evaluation organisations: specs drawn from seeds, and one small organisation on real OpenBao."""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from detect.policy_data import DEFAULT_POLICY_TOML
from ingest.parse import Parser
from vaultwatch.demo.org_driver import SEQ_HEADER, Driver, Reply
from vaultwatch.demo.org_spec import RESERVED_NAMES, SIZES, spec_hash
from vaultwatch.demo.orgs import (
    HARD_CASE_KINDS,
    THREAT_KINDS,
    OrgLog,
    draw_spec,
    generate_org,
    generate_orgs,
)


def _names(seed: int) -> set[str]:
    spec = draw_spec(seed, "small")
    names = set(spec.policies) | {spec.approle_path, spec.userpass_path, spec.rotator_role}
    names |= {a.runtime_role for a in spec.apps} | {a.ci_role for a in spec.apps}
    names |= {h.username for h in spec.humans} | {m.path for m in spec.mounts}
    return names


def test_same_seed_same_spec() -> None:
    a, b = draw_spec(7, "medium"), draw_spec(7, "medium")
    assert a == b
    assert spec_hash(a) == spec_hash(b)
    assert spec_hash(a) != spec_hash(draw_spec(8, "medium"))
    assert spec_hash(a) != spec_hash(draw_spec(7, "small"))


def test_two_seeds_give_different_names_and_layouts() -> None:
    one, two = _names(1), _names(2)
    assert one != two
    assert len(one & two) < len(one) / 2
    specs = [draw_spec(seed, "small") for seed in range(1, 13)]
    assert {s.layout for s in specs} == {"root", "shared"}
    assert {m.version for s in specs for m in s.mounts} == {1, 2}
    seed_paths = {f"{s.apps[0].mount}/{s.apps[0].base}" for s in specs}
    assert "logos/pxl-core" in seed_paths  # logos/ as the mount...
    assert any(p.endswith("/logos/pxl-core") for p in seed_paths)  # ...and as a prefix under a shared mount
    assert len({s.approle_path for s in specs}) > 3


def test_names_never_the_defaults() -> None:
    default_names = {"pxl-core-runtime", "pxl-core-ci", "developer", "approle", "userpass"}
    assert default_names <= RESERVED_NAMES
    for seed in range(1, 9):
        spec = draw_spec(seed, "small")
        used = set(spec.policies) | {spec.approle_path, spec.userpass_path}
        used |= {a.runtime_role for a in spec.apps} | {a.ci_role for a in spec.apps}
        used |= {h.username for h in spec.humans}
        assert not used & RESERVED_NAMES
        for name in used:
            assert f'"{name}"' not in DEFAULT_POLICY_TOML


@pytest.mark.parametrize("size", sorted(SIZES))
def test_sizes_and_threat_plan(size: str) -> None:
    spec = draw_spec(3, size)
    low, high = {"small": (10, 30), "medium": (20, 120), "large": (240, 330)}[size]
    assert low <= spec.identity_count() <= high
    assert {t.kind for t in spec.threats} == set(THREAT_KINDS)
    assert all(t.day >= spec.learning_days >= 7 for t in spec.threats if t.kind != "rotation-overdue")
    assert len({t.instance for t in spec.threats}) == len(spec.threats)
    kinds = {h.kind for h in spec.hard_cases}
    assert kinds <= set(HARD_CASE_KINDS) and "onboarding" in kinds
    assert len({h.tz for h in spec.humans}) >= 1 and any(h.holiday for h in spec.humans)


def test_rewrite_maps_entries_to_requests_by_sequence_number(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = Driver("http://127.0.0.1:1", "unused", now=1_000_000.0, rng=random.Random(0))
    monkeypatch.setattr(driver, "_send", lambda *args, **kwargs: Reply(200, {}))
    for ts, tag in ((1_000_000.0, "setup"), (1_000_100.0, "benign"), (1_000_200.0, "brute-force")):
        driver.at(ts)
        with driver.tagged(tag):
            driver.req(None, "GET", "kv/data/a")

    def entry(kind: str, rid: str, seq: int | None, path: str = "kv/data/a", extra: str = "") -> str:
        headers = f',"headers":{{"{SEQ_HEADER}":["{seq}"]}}' if seq else ""
        auth = '"auth":{"accessor":"hmac-a","token_issue_time":"2030-01-01T00:00:00Z"},' if extra else ""
        return (
            f'{{"time":"2030-01-01T00:00:00Z","type":"{kind}",{auth}"request":{{"id":"{rid}",'
            f'"path":"{path}"{headers}}}}}'
        )

    log = tmp_path / "raw.log"
    lines = [
        entry("request", "boot", None, "sys/audit/test"),
        entry("request", "cfg", None, f"sys/config/auditing/request-headers/{SEQ_HEADER}"),
        entry("response", "cfg", 1, f"sys/config/auditing/request-headers/{SEQ_HEADER}"),
        entry("request", "r1", 1),
        entry("response", "r1", 1),
        entry("request", "r2", 2, extra="auth"),
        entry("request", "r3", 3, "auth/u/login/x<y>"),
        entry("response", "r3", 3, "auth/u/login/x<y>"),
    ]
    log.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.log"
    result = driver.rewrite(log, out, setup_ts=999_000.0)
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["request"]["id"] for e in written] == ["boot", "r1", "r1", "r2", "r3", "r3"]
    assert SEQ_HEADER not in out.read_text() and "headers" not in out.read_text()
    assert written[0]["time"].startswith("1970-01-12T13:30:00")  # the setup time
    assert written[3]["time"].startswith("1970-01-12T13:48:20")
    assert written[3]["auth"]["token_issue_time"] == "1970-01-12T13:30:00Z"  # issued before the log
    assert "\\u003c" in out.read_text()  # Go's HTML-safe escaping, as Vault writes it
    assert result.ids_by_tag == {"setup": ["r1"], "benign": ["r2"], "brute-force": ["r3"]}
    assert result.rid_by_seq == {1: "r1", 2: "r2", 3: "r3"}
    assert result.unmatched == 0


@pytest.fixture(scope="module")
def small_org(tmp_path_factory: pytest.TempPathFactory) -> OrgLog:
    return generate_org(11, size="small", workdir=tmp_path_factory.mktemp("eval"))


@pytest.mark.integration
def test_small_org_on_real_openbao(small_org: OrgLog) -> None:
    parser = Parser()
    raw = small_org.audit_path.read_bytes()
    assert b"x-vw-seq" not in raw  # the generator's own header is stripped
    events = [parser.parse(line, source="audit.log") for line in raw.splitlines() if line.strip()]
    assert len(events) > 1000
    spec = json.loads(small_org.spec_path.read_text())
    stamps = [e.time for e in events]
    backwards = sum(1 for a, b in zip(stamps, stamps[1:], strict=False) if b < a)
    assert backwards == 0
    start = datetime.fromisoformat(spec["start"])
    assert stamps[-1] > start and (stamps[-1] - start).days >= spec["days"] - 1
    # Nothing after the simulated period: an attack's late follow-up alone in an empty stream
    # would look like an outage of the whole organisation.
    assert (stamps[-1] - start).total_seconds() < spec["days"] * 86400
    assert stamps[0] < start  # the bootstrap, the day before
    # Every identity speaks from its own addresses; attackers from others.
    assert len({e.remote_ip for e in events}) > 20

    labels = small_org.labels()
    ids = {e.request_id for e in events}
    kinds = Counter(t["kind"] for t in labels["threats"])
    assert set(kinds) == set(THREAT_KINDS)
    for item in labels["threats"] + labels["benign_hard_cases"]:
        assert set(item["request_ids"]) <= ids, item["instance"]
        assert datetime.fromisoformat(item["first_time"]) >= start
    for item in labels["threats"]:
        assert item["request_ids"], item["instance"]
        assert datetime.fromisoformat(item["first_time"]).timestamp() >= start.timestamp() + 6 * 86400
    assert {h["kind"] for h in labels["benign_hard_cases"]} >= {"onboarding", "rotation-on-time", "scale-out"}
    # Failed requests are labelled too: the brute force is mostly refused logins.
    brute = next(t for t in labels["threats"] if t["kind"] == "brute-force")
    by_id = {e.request_id: e for e in events if e.is_response}
    refused = [r for r in brute["request_ids"] if by_id[r].outcome != "ok"]
    assert len(refused) >= 10
    # No request is labelled twice.
    all_ids = [r for t in labels["threats"] + labels["benign_hard_cases"] for r in t["request_ids"]]
    assert len(all_ids) == len(set(all_ids))
    index = small_org.label_index()
    assert len(index) == len(all_ids)
    assert index[brute["request_ids"][0]] == ("threats", "brute-force", "brute-force")


@pytest.mark.integration
def test_generated_org_is_cached(small_org: OrgLog, tmp_path: Path) -> None:
    workdir = small_org.audit_path.parent.parent
    before = small_org.audit_path.stat().st_mtime_ns
    again = generate_org(11, size="small", workdir=workdir)
    assert again.audit_path == small_org.audit_path
    assert again.audit_path.stat().st_mtime_ns == before
    assert again.spec_hash == small_org.spec_hash == small_org.audit_path.parent.name
    # Worker processes find the same cache entry (and start no server).
    one, two = generate_orgs([11, 11], size="small", workdir=workdir, workers=2)
    assert one == two
    assert one.audit_path == small_org.audit_path and one.stats == small_org.stats


def _signature(org: OrgLog) -> tuple[list[tuple[str, ...]], list[tuple[str, int, str]]]:
    """What must not change between two runs of one seed (Vault's own ids and HMACs may)."""
    entries: list[tuple[str, ...]] = []
    for line in org.audit_path.read_text().splitlines():
        e = json.loads(line)
        r = e["request"]
        entries.append(
            (e["time"], e["type"], r.get("path", ""), r.get("operation", ""), r.get("remote_address", ""))
        )
    labels = org.labels()
    items = [(str(t["instance"]), len(t["request_ids"]), str(t["first_time"])) for t in labels["threats"]]
    return entries, items


@pytest.mark.integration
@pytest.mark.slow
def test_same_seed_same_log(small_org: OrgLog, tmp_path: Path) -> None:
    again = generate_org(11, size="small", workdir=tmp_path)
    assert again.audit_path != small_org.audit_path
    assert _signature(again) == _signature(small_org)
