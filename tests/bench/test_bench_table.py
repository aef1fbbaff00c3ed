"""``python -m bench``'s table: a row that misses its target is explained by figures of the same
run (why) and what meeting it would take, computed from them; a met row is not."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import bench.common as common
from bench import bench_parse, bench_replay, bench_run
from bench.common import Row, explanations, print_table
from bench.profile import _Timers


@pytest.fixture(autouse=True)
def _artifacts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(common, "ARTIFACTS", tmp_path / "bench")
    return tmp_path / "bench"


def _fake(value: float, why: tuple[str, ...] = (), takes: str = "") -> Row:
    return Row.ratio("fake replay / parse-only", value, 0.5).explained(why, takes)


def test_an_unmet_row_prints_its_why_and_what_it_takes(
    capsys: pytest.CaptureFixture[str], _artifacts: Path
) -> None:
    unmet = _fake(0.31, ("detector slow-one 120.00 us/event 40.0 %",), "reaching 0.5 needs <= 80 us/event")
    met = Row.ratio("fake null engine", 0.95, 0.9).explained(("never shown",), "never shown either")
    print_table([met, unmet])
    out = capsys.readouterr().out
    assert "NOT met" in out
    assert "- fake replay / parse-only: 0.31, target >= 0.5" in out
    assert "    detector slow-one 120.00 us/event 40.0 %" in out
    assert "    takes: reaching 0.5 needs <= 80 us/event" in out
    assert "never shown" not in out  # a met row is not explained
    # The same text is kept beside the other artefacts.
    assert "takes: reaching 0.5 needs <= 80 us/event" in (_artifacts / "table.txt").read_text()


def test_an_unmet_row_without_a_profile_says_so_and_a_missing_figure_is_not_unmet() -> None:
    lines = explanations([_fake(0.2), Row.missing("fake kafka", ">= 0.5", "no broker")])
    assert lines == [
        "- fake replay / parse-only: 0.20, target >= 0.5",
        "    (no profile was measured for this row)",
    ]
    assert explanations([Row.ratio("fine", 2.0, 1.7)]) == []


def test_ingest_budget_follows_from_the_decode() -> None:
    # Bare decode 1 us/line (1e6 lines/s); 1.5 us after it: ratio 0.4 against 0.6.
    out = {"bare_msgspec_lines_per_s": 1e6, "us_per_line_after_decode": 1.5}
    steps = {"decode (msgspec)": 1.0, "build the event (clean entry)": 1.2, "dedup": 0.3}
    row = bench_parse.explain(Row.ratio(bench_parse.NAME, 0.4, 0.6), out, steps)
    # ingest <= 1 / 0.6 = 1.667 us/line: at most 0.67 after the decode.
    assert "needs <= 0.67 us/line after the decode; today 1.50" in row.takes
    assert "build the event (clean entry)" in row.takes
    assert any(
        line.strip().startswith("build the event (clean entry)") and "80.0 %" in line for line in row.why
    )
    assert not any(line.strip().startswith("decode (msgspec)") for line in row.why[2:])


def test_replay_detection_budget_and_the_top_costs() -> None:
    n = 1000.0
    out = {
        "lines": n,
        "parse_seconds_around_full": 0.02,  # 20 us/line
        "null_seconds": 0.025,  # 25 us/line
        "full_seconds": 0.1,  # 100 us/line: 75 of detection
    }
    costs = {
        "events": 1000,
        "total": 0.11,
        "null": 0.025,
        "own": {"detector big.observe": 0.06, "engine _route": 0.02},
    }
    row = bench_replay.explain_full(Row.ratio(bench_replay.FULL, 0.2, 0.5), out, costs)
    # replay <= 20 / 0.5 = 40 us/line: detection <= 40 - 25 = 15.
    assert row.takes.startswith("reaching 0.5 needs detection <= 15 us/event; today 75")
    assert "detector big.observe" in row.takes
    top = [line for line in row.why if "us/event" in line]
    assert "detector big.observe" in top[0] and "60.00 us/event" in top[0] and "54.5 %" in top[0]


def test_null_engine_budget() -> None:
    out = {
        "read_us_per_line": 1.0,
        "order_us_per_line": 2.0,
        "parse_us_per_line": 9.0,
        "null_engine_loop_us_per_line": 3.0,
    }
    row = bench_replay.explain_null(Row.ratio(bench_replay.NULL, 0.67, 0.9), out)
    # parse-only 10 us/line: replay <= 10 / 0.9 = 11.11, so at most 1.11 beyond it; today 5.
    assert row.takes.endswith("<= 1.11 us/line; today 5.00")
    assert any("parse" in line and "60.0 %" in line for line in row.why)


def test_jobs_explained_from_the_logged_phases() -> None:
    many = {
        "cpu_seconds": 60.0,
        "stage1_seconds": 20.0,
        "stage1_child_seconds": [19.0, 20.0],
        "stage1_child_cpu_seconds": [18.0, 19.0],
        "stage2_seconds": 12.0,
        "stage2_partition_seconds": [11.0, 3.0, 4.0],
        "stage2_partition_cpu_seconds": [10.0, 3.0, 4.0],
        "merge_seconds": 1.0,
    }
    row = bench_replay.explain_jobs(
        Row.ratio(bench_replay.JOBS, 1.2, 1.7), 2, 42.0, 35.0, {"cpu_seconds": 40.0}, many, ("", "x 2")
    )
    text = "\n".join(row.why)
    assert "--jobs 2: 35.0 s wall, 60.0 CPU-s (1.71 cores busy" in text
    assert "largest partition 11.0 s wall / 10.0 CPU-s of 17.0 CPU-s" in text
    # Serial CPU: 60 - (18 + 19) - (10 + 3 + 4) = 6; with two free cores 6 + 19 + max(10, 8.5) = 35 s.
    assert "serial (start-up, imports, merging, writing the alerts): 3.0 s wall, 6.0 CPU-s" in text
    assert "about 35.0 s, 1.14 times --jobs 1's 40.0 CPU-s" in text
    assert "only with --jobs 2: x 2" in text
    assert row.takes.startswith("with 2 free cores reaching 1.7 needs that path <= 23.5 s; today 35.0")
    assert row.takes.endswith("needs --jobs 2 <= 24.7 s; today 35.0 s")


def test_worker_row_budget_from_its_timed_parts() -> None:
    tput = {
        "bare_consumer_per_s": 100_000.0,  # 10 us/record
        "worker_per_s": 25_000.0,  # 40 us/record
        "parse_and_detect_only_per_s": 40_000.0,
        "timed_worker_per_s": 24_000.0,
        "us_per_record:parse": 8.0,
        "us_per_record:detection (stage 1: hour flush, routing, identity detectors)": 20.0,
        "us_per_record:stage 2 (its own thread)": 5.0,
    }
    row = bench_run.explain_throughput(Row.ratio(bench_run.THROUGHPUT, 0.25, 0.5), tput)
    assert row.takes.startswith("reaching 0.5 needs the worker at <= 20.0 us/record; today 40.0")
    assert "detection (stage 1" in row.takes
    assert any("(beside the above)" in line and "stage 2" in line for line in row.why)


def test_latency_row_says_whether_the_worker_kept_up_and_the_cross_stage_floor() -> None:
    lat = {
        "offered_events_per_s": 2000.0,
        "worker_events_per_s": 1500.0,
        "p50_ms": 5000.0,
        "p99_ms": 8000.0,
        "max_ms": 8100.0,
        "mean_batch_records": 300.0,
        "max_gap_between_batches_ms": 900.0,
    }
    row = bench_run.explain_latency(Row.at_most(bench_run.LATENCY, 8.0, 1.0, "s"), lat)
    assert any("took 1500 events/s while 2000 were offered: it fell behind" in w for w in row.why)
    assert any("stage-2 detector" in w and "--cross-lateness" in w for w in row.why)
    assert row.takes.startswith("meeting it needs p99 under 1000 ms; today 8000 ms (7000 ms to cut)")
    kept = bench_run.explain_latency(
        Row.at_most(bench_run.LATENCY, 3.0, 1.0, "s"), {**lat, "worker_events_per_s": 2000.0}
    )
    assert not any("fell behind" in w for w in kept.why)


def test_timers_own_time_excludes_timed_calls_inside() -> None:
    t = _Timers()
    inner = t.wrap("inner", lambda: time.sleep(0.05))

    def outer_fn() -> None:
        time.sleep(0.02)
        inner()

    outer = t.wrap("outer", outer_fn)
    outer()
    assert t.seconds["outer"] >= 0.07
    assert 0.015 <= t.own["outer"] < 0.045
    assert t.own["inner"] == pytest.approx(t.seconds["inner"])


def test_timer_overhead_is_taken_from_the_caller_of_each_timed_call() -> None:
    t = _Timers()
    inner = t.wrap("inner", lambda: None)

    def outer_fn() -> None:
        time.sleep(0.01)
        for _ in range(3):
            inner()

    t.wrap("outer", outer_fn)()
    assert t.inner_calls == {"inner": 0, "outer": 3}
    net = t.net_own(0.001)
    assert net["outer"] == pytest.approx(t.own["outer"] - 0.003)
    assert net["inner"] == t.own["inner"]
