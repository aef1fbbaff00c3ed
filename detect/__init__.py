"""Detection: per-identity behavioural baselines, signals, a batch-scored model, risk and alerts.

Pure logic: no network, no database, no files, no wall clock (event time only), randomness from
an injected seed. Configuration arrives as data: a settings mapping, and the access model as a
parsed :class:`AccessPolicy` (``config["policy"]``; the shell reads policy files). The public
surface::

    from detect import Engine
    engine = Engine(config, seed=0)            # behaviour + detect.rules.default_rules(config)
    for event in events:
        for alert in engine.process(event):    # new or updated detect.alert.Alert objects
            ...
    engine.flush(now)                          # time-driven work at the end of a stream
    engine.external(finding, now)              # a finding made outside the stream, same rules

The alert contract (``vaultwatch.alert/v1``) lives in :mod:`detect.alert`, beside the engine
that creates, merges and takes verdicts on alerts; its names are re-exported here. Errors form
one tree under :class:`DetectError` (drawn in :mod:`detect.errors`).
"""

from __future__ import annotations

from .alert import (
    MAX_EVENT_IDS,
    SCHEMA,
    SEVERITIES,
    STATUSES,
    Alert,
    AlertIdentity,
    Reason,
    alert_id,
    decode_alert,
    encode_alert,
    severity_rank,
)
from .baseline import FEATURES, Baseline, Clock, TopK
from .behaviour import Behaviour, group_key
from .config import DetectConfig
from .engine import BEHAVIOUR_DETECTOR, STATE_VERSION, Engine
from .errors import ConfigError, DetectError, PolicyError, StateError, VerdictError
from .model import WindowModel
from .policy import AccessModelDetector, AccessPolicy, RotationTracker, default_policy, parse_policy
from .rules import RulesConfig, default_rules
from .templates import directory_of, template_path
from .types import FAMILIES, BaselineView, DetectContext, Detector, Finding

__all__ = [
    "BEHAVIOUR_DETECTOR",
    "FAMILIES",
    "FEATURES",
    "MAX_EVENT_IDS",
    "SCHEMA",
    "SEVERITIES",
    "STATE_VERSION",
    "STATUSES",
    "AccessModelDetector",
    "AccessPolicy",
    "Alert",
    "AlertIdentity",
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
    "PolicyError",
    "Reason",
    "RotationTracker",
    "RulesConfig",
    "StateError",
    "TopK",
    "VerdictError",
    "WindowModel",
    "alert_id",
    "decode_alert",
    "default_policy",
    "default_rules",
    "directory_of",
    "encode_alert",
    "group_key",
    "parse_policy",
    "severity_rank",
    "template_path",
]
