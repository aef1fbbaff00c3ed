"""``vaultwatch serve`` as a real process, and the JWT signing key read from a real OpenBao."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from vaultwatch.api.auth import AuthConfig, Authenticator, AuthError, VaultKeySource, generate_pem
from vaultwatch.cli import main
from vaultwatch.demo.servers import OpenBaoServer

from .conftest import Creds

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_help_names_the_secret_files(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for word in ("--config", "--host", "--port", "JWT_KEY_FILE", "API_KEYS_FILE"):
        assert word in out


@pytest.mark.integration
def test_serve_starts_prints_its_address_and_guards_the_api(tmp_path: Path, creds: Creds) -> None:
    config = tmp_path / "vaultwatch.toml"
    config.write_text(
        f'[store]\nurl = "sqlite:///{tmp_path}/alerts.db"\n[archive]\npath = "{tmp_path}/archive"\n'
    )
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("VAULTWATCH_")},
        "JWT_KEY_FILE": str(creds.key_file),
        "API_KEYS_FILE": str(creds.keys_file),
        "VAULTWATCH_API_USERS_FILE": str(creds.users_file),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "vaultwatch.cli", "serve", "--config", str(config), "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in line, line
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert httpx.get(f"{base}/api/v1/alerts", timeout=5).status_code == 401
        r = httpx.get(f"{base}/api/v1/alerts", headers={"X-API-Key": creds.api_keys["viewer"]}, timeout=5)
        assert r.status_code == 200 and r.json()["total"] == 0
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    for secret in creds.canaries():
        assert secret not in err


def test_secret_tools(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import io
    import tomllib

    from vaultwatch.api.auth import ApiKeyFile, UserFile

    assert main(["serve", "--new-api-key", "soc-bot", "--role", "analyst"]) == 0
    out, err = capsys.readouterr()
    key = err.split("API key (shown once): ", 1)[1].strip()
    assert key not in out and tomllib.loads(out)["keys"][0]["role"] == "analyst"
    (tmp_path / "keys.toml").write_text(out)
    assert ApiKeyFile(tmp_path / "keys.toml").verify(key, time.time()).id == "soc-bot"

    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse battery staple\n"))
    assert main(["serve", "--hash-password"]) == 0
    digest = capsys.readouterr().out.strip()
    (tmp_path / "users.toml").write_text(
        f'[[users]]\nname = "eve"\npassword_hash = "{digest}"\nrole = "viewer"\n'
    )
    assert UserFile(tmp_path / "users.toml").verify("eve", "correct horse battery staple").role == "viewer"
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["serve", "--hash-password"]) == 2

    assert main(["serve", "--new-jwt-key", "ec"]) == 0
    assert capsys.readouterr().out.startswith("-----BEGIN PRIVATE KEY-----")
    assert main(["serve", "--new-api-key", "bad id!"]) == 2


def test_serve_refuses_a_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[api]\nport = 0\n")
    assert main(["serve", "--config", str(bad)]) == 2
    assert "api.port" in capsys.readouterr().err


@pytest.mark.integration
def test_signing_key_from_openbao_rotates_without_downtime(openbao: OpenBaoServer) -> None:
    client = openbao.client()
    mount = f"keys{secrets.token_hex(3)}"
    client.sys.enable_secrets_engine("kv", path=mount, options={"version": "2"})
    deadline = time.monotonic() + 10
    while True:  # a new KV v2 mount answers "upgrading" for a moment
        try:
            client.secrets.kv.v2.create_or_update_secret(
                path="vaultwatch/jwt", secret={"private_key": generate_pem().decode()}, mount_point=mount
            )
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    source = VaultKeySource(client, f"{mount}/vaultwatch/jwt#private_key", check_seconds=0)
    authn = Authenticator(AuthConfig(token_ttl=600), key_source=source)
    old = authn.issue_token("alice", "viewer")
    old_kid = authn.keys.current.kid
    client.secrets.kv.v2.create_or_update_secret(
        path="vaultwatch/jwt", secret={"private_key": generate_pem("ec").decode()}, mount_point=mount
    )
    assert authn.keys.current.kid != old_kid
    assert authn.from_bearer(old).subject == "alice"
    assert authn.from_bearer(authn.issue_token("bob", "viewer")).subject == "bob"
    with pytest.raises(AuthError):
        VaultKeySource(client, "no-field-or-path")
