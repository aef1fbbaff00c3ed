"""Every test here seals quarantine files with a throwaway key, never the user's own."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.quarantine import KEY_FILE_ENV


@pytest.fixture(autouse=True)
def quarantine_key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "keys" / "quarantine.key"
    monkeypatch.setenv(KEY_FILE_ENV, str(path))
    return path
