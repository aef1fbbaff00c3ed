"""Two peer rule sets, re-implemented from their published logic, for the scoreboard (``make eval``).

Facts were taken from the published descriptions below; no code was copied. Each function takes
parsed audit events (:class:`ingest.event.AuditEvent`, in log order) and returns alerts as plain
dicts (``detector``, ``title``, ``severity``, ``event_ids``), the shape :mod:`bench.eval_score`
scores.

**Datadog** (Cloud SIEM out-of-the-box rules for ``source:vault``), :func:`datadog_rules`:

1. *Vault root token* — https://docs.datadoghq.com/security/default_rules/vault-root-token-usage-detected
   (also published as ``d6v-ktd-7pk``): a signal when ``root`` is among ``@auth.policies`` or a
   request hits ``sys/generate-root``; the change log says the query was changed to detect root
   token *creation* (so a response whose ``auth.policies`` holds ``root`` counts too) and the
   severity was lowered to **medium** (September 2024).
2. *Audit device disabled* — the rule page itself is not in the stored corpus we could search.
   Datadog's post "Secure HashiCorp Vault with Datadog Cloud SIEM"
   (https://www.datadoghq.com/blog/hashicorp-vault-security-datadog/) names disabling audit
   logging as one of the threats its out-of-the-box Vault rules detect; this is the closest
   documented version: a ``delete`` on ``sys/audit/<device>`` (a disable), severity **high**.
   Its exact query and grouping are our assumption.

Signals are grouped the way Datadog rules are (the rule's group-by, keep-alive and maximum
signal duration): one signal per rule and identity; a match within ``keep_alive`` (1 h) of the
signal's last match joins it, up to ``max_duration`` (24 h). The exact group-by values of the
published rule are not given ("Updated group by values"); we group by the caller's identity.

**HashiCorp** (the alerts of "Vault Logging and Alerting on Day 1",
https://www.hashicorp.com/blog/vault-logging-and-alerting-on-day-1, and its companion handler in
https://github.com/jacobm3/vault-syslog-ng-audit, ``terraform/scripts/vault-audit-log-handler.py``),
:func:`hashicorp_rules`. The handler checks every audit entry and posts one alert per match:

1. a policy from an alert list (``root``) is among the caller's policies;
2. the request runs in an alert-listed namespace (``break-glass``);
3. the path starts with ``sys/generate-root``;
4. the path starts with an operator-listed sensitive prefix (the example lists
   ``secret/data/emergency-only``);
5. a namespace-scoped sensitive path (the example: namespace ``prod/`` with
   ``secret/data/never-use``, namespace ``prod-us/`` with a PKI issue path).

Checks 2, 4 and 5 name the operator's own break-glass namespaces and emergency-only paths, which
are never touched in normal work; a generated organisation has none, so the scoreboard keeps the
handler's examples and those checks stay silent there (listing ordinary protected paths instead
would page on every normal read, which is not what the guidance says). Every alert is paged (no
severity in the handler): we score them as **high**, and count one alert per request (the
handler would post once for the request entry and once for the response entry).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ingest.event import AuditEvent

__all__ = [
    "DATADOG",
    "HASHICORP",
    "HASHICORP_EXAMPLE_NAMESPACE_PATHS",
    "HASHICORP_EXAMPLE_SENSITIVE",
    "datadog_rules",
    "hashicorp_rules",
]

DATADOG = "datadog-ootb"
HASHICORP = "hashicorp-day1"
HOUR = 3600.0
DAY = 86400.0

HASHICORP_EXAMPLE_SENSITIVE: tuple[str, ...] = ("secret/data/emergency-only",)
HASHICORP_EXAMPLE_NAMESPACE_PATHS: tuple[tuple[str, str], ...] = (
    ("prod/", "secret/data/never-use"),
    ("prod-us/", "pki/issue/hashicorp-test-dot-com"),
)


def _policies(ev: AuditEvent) -> tuple[str, ...]:
    return tuple(ev.auth.policies or ()) + tuple(ev.auth.token_policies or ())


def _created_policies(ev: AuditEvent) -> tuple[str, ...]:
    auth = ev.response.auth if ev.response is not None else None
    if auth is None:
        return ()
    return tuple(auth.policies or ()) + tuple(auth.token_policies or ())


def _request_path(ev: AuditEvent) -> str:
    return (ev.request.path or "").lstrip("/")


def _namespace(ev: AuditEvent) -> str:
    ns = ev.request.namespace
    return (ns.path if ns is not None else None) or ev.namespace or ""


@dataclass
class _Signal:
    rule: str
    title: str
    severity: str
    group: str
    start: float
    last: float
    event_ids: list[str] = field(default_factory=list)


def _grouped(
    matches: Iterable[tuple[str, str, str, str, float, str | None]],
    *,
    keep_alive: float,
    max_duration: float,
) -> list[dict[str, Any]]:
    """Datadog-style signals from ``(rule, title, severity, group, ts, request_id)`` matches."""
    open_: dict[tuple[str, str], _Signal] = {}
    done: list[_Signal] = []
    for rule, title, severity, group, ts, rid in matches:
        key = (rule, group)
        sig = open_.get(key)
        if sig is not None and (ts - sig.last > keep_alive or ts - sig.start > max_duration):
            done.append(sig)
            sig = None
        if sig is None:
            sig = open_[key] = _Signal(rule, title, severity, group, ts, ts)
        sig.last = ts
        if rid and rid not in sig.event_ids:
            sig.event_ids.append(rid)
    done.extend(open_.values())
    done.sort(key=lambda s: (s.start, s.rule, s.group))
    return [
        {
            "detector": f"{DATADOG}:{s.rule}",
            "title": s.title,
            "severity": s.severity,
            "event_ids": s.event_ids,
        }
        for s in done
    ]


def datadog_rules(
    events: Sequence[AuditEvent], *, keep_alive: float = HOUR, max_duration: float = DAY
) -> list[dict[str, Any]]:
    """Datadog's two out-of-the-box Vault rules over ``events`` (see the module docstring)."""

    def matches() -> Iterable[tuple[str, str, str, str, float, str | None]]:
        for ev in events:
            path = _request_path(ev)
            group = ev.identity.key
            if (
                "root" in _policies(ev)
                or "root" in _created_policies(ev)
                or path.startswith("sys/generate-root")
            ):
                yield ("vault-root-token", "Vault root token", "medium", group, ev.ts, ev.request_id)
            if ev.operation == "delete" and path.startswith("sys/audit/"):
                yield (
                    "vault-audit-disabled",
                    "Vault audit device disabled",
                    "high",
                    group,
                    ev.ts,
                    ev.request_id,
                )

    return _grouped(matches(), keep_alive=keep_alive, max_duration=max_duration)


