"""The MLflow UI, served on loopback over a store of tiny runs, shows those runs in headless Chromium."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.mlflow_ui import headless_chromium, mlflow_ui, require_chromium, show_runs
from helpers.tiny import store_uri, trained_tiny_runs
from mlflow.tracking import MlflowClient


def test_the_mlflow_ui_lists_the_runs_of_the_store(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    require_chromium()
    root = tmp_path_factory.getbasetemp() / "trained_tiny"
    runs = trained_tiny_runs(root)
    experiment_id = MlflowClient(store_uri(root)).get_experiment_by_name("polydefect").experiment_id
    with mlflow_ui(store_uri(root), tmp_path / "server.log") as url, headless_chromium() as driver:
        page = show_runs(driver, url, experiment_id, list(runs))
        assert url.startswith("http://127.0.0.1:")
        driver.save_screenshot(str(tmp_path / "mlflow_ui.png"))
    assert all(name in page for name in runs)
    assert (tmp_path / "mlflow_ui.png").stat().st_size > 10_000
