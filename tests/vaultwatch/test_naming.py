"""The one naming function for identities (:mod:`vaultwatch.naming`): each source of a name, in
the order a person would pick it, and the key kept as the secondary line."""

from __future__ import annotations

import doctest

from detect.alert import AlertIdentity
from ingest.event import Identity
from vaultwatch import naming
from vaultwatch.naming import identity_label, label_identity


def test_entity_name_comes_first_unless_vault_made_it_up() -> None:
    named = identity_label("entity:7693f9d5", display_name="userpass-alice", entity_name="Alice Martin")
    assert named.name == "Alice Martin" and named.key == "entity:7693f9d5"
    auto = identity_label("entity:7693f9d5", display_name="userpass-alice", entity_name="entity_1a2b3c4d")
    assert auto.name == "alice"


def test_login_name_from_the_token_display_name_with_its_auth_mount() -> None:
    alice = identity_label("entity:1", display_name="userpass-alice", policies=("default", "developer"))
    assert alice == ("alice", "auth userpass · policies developer", "entity:1")
    ci = identity_label("token:token-ci-deploy", display_name="token-ci-deploy", policies=("pxl-ci",))
    assert ci.name == "ci-deploy" and ci.role.startswith("auth token")
    # No display name at all: the key's own display name part.
    assert identity_label("token:ldap-bob").name == "bob"


def test_approle_clients_are_named_by_their_role_name() -> None:
    a = identity_label("entity:1", display_name="approle", role_name="deployer", policies=("kv-reader",))
    b = identity_label("entity:2", display_name="approle", role_name="billing", policies=("kv-reader",))
    assert (a.name, b.name) == ("deployer", "billing")
    assert a.role == "auth approle · AppRole · policies kv-reader"
    # AppRole mounted elsewhere: the token's display name is that mount.
    elsewhere = identity_label("entity:3", display_name="apps", role_name="web")
    assert elsewhere.name == "web" and elsewhere.role.startswith("auth apps · AppRole")
    # The role name beats an entity name Vault made up, and an alias named by the role_id.
    assert (
        identity_label(
            "entity:4",
            display_name="approle",
            role_name="deployer",
            entity_name="entity_9f8e7d6c",
            alias_names=("5f0c6b1e-1111-2222-3333-444455556666",),
        ).name
        == "deployer"
    )
    # Without a role name (an alert's identity carries none): the first policy, and the addresses.
    old = identity_label("entity:5", display_name="approle", policies=("svc-a",), addresses=("10.0.0.5",))
    assert old.name == "AppRole svc-a" and "from 10.0.0.5" in old.role


def test_alias_name_when_nothing_else_names_it() -> None:
    assert identity_label("entity:abcdef12-3456", alias_names=("", "ops-robot")).name == "ops-robot"
    uuid_only = identity_label("entity:abcdef12-3456", alias_names=("5f0c6b1e-1111-2222-3333-444455556666",))
    assert uuid_only.name == "abcdef12…"


def test_the_key_is_the_fallback_and_always_the_last_line() -> None:
    assert identity_label("entity:abcdef1234567890").name == "abcdef12…"
    unnamed = identity_label("token:token#0123456789abcdef", display_name="token")
    assert unnamed.name == "unnamed token #0123456789ab…" and unnamed.key == "token:token#0123456789abcdef"
    assert identity_label("token:~0123456789abcdef").name == "unnamed token ~0123456789ab…"
    assert identity_label("anon:?").name == "unauthenticated (no address in the entry)"
    assert identity_label("anon:10.0.0.9").name == "unauthenticated from 10.0.0.9"
    assert identity_label("root:token", display_name="token").name == "root token"
    assert identity_label("login:userpass:bob").name == "bob (login attempts on userpass)"
    assert identity_label("login:approle:role_id=0123456789abcdef").name.startswith("AppRole/machine login")
    assert identity_label("").name == ""


def test_label_identity_reads_any_identity_shape() -> None:
    ident = Identity(
        key="entity:33a2",
        kind="entity",
        entity_id="33a2",
        display_name="approle",
        policies=("default", "kv-reader"),
        role_name="deployer",
    )
    assert label_identity(ident) == ("deployer", "auth approle · AppRole · policies kv-reader", "entity:33a2")
    # An older event without the field: the role name is read from the auth metadata.
    legacy = Identity(
        key="entity:33a2", kind="entity", display_name="approle", metadata={"role_name": "deployer"}
    )
    assert label_identity(legacy).name == "deployer"
    # An alert's identity has no role name: named by its policy, as before.
    alert_ident = AlertIdentity(key="entity:33a2", display_name="approle", policies=("kv-reader",))
    assert label_identity(alert_ident).name == "AppRole kv-reader"
    assert label_identity({"key": "entity:1", "display_name": "userpass-alice"}).name == "alice"
    assert label_identity(alert_ident, role_name="deployer").name == "deployer"


def test_docstring_examples_run() -> None:
    result = doctest.testmod(naming)
    assert result.failed == 0 and result.attempted > 0
