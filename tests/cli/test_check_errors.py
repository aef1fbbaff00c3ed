"""``vaultwatch check``'s usage errors name the fix: the variable or option to set."""

from __future__ import annotations

from pathlib import Path

import pytest

from vaultwatch.cli import main
from vaultwatch.demo.servers import free_port


@pytest.fixture(autouse=True)
def _no_vault_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VAULT_TOKEN", "VAULT_ADDR", "VAULT_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)


def _check(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = main(["check", *args])
    return rc, " ".join(capsys.readouterr().err.split())


def test_no_credentials_names_every_way_to_give_one(capsys: pytest.CaptureFixture[str]) -> None:
    rc, err = _check(["--addr", f"http://127.0.0.1:{free_port()}"], capsys)
    assert rc == 2
    for fix in ("VAULT_TOKEN", "--token-file", "--role-id", "--secret-id-file", "--k8s-role"):
        assert fix in err, err
    assert "needs a token" not in err


def test_approle_half_given(capsys: pytest.CaptureFixture[str]) -> None:
    rc, err = _check(["--role-id", "r-1"], capsys)
    assert rc == 2 and "--role-id needs --secret-id-file" in err
    rc, err = _check(["--secret-id-file", "/nonexistent"], capsys)
    assert rc == 2 and "--secret-id-file needs --role-id" in err


def test_unreachable_server_names_the_address_option(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAULT_TOKEN", "t-not-a-real-token")
    addr = f"http://127.0.0.1:{free_port()}"
    rc, err = _check(["--addr", addr], capsys)
    assert rc == 2
    assert addr in err and "--addr" in err and "VAULT_ADDR" in err, err
    assert "t-not-a-real-token" not in err


def test_unreadable_token_file_names_the_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, err = _check(["--token-file", str(tmp_path / "missing"), "--addr", "http://127.0.0.1:1"], capsys)
    assert rc == 2 and "--token-file" in err, err


@pytest.mark.integration
def test_refused_token_names_where_it_came_from(
    openbao: object, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAULT_TOKEN", "wrong-token-value")
    rc, err = _check(["--addr", openbao.addr], capsys)  # type: ignore[attr-defined]
    assert rc == 2
    assert "VAULT_TOKEN" in err and "refused" in err, err
    assert "wrong-token-value" not in err
