"""Detection: per-identity behavioural baselines, signals, a batch-scored model, risk and alerts.

Pure logic: no network, no database, no wall clock (event time only), randomness from an
injected seed. The public surface::

    from detect import Engine
    engine = Engine(config, seed=0)            # behaviour + detect.rules.default_rules(config)
    for event in events:
        for alert in engine.process(event):    # new or updated detect.alert.Alert objects
            ...
    engine.flush(now)                          # time-driven work at the end of a stream
"""

from __future__ import annotations

from .baseline import FEATURES, Baseline, Clock, TopK
from .behaviour import Behaviour, group_key
from .config import DetectConfig
from .engine import BEHAVIOUR_DETECTOR, Engine
from .errors import ConfigError, DetectError, StateError, VerdictError
from .templates import directory_of, template_path
from .types import FAMILIES, BaselineView, DetectContext, Detector, Finding

__all__ = [
    "BEHAVIOUR_DETECTOR",
    "FAMILIES",
    "FEATURES",
    "Baseline",
    "BaselineView",
    "Behaviour",
    "Clock",
    "ConfigError",
    "DetectConfig",
    "DetectContext",
    "DetectError",
    "Detector",
    "Engine",
    "Finding",
    "StateError",
    "TopK",
    "VerdictError",
    "directory_of",
    "group_key",
    "template_path",
]
