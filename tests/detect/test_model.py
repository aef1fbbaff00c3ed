"""The identity-window model (:mod:`detect.model`): an Isolation Forest scored in batches.

Scores are tail probabilities against the training windows' own scores (lower is more unusual;
:meth:`WindowModel.surprise` turns them into ``-log10(p)``).
"""

from __future__ import annotations

import random

import msgspec
import pytest

from detect.config import DetectConfig
from detect.model import ModelRow, ModelState, WindowModel
from ingest.event import Identity

CFG = DetectConfig(model_min_windows=60, model_batch=16, model_refit_every=100_000, model_trees=32)
WHO = Identity(key="entity:alice", kind="entity")


def _row(i: int, features: list[float]) -> ModelRow:
    return ModelRow(
        identity=WHO,
        hour=i,
        features=features,
        event_ids=[f"e{i}"],
        first_ts=i * 3600.0,
        last_ts=i * 3600.0 + 60,
    )


def _inliers(n: int, seed: int = 1, start: int = 0) -> list[ModelRow]:
    rng = random.Random(seed)
    return [
        _row(start + i, [rng.gauss(10, 1), rng.gauss(3, 0.5), rng.gauss(1, 0.2), rng.gauss(0, 0.1)])
        for i in range(n)
    ]


OUTLIER = [60.0, 40.0, 25.0, 5.0]


def _trained(seed: int = 0, rows: list[ModelRow] | None = None) -> WindowModel:
    """A model fitted on 80 ordinary identity-hours."""
    m = WindowModel(CFG, seed)
    for r in rows or _inliers(80):
        m.add(r)
    m.score_pending()  # the first batch past model_min_windows fits the forest
    assert m.state.fit_matrix, "the model should have fitted"
    return m


def _score(m: WindowModel, rows: list[ModelRow]) -> list[float]:
    for r in rows:
        m.add(r)
    return [p for _, p in m.score_pending()]


def test_empty_input_scores_nothing() -> None:
    m = WindowModel(CFG, 0)
    assert m.score_pending() == []
    assert not m.ready() and not m.overdue(1e12)
    # Before model_min_windows, windows are only collected: nothing scored, nothing fitted.
    for r in _inliers(10):
        m.add(r)
    assert m.overdue(10 * 3600.0 + CFG.model_max_delay_hours * 3600)
    assert m.score_pending() == []
    assert m.state.pending == [] and m.state.fit_matrix == [] and len(m.state.history) == 10
    assert _trained().score_pending() == []  # fitted, but nothing queued


def test_same_seed_same_scores() -> None:
    probe = [*_inliers(20, seed=9, start=100), _row(200, OUTLIER)]
    first = _score(_trained(seed=3), probe)
    again = _score(_trained(seed=3), probe)
    assert first == again and len(first) == len(probe)
    assert all(0.0 < p < 1.0 for p in first)
    # The seed is really used: another one builds another forest.
    assert _score(_trained(seed=4), probe) != first


def test_outlier_scores_as_more_unusual_than_inliers() -> None:
    probe = [*_inliers(30, seed=9, start=100), _row(200, OUTLIER)]
    scores = _score(_trained(), probe)
    outlier, inliers = scores[-1], scores[:-1]
    assert outlier < min(inliers)
    assert WindowModel.surprise(outlier) > max(WindowModel.surprise(p) for p in inliers)
    # Calibrated: beyond every training window, so at the floor of the tail probabilities.
    assert outlier == pytest.approx(0.5 / 81)


def test_batch_equals_one_by_one() -> None:
    probe = [*_inliers(15, seed=5, start=100), _row(200, OUTLIER), *_inliers(5, seed=6, start=300)]
    batch = _score(_trained(), probe)
    single = _trained()
    one_by_one = [p for r in probe for p in _score(single, [r])]
    assert one_by_one == batch


def test_restored_model_refits_identically() -> None:
    m = _trained(seed=2)
    probe = [*_inliers(10, seed=8, start=100), _row(200, OUTLIER)]
    blob = msgspec.msgpack.encode(m.state)
    restored = WindowModel(CFG, 2, msgspec.msgpack.decode(blob, type=ModelState))
    assert _score(restored, probe) == _score(m, probe)
