"""Detection settings with calibrated defaults.

Every threshold the behavioural engine uses lives here, so an operator can trade recall for
precision without touching code. The defaults were calibrated on multi-week benign workloads with
injected attacks (the target is at most 0.05 false medium+ alerts per 10k benign events), see
``tests/detect/test_engine.py``.

>>> cfg = DetectConfig.from_dict({"risk_threshold": 80, "unrelated": 1})
>>> cfg.risk_threshold, cfg.short_horizon_days
(80.0, 10.0)
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from .errors import ConfigError

__all__ = ["DetectConfig"]


_S = TypeVar("_S", bound=msgspec.Struct)


def convert_known(cls: type[_S], data: dict[str, Any] | None, what: str) -> _S:
    """``cls`` built from the keys of ``data`` it declares (other detectors own the rest);
    a bad value raises :class:`~detect.errors.ConfigError` naming the setting."""
    if not data:
        return cls()
    known = {k: v for k, v in data.items() if k in cls.__struct_fields__}
    try:
        return msgspec.convert(known, cls, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid {what}: {exc}") from None


def convert_positive(cls: type[_S], data: dict[str, Any] | None, what: str) -> _S:
    """:func:`convert_known`, then every numeric setting must be positive (thresholds, windows and
    counts: zero or less would silence or flood a detector)."""
    cfg = convert_known(cls, data, what)
    for fname in cls.__struct_fields__:
        value = getattr(cfg, fname)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0:
            raise ConfigError(f"invalid {what}: {fname} must be positive, got {value!r}")
    return cfg


class DetectConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Behavioural engine settings (days and hours are event time)."""

    #: Exponential decay time constants of the two baseline horizons.
    short_horizon_days: float = 10.0
    long_horizon_days: float = 180.0
    #: Top-K sizes per identity (space-saving counters); larger K costs memory per identity.
    k_dir: int = 48
    k_area: int = 16
    k_op: int = 96
    k_mount: int = 16
    k_address: int = 16
    k_subnet: int = 8
    #: Top-K sizes of the peer-group and organisation baselines.
    k_group: int = 512
    k_org: int = 4096
    #: Learning mode: a new or dormant identity learns until both hold (or the event count alone
    #: reaches ``learning_events`` after ``learning_min_days``).
    learning_days: float = 5.0
    learning_min_events: int = 50
    learning_events: int = 200
    learning_min_days: float = 1.0
    dormant_days: float = 30.0
    #: Warm-up of the habit-aware admin rules after the engine starts on a stream (hours of event
    #: time; 0 turns it off): when monitoring starts every routine is a "first time", and a week
    #: sees the weekly ones. Their successful acts in it are reported at ``low`` and establish the
    #: identity's habit (:mod:`detect.habit`); catastrophic facts (root, audit, key export,
    #: snapshots, HMAC off, plaintext secrets) are never lowered.
    rules_warmup_hours: float = 168.0
    #: Risk: accumulated points decay with this half-life; an alert fires at ``risk_threshold``
    #: or when ``families_to_alert`` distinct families each brought at least ``family_min_points``
    #: within ``risk_window_hours``.
    risk_half_life_hours: float = 12.0
    risk_window_hours: float = 24.0
    risk_threshold: float = 75.0
    families_to_alert: int = 3
    family_min_points: float = 25.0
    high_score: int = 80
    cold_start_cap: int = 60
    #: Signals below this surprise (-log10 of the tail probability) are not reported at all.
    min_surprise: float = 2.0
    #: Points per unit of surprise above ``min_surprise``.
    points_per_surprise: float = 20.0
    #: Volume signals need at least this many items in the hour before they can fire.
    volume_min_events: int = 60
    volume_min_distinct: int = 25
    volume_min_lists: int = 20
    error_min_errors: int = 15
    #: First-seen paths within 24 hours before slow harvesting can be flagged.
    day_new_min: int = 15
    #: Hour-of-week rarity needs this many active hours of history.
    time_min_hours: int = 40
    #: Repeated alerts with the same dedup key within this window update one alert.
    aggregation_hours: float = 6.0
    #: Feedback: suppression and "true positive" taint lifetimes.
    suppression_days: float = 30.0
    taint_days: float = 7.0
    #: Pending request entries wait this long (event time) for their response entry.
    request_wait_seconds: float = 60.0
    #: Model: windows are scored in batches of ``model_batch``; refit every ``model_refit_every``
    #: new windows once ``model_min_windows`` exist, on the latest ``model_max_windows``.
    model_enabled: bool = True
    model_batch: int = 512
    model_min_windows: int = 500
    model_refit_every: int = 5000
    model_max_windows: int = 4096
    model_trees: int = 64
    model_tail: float = 0.0005
    #: A partial batch is scored by :meth:`Engine.flush` only once its oldest window is this old
    #: (event time): scoring tiny batches often costs more than the whole stream.
    model_max_delay_hours: float = 12.0

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> DetectConfig:
        """Build from a mapping, ignoring keys that other detectors own."""
        cfg = convert_known(cls, data, "detection setting")
        if cfg.short_horizon_days <= 0 or cfg.long_horizon_days <= cfg.short_horizon_days:
            raise ConfigError("horizons must satisfy 0 < short_horizon_days < long_horizon_days")
        if cfg.risk_threshold <= 0 or cfg.risk_half_life_hours <= 0:
            raise ConfigError("risk_threshold and risk_half_life_hours must be positive")
        if cfg.rules_warmup_hours < 0:
            raise ConfigError("rules_warmup_hours must be >= 0")
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping of every setting."""
        out: dict[str, Any] = msgspec.to_builtins(self)
        return out
