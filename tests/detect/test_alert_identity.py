"""An alert names who it is about: an AppRole client by its role, on every surface."""

from __future__ import annotations

from typing import Any

import pytest

from alerts.channels.base import identity_label
from detect.alert import Reason
from detect.engine import Engine
from detect.rulebase import RuleBase
from detect.types import DetectContext, Finding
from ingest.event import AuditEvent
from ingest.parse import Parser
from vaultwatch.api.schemas import AlertIdentityPublic


class _ReadsBySecret(RuleBase):
    """Flags every successful secret read (a stand-in detector: any finding will do)."""

    name = "test-secret-read"
    only_responses = True

    def observe(self, event: AuditEvent, ctx: DetectContext) -> list[Finding]:
        if event.operation != "read" or not event.path.startswith("secret/") or event.outcome != "ok":
            return []
        return [
            self._make(
                event, title="read", severity="high", key=event.path, reasons=[Reason("p", "", "", 1.0)]
            )
        ]


@pytest.mark.integration
def test_an_approle_clients_alert_carries_its_role_name(openbao: Any) -> None:
    c = openbao.client()
    c.sys.enable_auth_method("approle")
    c.sys.create_or_update_policy("reader", 'path "secret/data/app/*" { capabilities = ["read"] }')
    c.secrets.kv.v2.create_or_update_secret(path="app/db", secret={"password": "x"})
    c.write("auth/approle/role/deployer", token_policies="reader")
    role_id = c.read("auth/approle/role/deployer/role-id")["data"]["role_id"]
    secret_id = c.write("auth/approle/role/deployer/secret-id")["data"]["secret_id"]
    token = c.write("auth/approle/login", role_id=role_id, secret_id=secret_id)["auth"]["client_token"]
    openbao.client(token=token).secrets.kv.v2.read_secret_version(
        path="app/db", raise_on_deleted_version=True
    )
    parser = Parser()
    events = [parser.parse(line) for line in openbao.audit_log.read_bytes().splitlines() if line.strip()]
    engine = Engine(seed=0, detectors=[_ReadsBySecret()])
    alerts = [a for ev in events for a in engine.process(ev)]
    assert len(alerts) == 1
    ident = alerts[0].identity
    assert ident.display_name == "approle" and ident.role_name == "deployer"
    body = alerts[0].to_dict()
    assert body["identity"]["role_name"] == "deployer"
    assert identity_label(body) == "AppRole role deployer"  # Slack, Teams, PagerDuty, email
    assert AlertIdentityPublic.model_validate(body["identity"]).role_name == "deployer"
    # Any other identity's JSON has no role_name key at all (the contract's fields are unchanged).
    root = Engine(seed=0, detectors=[_ReadsBySecret()])
    c.secrets.kv.v2.read_secret_version(path="app/db", raise_on_deleted_version=True)
    later = [parser.parse(line) for line in openbao.audit_log.read_bytes().splitlines() if line.strip()]
    root_alerts = [a for ev in later[len(events) :] for a in root.process(ev)]
    assert root_alerts and "role_name" not in root_alerts[0].to_dict()["identity"]
