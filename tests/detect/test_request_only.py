"""Every rule judges request-only entries too (issue 14, item 6), on a real OpenBao's entries.

A request whose response entry never comes (a device that lost it, a server stopped mid-request,
a log cut) is the only record of that request. The engine hands it, after ``request_wait_seconds``,
to every rule that judges responses (see :data:`detect.rules.UNANSWERED_TYPE`): each rule whose
evidence is in the request (its path, its operation, the keys and the booleans of its data, which
are never HMAC'd) must still report it, once. Evidence that only a response holds (the issued
policies and TTL of a token, the outcome of a login) cannot be judged from a request and is not
asked for here.
"""

from __future__ import annotations

import pytest

from detect.engine import Engine
from ingest.event import AuditEvent

from .conftest import Scenario

pytestmark = pytest.mark.integration

#: (scenario step, rule that must report its request alone)
CASES = [
    ("policy_write", "policy-change"),
    ("policy_delete", "policy-change"),
    ("auth_enable", "auth-method-change"),
    ("auth_tune_non_hmac", "auth-method-change"),
    ("engine_disable", "secrets-engine-change"),
    ("tune_non_hmac", "secrets-engine-change"),
    ("audit_disable", "audit-tampering"),
    ("audit_enable", "audit-tampering"),
    ("audit_headers", "audit-tampering"),
    ("token_orphan", "orphan-token"),
    ("token_no_parent", "orphan-token"),
    ("destroy", "secret-destruction"),
    ("metadata_delete", "secret-destruction"),
    ("kv1_delete", "secret-destruction"),
    ("raft_snapshot", "raft-snapshot"),
    ("generate_root", "root-token-use"),
    ("transit_export", "key-export"),
    ("transit_exportable", "key-export"),
    ("pki_exported", "key-export"),
]


def _requests(s: Scenario, step: str) -> list[AuditEvent]:
    return [e for e in s[step] if e.is_request]


@pytest.mark.parametrize(("step", "rule"), CASES)
def test_a_request_without_its_response_is_still_judged(bao_scenario: Scenario, step: str, rule: str) -> None:
    reqs = _requests(bao_scenario, step)
    assert reqs, step
    eng = Engine({"model_enabled": False, "behaviour_enabled": False, "rules_warmup_hours": 0})
    # What the log held before the step (the setup the step relies on), whole.
    for prior in ("setup", "destroy_setup", "kv1_setup", "maker_setup"):
        eng.process_batch(bao_scenario[prior])
    # Rules whose evidence may never get a response judge the request at once; the others when
    # its response is overdue.
    alerts = eng.process_batch(reqs)
    alerts += eng.flush(reqs[-1].ts + eng.cfg.request_wait_seconds + 1.0)
    ids = {e.request_id for e in reqs}
    found = [a for a in alerts if a.detector == rule and set(a.event_ids) & ids]
    assert found, (step, rule)
    assert all(a.severity in ("medium", "high", "critical") for a in found), [
        (a.severity, a.title) for a in found
    ]
    # Once: the response arriving late adds nothing for this request.
    late = [e for e in bao_scenario[step] if e.is_response and e.request_id in ids]
    again = [a for a in eng.process_batch(late) if a.detector == rule and set(a.event_ids) & ids]
    assert again == [], [a.title for a in again]
