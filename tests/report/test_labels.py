"""Identities in the report are named by :func:`vaultwatch.naming.identity_label`: AppRole clients
by their role name (or policy), people by their login name, each with its short key."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd

from vaultwatch.report.data import Period, ReportOptions, access_section, config_changes, report_label

T0 = pd.Timestamp("2026-09-14T10:00:00Z")
PERIOD = Period("daily", datetime(2026, 9, 14, tzinfo=UTC), datetime(2026, 9, 15, tzinfo=UTC))
DEPLOYER = "entity:33a21325-bca7-e537-42cd-717a973b2289"
BILLING = "entity:7c1f0d2e-aaaa-bbbb-cccc-000011112222"
ALICE = "entity:9e8d7c6b-1111-2222-3333-444455556666"


def _requests(**extra: list[object]) -> pd.DataFrame:
    rows = {
        "time": [
            T0,
            T0 + pd.Timedelta(minutes=1),
            T0 + pd.Timedelta(minutes=2),
            T0 + pd.Timedelta(minutes=3),
        ],
        "request_id": ["r1", "r2", "r3", "r4"],
        "type": ["response"] * 4,
        "identity_key": [DEPLOYER, BILLING, ALICE, ALICE],
        "identity_kind": ["entity"] * 4,
        "entity_id": [k.removeprefix("entity:") for k in (DEPLOYER, BILLING, ALICE, ALICE)],
        "display_name": ["approle", "approle", "userpass-alice", "userpass-alice"],
        "policies": [
            np.array(["default", "kv-reader"]),
            np.array(["default", "kv-reader"]),
            np.array(["default", "developer"]),
            np.array(["default", "developer"]),
        ],
        "path": ["kv/data/app/db", "kv/data/app/db", "kv/data/app/db", "sys/policies/acl/dev"],
        "operation": ["read", "read", "read", "update"],
        "mount_point": ["kv/", "kv/", "kv/", "sys/"],
        "mount_type": ["kv", "kv", "kv", "system"],
        "remote_ip": ["10.0.0.5", "10.0.0.6", "10.0.0.7", "10.0.0.7"],
        "outcome": ["ok"] * 4,
    }
    rows.update(extra)
    return pd.DataFrame(rows)


def test_approle_clients_are_told_apart_by_role_name() -> None:
    requests = _requests(role_name=["deployer", "billing", None, None])
    access = access_section(requests, requests.iloc[0:0], PERIOD, ReportOptions())
    labels = {r["identity"]: r["label"] for r in access["top_identities"]}
    assert labels[DEPLOYER] == "deployer (entity:33a21325-…)"
    assert labels[BILLING] == "billing (entity:7c1f0d2e-…)"
    assert labels[ALICE] == "alice (entity:9e8d7c6b-…)"
    (change,) = config_changes(requests)
    assert change["label"] == "alice (entity:9e8d7c6b-…)" and change["identity"] == ALICE


def test_without_role_names_approle_clients_read_as_their_policy_not_approle() -> None:
    requests = _requests()
    access = access_section(requests, requests.iloc[0:0], PERIOD, ReportOptions())
    labels = {r["identity"]: r["label"] for r in access["top_identities"]}
    assert labels[DEPLOYER].startswith("AppRole kv-reader (") and not labels[DEPLOYER].startswith("approle")


def test_report_label_falls_back_to_the_key() -> None:
    assert report_label({"identity_key": "entity:abc"}) == "abc… (entity:abc)"
    assert report_label({"identity_key": "anon:?"}) == "unauthenticated (no address in the entry) (anon:?)"
    assert report_label({"identity_key": "root:root", "display_name": "root"}) == "root token (root:root)"
