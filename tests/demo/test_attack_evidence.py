"""The demo credits an attack only to alerts that hold the attack's own requests as evidence.

A detector that fired on someone else's requests (the setup's own root-token use, a developer's
first read while the attack is a service's) does not count: the end-of-demo summary, its JSON
and the live requests' labels (read from the audit log by offset) are checked here without a
server; ``test_stack.py`` checks the same on the real demo.
"""

from __future__ import annotations

import argparse
import io
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from detect.alert import Alert, AlertIdentity
from vaultwatch.cli.demo import _report
from vaultwatch.demo.scenarios import judge_alerts
from vaultwatch.demo.stack import DemoTraffic, TrafficProgress
from vaultwatch.demo.traffic import BENIGN, SETUP, Call, GeneratedLog, Scenario, Traffic

T = "2026-12-07T02:30:00Z"


def _alert(aid: str, detector: str, event_ids: tuple[str, ...], severity: str = "high") -> Alert:
    return Alert(
        id=aid,
        detector=detector,
        title=f"{detector} {aid}",
        severity=severity,  # type: ignore[arg-type]
        score=50,
        identity=AlertIdentity(key="entity:x", display_name="x"),
        first_seen=T,
        last_seen=T,
        event_ids=event_ids,
        dedup_key=aid,
    )


def _truth(tmp_path: Path) -> GeneratedLog:
    """The setup used the root token (r-setup), the attack used it again (r-att1, r-att2), a
    developer read a secret (r-dev), and a developer attack made one request (r-dana)."""
    labels = {
        "r-setup": SETUP,
        "r-att1": "root-token-use",
        "r-att2": "root-token-use",
        "r-dev": BENIGN,
        "r-dana": "developer-reads-runtime",
    }
    scenarios = {
        "root-token-use": Scenario("root-token-use", "root", "root", 0.0, request_ids=("r-att1", "r-att2")),
        "developer-reads-runtime": Scenario(
            "developer-reads-runtime", "dana", "dana", 0.0, request_ids=("r-dana",)
        ),
    }
    return GeneratedLog(
        path=tmp_path / "history.log",
        labels=labels,
        scenarios=scenarios,
        canaries=(),
        requests=5,
        entries=10,
        start=datetime(2026, 12, 1, tzinfo=UTC),
        days=8,
        warmup_days=0,
    )


def test_an_alert_of_the_right_detector_on_other_requests_credits_nothing(tmp_path: Path) -> None:
    truth = _truth(tmp_path)
    setup_root = _alert("va_setup", "root-token-use", ("r-setup",), "critical")
    developer = _alert("va_dev", "sensitive-first-access", ("r-dev",))
    out = judge_alerts(truth, [setup_root, developer])
    assert not out["root-token-use"].caught and not out["root-token-use"].caught_any
    assert out["root-token-use"].alert_ids == [] and out["root-token-use"].detectors == set()
    assert not out["developer-reads-runtime"].caught_any
    attack = _alert("va_attack", "root-token-use", ("r-setup", "r-att2"))
    low = _alert("va_low", "sensitive-first-access", ("r-dana",), "low")
    out = judge_alerts(truth, [setup_root, developer, attack, low])
    assert out["root-token-use"].caught and out["root-token-use"].alert_ids == ["va_attack"]
    # Evidence at low severity is shown, but it is no detection (as the evaluation judges).
    dana = out["developer-reads-runtime"]
    assert dana.caught_any and not dana.caught and dana.alert_ids == ["va_low"]
    assert dana.detectors == {"sensitive-first-access"}


class _Stack:
    ui_url = "http://127.0.0.1:1/"
    api_kind = "full"

    def counters(self) -> dict[str, int]:
        return {"received": 1, "shipped": 1, "handled": 1, "consumed": 1, "events": 1}


def _summary(truth: GeneratedLog, alerts: list[Alert], *, as_json: bool) -> tuple[str, dict[str, Any]]:
    buf = io.StringIO()
    out = Console(file=buf, width=200, color_system=None)
    progress = TrafficProgress(phase="done", attacks_started=["root-token-use", "developer-reads-runtime"])
    args = argparse.Namespace(json=as_json)
    captured = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("sys.stdout", captured)
        code = _report(args, out, _Stack(), progress, alerts, truth, True, 1.0)
    assert code == 0
    return buf.getvalue(), (json.loads(captured.getvalue()) if as_json else {})


