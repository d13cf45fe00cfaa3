"""Every ablation notebook runs end to end on tiny settings (LAB_QUICK=1), so none can rot."""

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shared_work(tmp_path_factory):
    """One work folder for all notebooks: the two that read the tiny study run it once."""
    return tmp_path_factory.mktemp("notebooks")


def test_the_five_ablations_are_there():
    assert {p.stem for p in NOTEBOOKS} >= {
        "overtraining",
        "dataset_shift",
        "loss_ablation",
        "dp_tradeoff",
        "member_set_size",
    }


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_tiny_settings(path, shared_work, monkeypatch):
    book = nbformat.read(path, as_version=4)
    assert not any(c.get("outputs") for c in book.cells if c.cell_type == "code"), "keep outputs out of git"
    assert book.cells[0].cell_type == "markdown" and len(book.cells[0].source) > 100, "say what it shows"
    monkeypatch.setenv("LAB_QUICK", "1")
    monkeypatch.setenv("LAB_NOTEBOOK_WORK", str(shared_work))
    NotebookClient(
        book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    images = [o for c in book.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, f"{path.name} drew no plot"
    errors = [
        f"{o.ename}: {o.evalue}"
        for c in book.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "error"
    ]
    assert not errors, errors  # e.g. a figure that failed to render
