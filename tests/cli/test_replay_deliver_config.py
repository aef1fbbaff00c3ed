"""``vaultwatch replay --deliver`` with a configuration that cannot deliver (issue 16, audit gap 17).

A replay sends alerts where ``vaultwatch run`` would, through ``[routes]`` and ``[channels]``.
Without them the command fails before it stores anything, and its message names what to add (and
how to keep the alerts without sending them). No broker, Vault or receiver is needed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vaultwatch.cli import main

LINE = (
    '{"time":"2026-11-28T10:00:00.000000Z","type":"request","auth":{"display_name":"token-ci",'
    '"policies":["default"],"token_type":"service"},"request":{"id":"0f0e5a3c-1111-2222-3333-444455556666",'
    '"operation":"read","path":"secret/data/app","remote_address":"10.0.0.1"}}\n'
)
CHANNELS = """
[[channels.receivers]]
name = "soc"
[[channels.receivers.webhook]]
url = "env:VW_TEST_HOOK_URL"
signing_secrets = ["env:VW_TEST_HOOK_SECRET"]
"""
ROUTES = """
[[routes.receivers]]
name = "soc"
integrations = [{ channel = "webhook" }]
[routes.route]
receiver = "soc"
"""


def _replay(tmp_path: Path, config: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    log = tmp_path / "audit.log"
    log.write_text(LINE)
    db = tmp_path / "vw.db"
    cfg = tmp_path / "vw.toml"
    cfg.write_text(f'[store]\nurl = "sqlite:///{db}"\n{config}')
    code = main(
        ["replay", str(log), "--alerts-out", str(tmp_path / "alerts.jsonl"), "--deliver", str(cfg)]
        + ["--json", "--no-progress"]
    )
    assert not db.exists(), "nothing is stored when the configuration cannot deliver"
    assert (tmp_path / "alerts.jsonl").is_file(), "the alerts are still written to --alerts-out"
    return code, capsys.readouterr().err


def test_no_routes_names_the_table_to_add(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _replay(tmp_path, CHANNELS, capsys)
    assert code == 1
    assert "routes: no [routes] table" in err
    assert "[[routes.receivers]]" in err and "[routes.route]" in err
    assert "examples/vaultwatch.toml" in err
    assert "--store URL instead of --deliver" in err  # the other way out: keep, do not send
    assert "channels:" not in err  # the channels are fine and not reported


def test_no_channels_names_the_receivers_to_add(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _replay(tmp_path, ROUTES, capsys)
    assert code == 1
    assert "channels: no [[channels.receivers]]" in err
    assert "[[channels.receivers.webhook]]" in err
    assert "routes:" not in err


def test_neither_names_both(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _replay(tmp_path, "", capsys)
    assert code == 1
    assert "channels: no [[channels.receivers]]" in err and "routes: no [routes] table" in err


def test_the_example_configuration_has_what_the_message_points_to() -> None:
    from vaultwatch.service.replay import _delivery_problems
    from vaultwatch.settings import load_settings

    example = Path(__file__).resolve().parents[2] / "examples" / "vaultwatch.toml"
    s = load_settings(example, env={})
    assert _delivery_problems(s.routes, s.channels) == []


def test_run_with_channels_and_no_routes_says_nothing_will_be_sent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``vaultwatch run`` builds its delivery the same way: it warns instead of notifying nobody
    in silence."""
    from alerts.store import Store
    from vaultwatch.service.wiring import build_delivery
    from vaultwatch.settings import load_settings

    monkeypatch.setenv("VW_TEST_HOOK_URL", "http://127.0.0.1:9/hook")
    monkeypatch.setenv("VW_TEST_HOOK_SECRET", "whsec_" + "A" * 32)
    cfg = tmp_path / "vw.toml"
    cfg.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "vw.db"}"\n{CHANNELS}')
    store = Store(f"sqlite:///{tmp_path / 'vw.db'}")
    store.migrate()
    try:
        with caplog.at_level("WARNING", logger="vaultwatch.service.wiring"):
            assert build_delivery(load_settings(cfg), store) is not None
        assert "no [routes] table, so no alert is sent" in caplog.text
        caplog.clear()
        cfg.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "vw.db"}"\n{CHANNELS}{ROUTES}')
        with caplog.at_level("WARNING", logger="vaultwatch.service.wiring"):
            build_delivery(load_settings(cfg), store)
        assert "no [routes]" not in caplog.text
    finally:
        store.close()
