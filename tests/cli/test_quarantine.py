"""``vaultwatch quarantine list|show|requeue|discard`` (issue 18)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from ingest.errors import REASONS, ParseError
from ingest.quarantine import KEY_FILE_ENV, FileQuarantine, generate_key_file, list_records
from vaultwatch.cli import main

CANARY = "s.CANARYquarantine0000secret"
LINES = [
    b'{"type":"request","time":"0001-01-01T00:00:00","auth":{"client_token":"' + CANARY.encode() + b'"}}',
    b'{"type":"response","request":{"remote_address":"1.2.3.4:\xc2\xb2"}}',
    b"not json at all",
]


@pytest.fixture
def quarantined(tmp_path: Path) -> tuple[Path, Path]:
    key = generate_key_file(tmp_path / "keys" / "q.key")
    path = tmp_path / "bad-lines.jsonl"
    q = FileQuarantine(path, key_file=key)
    reason = sorted(REASONS)[0]
    for i, line in enumerate(LINES):
        q.put(line, ParseError(reason, "bad"), source="audit.log", position=str(i))
    q.close()
    return path, key


def test_list_needs_no_key_and_shows_no_line(
    quarantined: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = quarantined
    assert main(["quarantine", "list", str(path), "--json"]) == 0
    out = capsys.readouterr().out
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["position"] for r in rows] == ["0", "1", "2"]
    assert CANARY not in out
    assert CANARY not in path.read_text()  # encrypted at rest


def test_show_decrypts_one_record_by_prefix(
    quarantined: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path, key = quarantined
    rid = list_records(path)[0].id
    assert main(["quarantine", "show", str(path), rid[:10], "--key-file", str(key), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["id"] == rid and CANARY in shown["line"]


def test_requeue_writes_the_lines_and_discards(
    quarantined: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, key = quarantined
    out = tmp_path / "requeued.log"
    assert (
        main(["quarantine", "requeue", str(path), "--out", str(out), "--discard", "--key-file", str(key)])
        == 0
    )
    assert out.read_bytes().splitlines() == LINES
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert list_records(path) == []
    assert "3 line(s) written" in capsys.readouterr().err


def test_discard_by_id(quarantined: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = quarantined
    first = list_records(path)[0].id
    assert main(["quarantine", "discard", str(path), first[:8]]) == 0
    left = [r.id for r in list_records(path)]
    assert first not in left and len(left) == 2


def test_the_key_file_comes_from_the_environment(
    quarantined: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path, key = quarantined
    monkeypatch.setenv(KEY_FILE_ENV, str(key))
    rid = list_records(path)[2].id
    assert main(["quarantine", "show", str(path), rid]) == 0
    assert "not json at all" in capsys.readouterr().out


def test_errors_name_the_fix(
    quarantined: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = quarantined
    assert main(["quarantine", "list", str(tmp_path / "nope.jsonl")]) == 2
    assert "--quarantine PATH" in capsys.readouterr().err
    missing = tmp_path / "missing.key"
    assert main(["quarantine", "show", str(path), "x", "--key-file", str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "--key-file" in err and KEY_FILE_ENV in err
    wrong = generate_key_file(tmp_path / "wrong.key")
    rid = list_records(path)[0].id
    assert main(["quarantine", "show", str(path), rid, "--key-file", str(wrong)]) == 2
    err = capsys.readouterr().err
    assert "--key-file" in err and CANARY not in err
    assert main(["quarantine", "show", str(path), "zzzz", "--key-file", str(wrong)]) == 2
    assert "no record with id 'zzzz'" in capsys.readouterr().err


def test_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["quarantine", "--help"])
    text = capsys.readouterr().out
    assert "examples:" in text and "vaultwatch quarantine requeue" in text and KEY_FILE_ENV in text


def test_the_session_key_is_not_under_home() -> None:
    assert not Path(os.environ[KEY_FILE_ENV]).is_relative_to(Path.home() / ".config")
