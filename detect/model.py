"""The multivariate model: an Isolation Forest over identity-hour feature vectors, scored in batches.

Each closed identity-hour (requests, distinct reads, LISTs, error share, first-seen templates,
addresses, hour-of-day and hour-of-week on the circle) is one row. Rows wait in a buffer and are
scored together (scikit-learn scores ~250k rows/s in a batch and ~150 rows/s one at a time). The
forest is refit with the injected seed every ``model_refit_every`` windows on the latest
``model_max_windows``; scores are calibrated against the training windows' own scores, so the
model reports a tail probability like every other signal. It catches combinations no single
signal flags (a busy hour *and* a new address *and* odd timing).

Only the training matrix is kept in the snapshot; the first batch after a restore refits from it
with the same seed, which rebuilds the identical forest.
"""

from __future__ import annotations

import bisect
import logging
import math
from typing import Any

import msgspec
import numpy as np
from sklearn.ensemble import IsolationForest

from ingest.event import Identity

from .config import DetectConfig

__all__ = ["ModelRow", "ModelState", "WindowModel"]

log = logging.getLogger(__name__)


class ModelRow(msgspec.Struct, kw_only=True):
    """One identity-hour waiting to be scored."""

    identity: Identity
    hour: int
    features: list[float]
    event_ids: list[str]
    first_ts: float
    last_ts: float


class ModelState(msgspec.Struct, kw_only=True):
    pending: list[ModelRow] = msgspec.field(default_factory=list)
    history: list[list[float]] = msgspec.field(default_factory=list)
    fit_matrix: list[list[float]] = msgspec.field(default_factory=list)
    since_fit: int = 0
    seen: int = 0


class WindowModel:
    """Batch-scored Isolation Forest with periodic refits (deterministic for a given seed)."""

    def __init__(self, cfg: DetectConfig, seed: int, state: ModelState | None = None) -> None:
        self.cfg = cfg
        self.seed = seed
        self.state = state or ModelState()
        self._forest: Any = None
        self._train_scores: list[float] = []
        # A restored model is refit lazily, on the next batch: restoring (e.g. for the API's
        # baseline views) stays cheap, and the seed makes the refit identical.

    def add(self, row: ModelRow) -> None:
        """Queue one closed window."""
        st = self.state
        st.pending.append(row)
        st.history.append(row.features)
        if len(st.history) > self.cfg.model_max_windows:
            del st.history[: len(st.history) - self.cfg.model_max_windows]
        st.seen += 1
        st.since_fit += 1

    def ready(self) -> bool:
        return len(self.state.pending) >= self.cfg.model_batch

    def overdue(self, now: float) -> bool:
        """True when the oldest queued window has waited longer than ``model_max_delay_hours``."""
        pend = self.state.pending
        return bool(pend) and now - pend[0].last_ts >= self.cfg.model_max_delay_hours * 3600

    def score_pending(self) -> list[tuple[ModelRow, float]]:
        """Score every queued window in one batch; returns ``(row, tail probability)`` pairs.

        Refits first when due. Before the first fit, windows are only collected.
        """
        st = self.state
        cfg = self.cfg
        if not st.pending:
            return []
        due = st.since_fit >= cfg.model_refit_every or (
            not st.fit_matrix and st.seen >= cfg.model_min_windows
        )
        if due and len(st.history) >= cfg.model_min_windows:
            st.fit_matrix = [list(r) for r in st.history]
            st.since_fit = 0
            self._fit(st.fit_matrix)
        rows, st.pending = st.pending, []
        if self._forest is None and st.fit_matrix:
            self._fit(st.fit_matrix)
        if self._forest is None:
            return []
        scores = self._forest.score_samples(np.asarray([r.features for r in rows], dtype=np.float64))
        n = len(self._train_scores)
        out: list[tuple[ModelRow, float]] = []
        for r, s in zip(rows, scores, strict=True):
            below = bisect.bisect_right(self._train_scores, float(s))
            out.append((r, (below + 0.5) / (n + 1)))
        return out

    def _fit(self, matrix: list[list[float]]) -> None:
        x = np.asarray(matrix, dtype=np.float64)
        forest = IsolationForest(
            n_estimators=self.cfg.model_trees, max_samples=min(256, len(x)), random_state=self.seed, n_jobs=1
        )
        forest.fit(x)
        self._forest = forest
        self._train_scores = sorted(float(v) for v in forest.score_samples(x))
        log.info("identity-window model fitted on %d windows", len(x))

    @staticmethod
    def surprise(p: float) -> float:
        return -math.log10(max(p, 1e-12))
