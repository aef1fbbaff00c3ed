"""What the parser records on real logs: plaintext fields, identities, and no raw credential downstream.

Entries come from a real OpenBao (one HMAC'ing file device and one ``log_raw`` device, driven by
hvac) and from the shared HashiCorp Vault log (skipped when absent). Publisher-masked values and
KMIP entries, which OpenBao cannot write, are built from real entries or from the documented
schema (``kmip-request``/``kmip-response`` entries holding TTLV trees of ``tag``/``type``/``value``).
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hvac.exceptions
import msgspec
import pytest

from detect.engine import Engine
from ingest.event import AuditEvent
from ingest.parse import Parser
from ingest.quarantine import MemoryQuarantine
from ingest.redact import is_masked
from vaultwatch.cli.inspect import summarise
from vaultwatch.demo.servers import AuditDevice, OpenBaoServer
from vaultwatch.service.archive import EventArchive
from vaultwatch.service.replay import replay

pytestmark = pytest.mark.integration

_CANARY_DB = "canary-db-pw-91xQ"
_CANARY_USER = "canary-user-pw-4Lz"
_CANARY_KV = "canary-kv-pw-Zt8"


@dataclass
class BaoLogs:
    main: Path
    raw: Path
    #: Plaintext values that must never leave the parser (tokens, accessors, passwords, secret ids).
    canaries: list[str] = field(default_factory=list)
    #: Accessors of tokens created with Vault's default display name, and of two named tokens.
    default_accessors: list[str] = field(default_factory=list)
    named_accessors: list[str] = field(default_factory=list)
    batch_token: str = ""


def _headers(client: Any) -> None:
    client.session.headers["X-Request-Id"] = "req-7f3a"


@pytest.fixture(scope="module")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaoLogs]:
    work = tmp_path_factory.mktemp("bao-real")
    main, raw = work / "audit.log", work / "raw.log"
    devices = [
        AuditDevice("file", "file", {"file_path": str(main)}),
        AuditDevice("file", "raw", {"file_path": str(raw), "log_raw": "true"}),
    ]
    logs = BaoLogs(main=main, raw=raw)
    with OpenBaoServer(work / "srv", devices=devices) as srv:
        c = srv.client()
        logs.canaries.append(srv.root_token)
        # Audited headers: three ordinary ones and one carrying a credential, all unhashed.
        for h in ("user-agent", "x-request-id", "accept", "x-vault-token"):
            c.write(f"sys/config/auditing/request-headers/{h}", hmac=False)
        c.sys.enable_secrets_engine("database", path="database")
        c.write(
            "database/config/pg",
            plugin_name="postgresql-database-plugin",
            verify_connection=False,
            allowed_roles="*",
            connection_url=f"postgresql://vwadmin:{_CANARY_DB}@127.0.0.1:1/app",
        )
        c.sys.enable_auth_method("userpass")
        c.sys.create_or_update_policy("app-read", 'path "secret/data/app/*" { capabilities = ["read"] }')
        c.write("auth/userpass/users/alice", password=_CANARY_USER, policies=["app-read"])
        c.secrets.kv.v2.create_or_update_secret(path="app/db", secret={"password": _CANARY_KV})
        anon = srv.client(token="")
        with contextlib.suppress(hvac.exceptions.VaultError):
            anon.auth.userpass.login("alice", "not-the-password")
        login = anon.auth.userpass.login("alice", _CANARY_USER, use_token=False)["auth"]
        logs.canaries += [login["client_token"], login["accessor"], _CANARY_DB, _CANARY_USER, _CANARY_KV]
        srv.client(token=login["client_token"]).secrets.kv.v2.read_secret_version(
            path="app/db", raise_on_deleted_version=True
        )
        # Tokens with the default display name: `token` (the API default) and `token-token` (hvac's).
        created = [c.write("auth/token/create", policies=["default"])["auth"] for _ in range(2)]
        created += [c.auth.token.create(policies=["default"])["auth"] for _ in range(2)]
        named = [c.auth.token.create(policies=["default"], display_name="ci-bot")["auth"] for _ in range(2)]
        batch = c.write("auth/token/create", policies=["default"], type="batch")["auth"]
        for t in [*created, *named, batch]:
            logs.canaries.append(t["client_token"])
            if t.get("accessor"):
                logs.canaries.append(t["accessor"])
            tc = srv.client(token=t["client_token"])
            _headers(tc)
            tc.auth.token.lookup_self()
        logs.default_accessors = [t["accessor"] for t in created]
        logs.named_accessors = [t["accessor"] for t in named]
        logs.batch_token = batch["client_token"]
        c.sys.enable_auth_method("approle")
        c.write("auth/approle/role/deployer", token_policies=["default"])
        role_id = c.read("auth/approle/role/deployer/role-id")["data"]["role_id"]
        secret = c.write("auth/approle/role/deployer/secret-id")["data"]
        logs.canaries += [secret["secret_id"], secret["secret_id_accessor"]]
        app = srv.client(token="").auth.approle.login(role_id, secret["secret_id"], use_token=False)["auth"]
        logs.canaries += [app["client_token"], app["accessor"]]
        srv.client(token=app["client_token"]).auth.token.lookup_self()
        c.auth.token.lookup_accessor(created[0]["accessor"])
        bad = srv.client(token="s.vwNotARealToken0000000000")
        with contextlib.suppress(hvac.exceptions.VaultError):
            bad.secrets.kv.v2.read_secret_version(path="app/db", raise_on_deleted_version=True)
    yield logs


def _events(path: Path, parser: Parser | None = None) -> list[AuditEvent]:
    p = parser or Parser()
    return [p.parse(line, source=path.name) for line in path.read_bytes().splitlines() if line.strip()]


def _by_path(events: list[AuditEvent], path: str, *, response: bool = True) -> list[AuditEvent]:
    return [e for e in events if e.path == path and e.is_response == response]


# -- 1. plaintext precision ----------------------------------------------------------------------


def test_log_raw_secrets_are_named(bao: BaoLogs) -> None:
    events = _events(bao.raw)
    db = _by_path(events, "database/config/pg")
    assert db and all("request.data.connection_url" in e.plaintext_fields for e in db)
    logins = [e for e in _by_path(events, "auth/userpass/login/alice") if e.outcome == "ok"]
    assert logins and {
        "request.data.password",
        "response.auth.client_token",
        "response.auth.accessor",
    } <= set(logins[0].plaintext_fields)
    reads = [e for e in _by_path(events, "secret/data/app/db") if e.operation == "read" and e.outcome == "ok"]
    assert reads and "response.data.data.password" in reads[0].plaintext_fields
    created = [e for e in _by_path(events, "auth/token/create") if e.outcome == "ok"]
    with_accessor = [e for e in created if e.response and e.response.auth and e.response.auth.accessor]
    assert with_accessor and all("response.auth.accessor" in e.plaintext_fields for e in with_accessor)
    approle = _by_path(events, "auth/approle/login")
    assert approle and "request.data.secret_id" in approle[0].plaintext_fields
    # The caller's own token and accessor, written in clear on every authenticated entry.
    authed = [e for e in events if e.auth.accessor]
    assert authed and all({"auth.client_token", "auth.accessor"} <= set(e.plaintext_fields) for e in authed)


def test_ordinary_audited_headers_are_not_secrets(bao: BaoLogs) -> None:
    events = _events(bao.main)
    with_headers = [e for e in events if e.request.headers]
    seen = {h for e in with_headers for h in (e.request.headers or {})}
    assert {"user-agent", "x-request-id", "accept"} <= seen, seen
    flagged = {f for e in events for f in e.plaintext_fields}
    assert (
        not {"request.headers.user-agent", "request.headers.x-request-id", "request.headers.accept"} & flagged
    )
    # The header carrying a credential is one, and its value is gone.
    bad = [e for e in events if e.request.headers and "x-vault-token" in e.request.headers]
    assert bad and all("request.headers.x-vault-token" in e.plaintext_fields for e in bad)
    assert all("s.vwNotARealToken" not in json.dumps(e.request.headers) for e in bad)


_MASKS = (
    "****",
    "*****",
    "<redacted>",
    "REDACTED",
    "xxxxxxxx",
    "\u2022\u2022\u2022\u2022",
    "<REDACTED>",
    "[MASKED]",
)


def _mask_tree(node: Any, masks: Iterator[str]) -> Any:
    if isinstance(node, str):
        return next(masks)
    if isinstance(node, dict):
        return {k: _mask_tree(v, masks) for k, v in node.items()}
    if isinstance(node, list):
        return [_mask_tree(v, masks) for v in node]
    return node


def _cycle(values: tuple[str, ...]) -> Iterator[str]:
    while True:
        yield from values


def test_publisher_masked_values_are_not_plaintext(bao: BaoLogs) -> None:
    """A real log_raw log as a publisher would post it: every credential and data value masked."""
    masks = _cycle(_MASKS)
    parser = Parser()
    n = 0
    for line in bao.raw.read_bytes().splitlines():
        d = json.loads(line)
        for where in ("auth", "request", "response"):
            sect = d.get(where) or {}
            for k in ("client_token", "accessor", "client_token_accessor", "data", "headers"):
                if k in sect:
                    sect[k] = _mask_tree(sect[k], masks)
            ra = sect.get("auth") if where == "response" else None
            if ra:
                for k in ("client_token", "accessor"):
                    if k in ra:
                        ra[k] = next(masks)
        ev = parser.parse(json.dumps(d))
        assert ev.plaintext_fields == () or ev.plaintext_fields == ("request.path",), (
            ev.path,
            ev.plaintext_fields,
        )
        n += 1
    assert n > 40
    assert not is_masked("[REDACTED]")  # vaultwatch's own mark: a value it redacted (see ingest.codec)
    assert not any(is_masked(v) for v in ("hunter2", "s3cret-pw", "x", "**", "abc*"))


def _ttlv(tag: str, type_: str, value: Any) -> dict[str, Any]:
    return {"tag": tag, "type": type_, "value": value}


def _kmip_entry(kind: str, payload: list[dict[str, Any]], rid: str) -> bytes:
    header = _ttlv(
        "RequestHeader",
        "Structure",
        [
            _ttlv(
                "ProtocolVersion",
                "Structure",
                [
                    _ttlv("ProtocolVersionMajor", "Integer", "1"),
                    _ttlv("ProtocolVersionMinor", "Integer", "4"),
                ],
            ),
            _ttlv("BatchCount", "Integer", "1"),
        ],
    )
    batch = _ttlv("BatchItem", "Structure", [_ttlv("Operation", "Enumeration", "0x0000001e"), *payload])
    tree = _ttlv("RequestMessage", "Structure", [header, batch])
    entry: dict[str, Any] = {
        "time": "2026-03-01T10:00:00.123Z",
        "type": f"kmip-{kind}",
        "request": {
            "id": rid,
            "operation": "update",
            "client_certificate_serial_number": "4096112233445566778899",
            "namespace": {"id": "root"},
            "path": "kmip/",
            "remote_address": "10.1.2.3:61000",
            "data": {"kmip_request": tree},
        },
    }
    if kind == "response":
        entry["response"] = {
            "data": {
                "kmip_response": _ttlv(
                    "ResponseMessage",
                    "Structure",
                    [_ttlv("BatchItem", "Structure", [_ttlv("ResultStatus", "Enumeration", "0x00000000")])],
                )
            }
        }
    return json.dumps(entry).encode()


def test_kmip_structure_is_not_plaintext() -> None:
    p = Parser()
    stamp = _ttlv("ActivationDate", "DateTime", "2026-03-01T10:00:00Z")
    uid = _ttlv("UniqueIdentifier", "TextString", "9f1e0c2a-5b7d-4e3f-8a61-2c4d6e8f0a1b")
    for kind in ("request", "response"):
        ev = p.parse(_kmip_entry(kind, [uid, stamp], "k1"))
        assert ev.plaintext_fields == (), ev.plaintext_fields
        assert ev.request.data == json.loads(_kmip_entry(kind, [uid, stamp], "k1"))["request"]["data"]
    # Key material is a secret wherever it sits.
    key = _ttlv(
        "KeyBlock",
        "Structure",
        [
            _ttlv("KeyFormatType", "Enumeration", "0x00000001"),
            _ttlv(
                "KeyValue",
                "Structure",
                [_ttlv("KeyMaterial", "ByteString", "a1b2c3d4e5f60718293a4b5c6d7e8f90")],
            ),
        ],
    )
    ev = p.parse(_kmip_entry("request", [key], "k2"))
    assert len(ev.plaintext_fields) == 1 and ev.plaintext_fields[0].startswith("request.data.kmip_request.")
    assert "a1b2c3d4e5f60718293a4b5c6d7e8f90" not in msgspec.json.encode(ev.request).decode()


# -- 2. and 3. identity keys ------------------------------------------------------------------


def _moved_token(line: bytes) -> bytes:
    """The OpenBao entry of a request with an unknown token, as Vault writes it: the token's
    HMAC in ``auth.client_token`` too (the shared Vault log's shape)."""
    d = json.loads(line)
    d["auth"]["client_token"] = d["request"]["client_token"]
    return json.dumps(d).encode()


def test_token_without_accessor_gets_a_real_key(bao: BaoLogs) -> None:
    lines = [ln for ln in bao.main.read_bytes().splitlines() if b"secret/data/app/db" in ln]
    unknown = [ln for ln in lines if b'"error":"permission denied"' in ln or b"permission denied" in ln]
    assert unknown
    p = Parser()
    keys = {p.parse(_moved_token(ln)).identity.key for ln in unknown}
    assert keys and all("None" not in k for k in keys)
    assert all(k.startswith("token:") for k in keys), keys
    # A batch token has no accessor: its key comes from the token HMAC, not from the display name.
    batch = [
        e for e in _events(bao.main) if e.auth.token_type == "batch" and e.path == "auth/token/lookup-self"
    ]
    assert batch and all(e.identity.key not in ("token:token", "accessor:None") for e in batch)


def test_default_named_tokens_do_not_merge(bao: BaoLogs) -> None:
    for path in (bao.main, bao.raw):
        events = [e for e in _events(path) if e.path == "auth/token/lookup-self"]
        defaults = [
            e
            for e in events
            if e.auth.display_name in ("token", "token-token") and "root" not in (e.auth.policies or ())
        ]
        named = [e for e in events if e.auth.display_name == "token-ci-bot"]
        assert len(defaults) >= 8 and len(named) == 4  # request + response for each token
        # Four tokens with the default name: four identities, each keeping its request and response together.
        assert len({e.identity.key for e in defaults}) == 5  # 2 `token`, 2 `token-token`, 1 batch
        assert all(Counter(e.identity.key for e in defaults)[e.identity.key] == 2 for e in defaults)
        # Named tokens keep the documented key: one identity per display name.
        assert {e.identity.key for e in named} == {"token:token-ci-bot"}


def test_learn_log_identities(shared_fixture: Callable[[str], Path]) -> None:
    log = shared_fixture("vault-audit-learn-monitoring.log")
    events = _events(log)
    keys = {e.identity.key for e in events}
    assert not any(k.endswith(":None") or k == "token:token" for k in keys), sorted(keys)
    default = [e for e in events if e.auth.display_name == "token"]
    assert default and all(e.identity.key.startswith("token:token#") for e in default)
    assert len({e.auth.accessor for e in default}) == len({e.identity.key for e in default})


# -- 4. inspect and replay agree ----------------------------------------------------------------


def _agree(path: Path) -> tuple[int, int]:
    summary = summarise([str(path)], Parser(), MemoryQuarantine())
    engine = Engine(None, seed=0)
    result = replay([path], engine=engine, quarantine=MemoryQuarantine(), parser=Parser())
    assert set(summary.identities) == set(engine.identities())
    return len(summary.identities), result.identities


def test_inspect_and_replay_agree_on_openbao_logs(bao: BaoLogs) -> None:
    for path in (bao.main, bao.raw):
        a, b = _agree(path)
        assert a == b > 10


def test_inspect_and_replay_agree_on_learn_log(shared_fixture: Callable[[str], Path]) -> None:
    a, b = _agree(shared_fixture("vault-audit-learn-monitoring.log"))
    assert a == b


# -- 5. no raw accessor or token downstream ------------------------------------------------------


def test_no_plaintext_credential_reaches_alerts_keys_or_archive(bao: BaoLogs, tmp_path: Path) -> None:
    events = _events(bao.raw)
    assert bao.canaries and all(len(c) >= 8 for c in bao.canaries)
    blob = msgspec.json.encode(events).decode()
    leaked = [c for c in bao.canaries if c in blob]
    assert not leaked, f"{len(leaked)} canaries in parsed events"
    engine = Engine(None, seed=0)
    result = replay([bao.raw], engine=engine, quarantine=MemoryQuarantine(), parser=Parser())
    alerts = [a.to_dict() for a in result.alerts]
    assert any(a["detector"] == "plaintext-secret-in-audit" for a in alerts)
    text = json.dumps(alerts) + json.dumps(engine.identities())
    assert not [c for c in bao.canaries if c in text]
    with EventArchive(tmp_path / "archive") as archive:
        archive.extend(events)
    data = b"".join(p.read_bytes() for p in (tmp_path / "archive").rglob("*.parquet"))
    assert data and not [c for c in bao.canaries if c.encode() in data]
    # The accessors became keyed hashes, the same for every parser with the same key (and alert ids
    # stay deterministic across a restart), different under another key.
    acc = [e.auth.accessor for e in events if e.auth.accessor]
    assert acc and all(a.startswith("hmac-sha256:vw:") for a in acc)
    again = [e.auth.accessor for e in _events(bao.raw) if e.auth.accessor]
    keyed = [e.auth.accessor for e in _events(bao.raw, Parser(pseudonym_key=b"k" * 32)) if e.auth.accessor]
    assert again == acc and keyed != acc and len(set(keyed)) == len(set(acc))
    replayed = replay([bao.raw], engine=Engine(None, seed=0), quarantine=MemoryQuarantine(), parser=Parser())
    assert sorted(a.id for a in replayed.alerts) == sorted(a.id for a in result.alerts)
