"""notebooks/compare_runs.ipynb executes headless against a store of tiny runs and shows every run."""

from __future__ import annotations

import nbclient
import nbformat
import pytest
from helpers.paths import REPO
from helpers.tiny import store_uri, trained_tiny_runs

NOTEBOOK = REPO / "notebooks" / "compare_runs.ipynb"


def test_the_comparison_notebook_runs_headless_and_tabulates_and_plots_the_runs(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path_factory.getbasetemp() / "trained_tiny"
    runs = trained_tiny_runs(root)
    monkeypatch.setenv("POLYDEFECT_TRACKING_URI", store_uri(root))  # the kernel inherits the environment
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(
        notebook, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    table = next(o for o in outputs if o.output_type == "execute_result")["data"]["text/plain"]
    for name in runs:
        assert name in table
    figures = [o for o in outputs if o.output_type == "display_data" and "image/png" in o["data"]]
    assert len(figures) == 2
