"""The scoreboard's scoring: detection, delay, false alerts, setup alerts, worst organisation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.eval_score import Labels, Threat, load_labels, parse_labels, score_org, summarize, worst_and_median

LABELS = Labels(
    threats=(
        Threat("brute-1", "brute-force", "alice", ("b1", "b2", "b3")),
        Threat("root-1", "root-token-use", "root", ("login", "r1", "r2"), trigger=1),
    )
)
# One entry per log line: requests and responses share an id; "s*" are setup, "n*" benign.
LOG = ["s1", "s1", "n1", "n1", "b1", "b2", "n2", "b3", "login", "r1", "r1", "r2", None, "n3"]


def alert(ids: list[str], severity: str = "medium", detector: str = "d") -> dict[str, object]:
    return {"event_ids": ids, "severity": severity, "detector": detector}


def test_detection_needs_medium_and_delay_counts_from_the_first_request() -> None:
    s = score_org([alert(["b2", "n1"]), alert(["b1"], "low")], LOG, LABELS, org="o", detector="x")
    brute, root = s.outcomes
    assert brute.detected and brute.detected_any and brute.delay == 1
    assert brute.best_severity == "medium" and brute.detectors == ["d"]
    assert not root.detected and not root.detected_any and root.delay is None
    assert s.recall == 0.5 and s.false_alerts == 0


def test_low_only_counts_as_any_not_detected() -> None:
    s = score_org([alert(["b3"], "low")], LOG, LABELS)
    assert not s.outcomes[0].detected and s.outcomes[0].detected_any
    assert s.recall == 0.0 and s.recall_any == 0.5


def test_delay_is_counted_from_the_trigger_and_can_be_negative() -> None:
    on_trigger = score_org([alert(["r1"])], LOG, LABELS).outcomes[1]
    at_login = score_org([alert(["login", "r2"])], LOG, LABELS).outcomes[1]
    later = score_org([alert(["r2"], "critical")], LOG, LABELS).outcomes[1]
    assert (on_trigger.delay, at_login.delay, later.delay) == (0, -1, 1)
    assert later.best_severity == "critical"


def test_false_alerts_setup_alerts_and_benign_entries() -> None:
    alerts = [
        alert(["n1", "n2"]),  # benign only: false
        alert([]),  # no event ids: false
        alert(["s1"], "high"),  # setup only: apart
        alert(["s1", "n3"], "high"),  # setup and benign: false
        alert(["n3"], "low"),  # below medium: not counted
        alert(["n2", "b1"]),  # touches a threat: not false
    ]
    s = score_org(alerts, LOG, LABELS, setup_ids={"s1"})
    assert s.false_alerts == 3 and s.setup_alerts == 1
    assert s.alerts == 6 and s.alerts_medium == 5
    # 14 entries: 2 setup, 7 threat (b1 b2 b3 login r1 r1 r2), 5 benign (n1 n1 n2 None n3).
    assert s.benign_entries == 5
    assert s.false_per_10k == pytest.approx(6000.0)
    assert s.false_by_rule == {"d": 3}


def test_false_alerts_on_benign_hard_cases_are_counted_apart_too() -> None:
    labels = Labels(LABELS.threats, ({"kind": "onboarding", "request_ids": ["n2"]},))
    s = score_org([alert(["n2"]), alert(["n1"]), alert(["n2", "b1"])], LOG, labels)
    assert s.false_alerts == 2 and s.false_on_hard_cases == 1


def test_without_setup_ids_setup_entries_are_benign() -> None:
    s = score_org([alert(["s1"])], LOG, LABELS)
    assert s.benign_entries == 7 and s.false_alerts == 1 and s.setup_alerts == 0


def test_worst_is_lowest_recall_then_most_false_alerts_and_median() -> None:
    a = score_org([alert(["b1"]), alert(["r1"])], LOG, LABELS, org="a", detector="x")
    b = score_org([alert(["b1"]), alert(["n1"])], LOG, LABELS, org="b", detector="x")
    c = score_org([alert(["b1"]), alert(["n1"]), alert(["n2"])], LOG, LABELS, org="c", detector="x")
    worst, med_recall, med_false = worst_and_median([a, b, c])
    assert worst.org == "c"
    assert med_recall == 0.5 and med_false == b.false_per_10k
    summary = summarize([a, b, c])
    assert summary.worst_org == "c" and summary.worst_missed == ["root-token-use"]
    assert summary.kinds["brute-force"].detected == 3 and summary.kinds["root-token-use"].detected == 1
    assert summary.median_delay == 0
    assert json.loads(json.dumps(summary.to_dict()))["kinds"]["brute-force"]["median_delay"] == 0


def test_labels_file_round_trip_and_duplicates(tmp_path: Path) -> None:
    threat = {
        "instance": "x-1",
        "kind": "x",
        "target": "svc",
        "request_ids": ["a", "b"],
        "first_time": "t",
        "trigger": 1,
        "title": "extra fields are ignored",
    }
    data = {
        "threats": [threat],
        "benign_hard_cases": [{"kind": "onboarding", "request_ids": ["c"]}],
    }
    path = tmp_path / "labels.json"
    path.write_text(json.dumps(data))
    labels = load_labels(path)
    assert labels.threats == (Threat("x-1", "x", "svc", ("a", "b"), "t", 1),)
    assert len(labels.benign_hard_cases) == 1
    with pytest.raises(ValueError, match="duplicate"):
        parse_labels({"threats": [threat, threat]})


def test_no_threats_means_full_recall() -> None:
    s = score_org([alert(["n1"])], LOG, Labels(()))
    assert s.recall == 1.0 and s.false_alerts == 1 and s.benign_entries == len(LOG)


def test_an_absence_is_detected_by_an_alert_naming_its_target_after_it_was_due() -> None:
    labels = Labels(
        (Threat("rot", "rotation-overdue", "kv/app/jwt", ("n1",), due_time="2026-05-01T00:00:00Z"),)
    )
    early = {
        "event_ids": ["w0"],
        "severity": "high",
        "paths": ["kv/app/jwt"],
        "last_seen": "2026-04-30T00:00:00Z",
    }
    other = {
        "event_ids": ["w0"],
        "severity": "high",
        "paths": ["kv/app/tls"],
        "last_seen": "2026-05-02T00:00:00Z",
    }
    s = score_org([early, other], LOG, labels)
    assert not s.outcomes[0].detected and s.false_alerts == 2
    late = {
        "event_ids": ["w0"],
        "severity": "medium",
        "paths": ["kv/app/jwt"],
        "last_seen": "2026-05-01T03:00:00Z",
    }
    s = score_org([late], LOG, labels)
    assert s.outcomes[0].detected and s.outcomes[0].delay == 0 and s.false_alerts == 0


def test_a_planned_threat_that_made_no_request_is_not_scored() -> None:
    """A threat with no request and no due time never reached the log (the simulation ended
    first): it is listed apart, not counted as every detector's miss."""
    labels = parse_labels(
        {
            "threats": [
                {"instance": "a", "kind": "brute-force", "request_ids": ["b1"]},
                {"instance": "ghost", "kind": "seal-attempt", "request_ids": []},
                {
                    "instance": "late",
                    "kind": "rotation-overdue",
                    "request_ids": [],
                    "due_time": "2026-01-02T00:00:00Z",
                },
            ]
        }
    )
    assert [t.instance for t in labels.threats] == ["a", "late"]
    assert labels.not_executed == ("ghost",)
    s = score_org([alert(["b1"])], ["b1", "n1"], labels)
    assert [o.instance for o in s.outcomes] == ["a", "late"]
