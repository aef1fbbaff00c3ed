"""The analyst notebooks run top to bottom on data generated here from a real OpenBao server.

Each notebook reads its data through :mod:`vaultwatch.report.loaders` from the directory named by
``$VAULTWATCH_NOTEBOOK_DATA``; the fixture generates a small scenario there (real traffic with
labelled attacks, the detection engine, an archive and a SQLite store) and the notebooks are
executed with nbclient in a real IPython kernel. The committed notebooks carry no outputs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vaultwatch.demo.dataset import NOTEBOOK_DATA_ENV, DemoData, generate_demo_data

nbformat = pytest.importorskip("nbformat")
NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
NAMES = ("01-explore-archive.ipynb", "02-investigate-alert.ipynb", "03-tune-detectors.ipynb")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoData:
    return generate_demo_data(tmp_path_factory.mktemp("nbdata"), days=11, warmup_days=6, seed=3)


def test_notebooks_are_committed_without_outputs() -> None:
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(NAMES)
    for name in NAMES:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(nb)
        assert nb.metadata["kernelspec"]["name"] == "python3"
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code and all(not c.outputs and c.execution_count is None for c in code), name
        # A short narrative: markdown before the first code cell and between the steps.
        assert nb.cells[0].cell_type == "markdown"
        assert sum(c.cell_type == "markdown" for c in nb.cells) >= 3, name
        # Data only through vaultwatch's public loaders, from the environment-named location.
        source = "\n".join(c.source for c in code)
        assert "notebook_data()" in source and "from vaultwatch.report import loaders" in source
        assert "read_parquet" not in source and "sqlite3" not in source


@pytest.mark.integration
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_top_to_bottom(
    name: str, demo: DemoData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nbclient = pytest.importorskip("nbclient")

    monkeypatch.setenv(NOTEBOOK_DATA_ENV, str(demo.workdir))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")  # jupyter_core's own migration warning
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any failure
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert f"{demo.events} audit entries" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    tables = [o for o in outputs if "text/html" in o.get("data", {})]
    assert tables, "expected DataFrames rendered as tables"
    if name != "02-investigate-alert.ipynb":
        assert images, "expected a chart"