def test_the_summary_lines_name_only_the_attacks_own_alerts(tmp_path: Path) -> None:
    truth = _truth(tmp_path)
    setup_root = _alert("va_setup", "root-token-use", ("r-setup",), "critical")
    low = _alert("va_low", "sensitive-first-access", ("r-dana",), "low")
    text, _ = _summary(truth, [setup_root, low], as_json=False)
    assert "attack root-token-use: missed" in text
    assert "attack developer-reads-runtime: seen at low severity only by sensitive-first-access (low)" in text
    attack = _alert("va_attack", "root-token-use", ("r-att1",))
    text, _ = _summary(truth, [setup_root, low, attack], as_json=False)
    assert "attack root-token-use: detected by root-token-use (high)" in text
    _, doc = _summary(truth, [setup_root, low, attack], as_json=True)
    assert doc["attacks_detected"] == {"root-token-use": True, "developer-reads-runtime": False}
    assert doc["attack_alerts"] == {"root-token-use": ["va_attack"], "developer-reads-runtime": ["va_low"]}
    assert doc["attacks_caught_by"]["developer-reads-runtime"] == ["sensitive-first-access"]


def _entry(rid: str) -> bytes:
    return json.dumps({"time": T, "type": "request", "request": {"id": rid}}).encode() + b"\n"


def test_live_requests_are_labelled_by_their_own_span_of_the_audit_log(tmp_path: Path) -> None:
    """Entries between a request's start and end offsets are its own (a refused login too, whose
    id hvac never returns); what another client wrote between two requests is nobody's."""
    log = tmp_path / "audit.log"
    lines = [_entry("h1"), _entry("a1"), _entry("a1"), _entry("other"), b"\n", _entry("b1"), _entry("b1")]
    log.write_bytes(b"".join(lines))
    ends = [sum(len(x) for x in lines[: i + 1]) for i in range(len(lines))]
    traffic = Traffic("http://127.0.0.1:9", "unused", log)
    try:
        traffic.calls = [
            Call(0.0, ends[0], "benign", "h1", 0),
            Call(1.0, ends[2], "brute-force", None, ends[0]),  # a refused login: no id from hvac
            Call(2.0, ends[6], "benign", "b1", ends[4]),
        ]
        assert traffic.request_labels() == {"h1": "benign", "a1": "brute-force", "b1": "benign"}
        assert traffic.request_labels(1) == {"a1": "brute-force", "b1": "benign"}
        traffic.calls = []
        assert traffic.request_labels() == {}
    finally:
        traffic.close()


def test_ground_truth_adds_the_live_attacks_to_the_history(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_bytes(_entry("hist") + _entry("live-a") + _entry("live-b"))
    size = [len(_entry("hist")), len(_entry("hist") + _entry("live-a")), log.stat().st_size]
    traffic = DemoTraffic("http://127.0.0.1:9", "unused", log, history_days=1, now=1.8e9)
    try:
        assert traffic.ground_truth() is None  # before the history is rewritten
        history = _truth(tmp_path)
        history = replace(history, labels={"hist": "slow-harvest"})
        traffic.scenarios["slow-harvest"] = Scenario(
            "slow-harvest", "t", "search", 0.0, request_ids=("hist",)
        )
        traffic.plan_attack_at("brute-force", 1.8e9)
        traffic._history = history
        traffic.calls = [Call(0.0, size[0], "slow-harvest", None, 0)]
        traffic._first_live = 1
        traffic.calls += [
            Call(1.0, size[1], "brute-force", None, size[0]),
            Call(2.0, size[2], BENIGN, None, size[1]),
        ]
        truth = traffic.ground_truth()
        assert truth is not None
        assert truth.labels == {"hist": "slow-harvest", "live-a": "brute-force", "live-b": BENIGN}
        assert truth.scenarios["brute-force"].request_ids == ("live-a",)
        assert truth.scenarios["slow-harvest"].request_ids == ("hist",)
        assert history.labels == {"hist": "slow-harvest"}  # the history itself is not changed
    finally:
        traffic.close()