def hashicorp_rules(
    events: Sequence[AuditEvent],
    *,
    alert_policies: Sequence[str] = ("root",),
    alert_namespaces: Sequence[str] = ("break-glass",),
    sensitive_prefixes: Sequence[str] = HASHICORP_EXAMPLE_SENSITIVE,
    namespace_paths: Sequence[tuple[str, str]] = HASHICORP_EXAMPLE_NAMESPACE_PATHS,
) -> list[dict[str, Any]]:
    """The five alerts of HashiCorp's Day-1 audit alerting guidance (see the module docstring)."""
    by_request: dict[str, dict[str, Any]] = {}
    anonymous: list[dict[str, Any]] = []
    want_policies = set(alert_policies)
    want_ns = {n.strip("/") for n in alert_namespaces}
    for ev in events:
        path = _request_path(ev)
        ns = _namespace(ev)
        reasons: list[str] = []
        for policy in sorted(want_policies.intersection(_policies(ev))):
            reasons.append(f"{policy} policy used")
        if ns.strip("/") and ns.strip("/") in want_ns:
            reasons.append(f"{ns} namespace used")
        if path.startswith("sys/generate-root"):
            reasons.append("root token generation path accessed")
        if any(path.startswith(p) for p in sensitive_prefixes):
            reasons.append("sensitive path accessed")
        if any(ns.strip("/") == n.strip("/") and path.startswith(p) for n, p in namespace_paths):
            reasons.append("namespace-scoped sensitive path accessed")
        if not reasons:
            continue
        rid = ev.request_id
        if not rid:
            anonymous.append(_hashicorp_alert(reasons, ()))
            continue
        alert = by_request.get(rid)
        if alert is None:
            by_request[rid] = _hashicorp_alert(reasons, (rid,))
        else:
            alert["title"] = "; ".join(dict.fromkeys([*alert["title"].split("; "), *reasons]))
    return [*by_request.values(), *anonymous]


def _hashicorp_alert(reasons: list[str], event_ids: tuple[str, ...]) -> dict[str, Any]:
    return {
        "detector": HASHICORP,
        "title": "; ".join(reasons),
        "severity": "high",
        "event_ids": list(event_ids),
    }
