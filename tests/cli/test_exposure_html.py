"""``vaultwatch exposure --html`` is whole or absent (issue 18).

Before: the page was written with ``Path.write_text``; a run interrupted mid-write left a
truncated page that opens like a complete report. Now it goes to ``<out>.partial`` and is renamed
on success: an interrupted write leaves the previous page, and the next run says so.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ingest import Parser
from vaultwatch.cli import main
from vaultwatch.demo.servers import OpenBaoServer
from vaultwatch.service.archive import EventArchive
from vaultwatch.service.atomic import leftover

pytestmark = pytest.mark.integration


class _Killed(BaseException):
    """Stands for SIGKILL: nothing in the command catches it."""


def _archive(openbao: OpenBaoServer, tmp_path: Path) -> Path:
    root = openbao.client()
    for i in range(3):
        root.secrets.kv.v2.create_or_update_secret(f"app/s{i}", secret={"v": "1"}, mount_point="secret")
        root.secrets.kv.v2.read_secret_version(
            f"app/s{i}", mount_point="secret", raise_on_deleted_version=False
        )
    path = tmp_path / "archive"
    archive = EventArchive(path)
    parser = Parser()
    for line in openbao.audit_log.read_bytes().splitlines():
        if line.strip():
            archive.append(parser.parse(line))
    archive.close()
    return path


def test_an_interrupted_html_write_leaves_the_previous_page(
    openbao: OpenBaoServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    archive = _archive(openbao, tmp_path)
    out = tmp_path / "exposure.html"
    argv = ["exposure", "--archive", str(archive), "--path", "secret/data/app/", "--html", str(out)]
    out.write_text("<html>the previous report</html>")
    previous = out.read_bytes()

    real_fsync = os.fsync
    written: list[int] = []

    def killed_after_the_data(fd: int) -> None:
        real_fsync(fd)
        written.append(fd)
        raise _Killed  # the process dies after writing the page, before the rename

    monkeypatch.setattr(os, "fsync", killed_after_the_data)
    with pytest.raises(_Killed):
        main(argv)
    monkeypatch.undo()
    assert written, "the write never started"
    assert out.read_bytes() == previous  # the previous page, whole
    part = leftover(out)
    assert part is not None and b"secret/data/app/" in part.read_bytes()  # the new page was being written

    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "interrupted" in err
    page = out.read_text()
    assert page != previous.decode() and "secret/data/app/" in page and page.rstrip().endswith("</html>")
    assert leftover(out) is None


def test_a_first_interrupted_write_leaves_no_page(
    openbao: OpenBaoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = _archive(openbao, tmp_path)
    out = tmp_path / "new" / "exposure.html"

    def killed(*_: object) -> None:
        raise _Killed

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(_Killed):
        main(["exposure", "--archive", str(archive), "--path", "secret/data/app/", "--html", str(out)])
    assert not out.exists()
