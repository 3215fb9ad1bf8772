"""`python -m polydefect.tables`: the thesis tables from the runs in an MLflow store, latest run per cell."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from polydefect import tables
from polydefect.tracking import CHOSEN_TAG


def log_run(client: MlflowClient, experiment_id: str, tags: dict, metrics: dict, status: str = "FINISHED") -> str:
    run = client.create_run(experiment_id, tags=tags)
    for key, value in metrics.items():
        client.log_metric(run.info.run_id, key, value)
    client.set_terminated(run.info.run_id, status)
    return run.info.run_id


@pytest.fixture
def store(tmp_path: Path) -> tuple[str, dict[str, str]]:
    """A store holding runs as the pipeline tags them: old and new runs of one cell, a failed run, an MVTec run."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("polydefect", artifact_location=(tmp_path / "mlruns").as_uri())
    ids = {}
    ablation = {"choice.model": "cae", "choice.ablation": "clahe", "variant": "real"}
    log_run(client, exp, ablation, {"test/global/f1": 0.1, "test/global/image_auroc": 0.2})
    ids["clahe"] = log_run(client, exp, ablation, {"test/global/f1": 0.6, "test/global/image_auroc": 0.9})
    log_run(client, exp, ablation, {"test/global/f1": 0.0}, status="FAILED")
    segment = {f"segment/test_{m}": 0.5 for m in ("precision", "recall", "f1", "auc", "iou")}
    ids["unet_mixed"] = log_run(client, exp, {"choice.segbench": "unet_mixed", "variant": "mixed"}, segment)
    detection = {f"test/{t}/image_auroc": 0.7 for t in ("global", "per_view", "val_f1")}
    ids["real"] = log_run(
        client, exp, {"choice.experiment": "real", "choice.model": "cae", "variant": "real"}, detection
    )
    log_run(client, exp, {"choice.experiment": "tiny", "choice.model": "cae", "variant": "mixed"}, detection)
    mvtec = {"choice.model": "patchcore", "variant": "mvtec"}
    by_type = {"test/type/crack/images": 5, "test/type/crack/image_auroc": 0.9, "test/type/crack/pixel_auroc": 0.8}
    by_type |= {"test/type/blowhole/images": 7, "test/type/blowhole/image_auroc": 0.99}
    ids["mvtec"] = log_run(client, exp, mvtec, {"test/global/image_auroc": 0.95, "test/aupro": 0.8, **by_type})
    child = {"mlflow.parentRunId": ids["mvtec"], "stage": "detect"}
    log_run(client, exp, child, {"detect/train_s": 12.0, "detect/infer_img_per_s": 30.0})
    # three detectors on KolektorSDD: the validation signal ranks them as their test AUROC does but for one pair
    runs = [("patchcore", "dev_sets", 0.8, 0.7), ("ensemble", "dev_sets", 0.9, 0.85), ("draem", "dev_sets", 0.95, 0.6)]
    runs.append(("patchcore", "dev_sets_aspect", 0.85, 0.8))  # an option measured on and off
    runs.append(("auto", "dev_sets", 0.95, 0.6))  # the default: chose draem on its validation signal
    for model, name, val, test in runs:
        tags = {"choice.model": model, "variant": "mvtec", "dataset": "kolektorsdd", "experiment": name}
        tags |= {CHOSEN_TAG: "draem"} if model == "auto" else {}
        ids[f"kolektorsdd_{model}_{name}"] = log_run(
            client, exp, tags, {"test/global/image_auroc": test, "val/synthetic_image_auroc": val}
        )
    tile = {"choice.model": "auto", "variant": "mvtec", "dataset": "magnetic_tile", "experiment": "dev_sets"}
    tile[CHOSEN_TAG] = "ensemble"
    ids["magnetic_tile_dev"] = log_run(client, exp, tile, {"test/global/image_auroc": 0.5})
    return uri, ids


@pytest.fixture
def written(store, tmp_path: Path) -> dict[str, pd.DataFrame]:
    uri, _ = store
    tables.main(["--tracking-uri", uri, "--out", str(tmp_path / "tables")])
    return {p.stem: pd.read_csv(p, keep_default_na=True) for p in (tmp_path / "tables").glob("*.csv")}


def test_every_table_is_written_as_csv_and_markdown(written, tmp_path: Path) -> None:
    assert set(written) == {
        *("table_1_1", "table_4_1", "anomaly_default", "magnetic_tile", "magnetic_tile_by_type"),
        *("dev_sets", "dev_sets_validation"),
    }
    markdown = (tmp_path / "tables" / "table_1_1.md").read_text()
    assert "| model | preprocessing | f1 | auroc | thesis_f1 | thesis_auroc | run_id |" in markdown
    assert "| CAE | Segmented and Contrast Enhanced | 0.600 | 0.900 | 0.590 | 0.910 |" in markdown
    assert "Made by `python -m polydefect -m +experiment=table_1_1`, then `python -m polydefect.tables`." in markdown


def test_table_1_1_keeps_the_latest_finished_run_per_cell_beside_the_thesis(written, store) -> None:
    table = written["table_1_1"]
    assert list(table.columns[:4]) == ["model", "preprocessing", "f1", "auroc"]
    assert len(table) == 6
    row = table[(table["model"] == "CAE") & (table["preprocessing"] == "Segmented and Contrast Enhanced")].iloc[0]
    assert (row["f1"], row["auroc"], row["run_id"]) == (0.6, 0.9, store[1]["clahe"])
    dae = table[table["model"] == "DAE"]
    assert dae["f1"].isna().all() and list(dae["thesis_f1"]) == [0.29, 0.54, 0.68]


def test_table_4_1_lists_every_segmenter_with_the_published_u_net_numbers(written) -> None:
    table = written["table_4_1"]
    assert list(table.columns[:7]) == ["segmenter", "train_data", "precision", "recall", "f1", "auc", "iou"]
    mixed = table[table["train_data"] == "mixed"].iloc[0]
    assert (mixed["iou"], mixed["thesis_f1"]) == (0.5, 0.99)
    assert math.isnan(table[table["segmenter"] == "otsu"].iloc[0]["thesis_f1"])


def test_anomaly_default_has_a_row_per_threshold_and_ignores_other_experiments(written, store) -> None:
    table = written["anomaly_default"]
    assert list(table.columns[:7]) == ["model", "train_data", "threshold", "image_auroc", "image_auprc", "f1", "f2"]
    real = table[table["train_data"] == "real"]
    assert list(real["threshold"]) == ["global", "per_view", "val_f1"]
    assert list(real["image_auroc"]) == [0.7] * 3 and set(real["thesis_image_auroc"]) == {0.53}
    assert table[table["train_data"] == "mixed"]["image_auroc"].isna().all(), "the tiny smoke run is no cell"


def test_magnetic_tile_reads_the_timings_of_the_detect_stage(written) -> None:
    table = written["magnetic_tile"]
    assert list(table.columns[:8]) == [
        *("detector", "image_auroc", "image_auprc", "f1", "pixel_auroc", "aupro", "train_s", "infer_img_per_s")
    ]
    row = table.iloc[0]
    assert (row["detector"], row["image_auroc"], row["train_s"], row["infer_img_per_s"]) == ("patchcore", 0.95, 12, 30)


def test_dev_sets_has_a_row_per_data_set_and_configuration_and_the_default_first(written, store) -> None:
    table = written["dev_sets"]
    assert list(table.columns) == [
        *("dataset", "detector", "image_auroc", "image_auprc", "f1", "pixel_auroc", "aupro"),
        *("val_synthetic_auroc", "train_s", "infer_img_per_s", "run_id"),
    ]
    tile = table[table["dataset"] == "magnetic_tile"]
    assert list(tile["detector"]) == ["default", "auto: ensemble"]
    assert set(tile["run_id"]) == {store[1]["magnetic_tile_dev"]}
    kolektor = table[table["dataset"] == "kolektorsdd"]
    assert list(kolektor["detector"]) == [
        *("default", "auto: draem", "draem", "ensemble", "patchcore", "patchcore (aspect)")
    ]
    assert kolektor.iloc[0]["run_id"] == store[1]["kolektorsdd_auto_dev_sets"], "data=mvtec chooses (model=auto)"


def test_the_magnetic_tile_table_leaves_the_development_sweeps_out(written, store) -> None:
    assert list(written["magnetic_tile"]["run_id"]) == [store[1]["mvtec"]]


def test_dev_sets_validation_ranks_the_configurations_by_the_validation_signal(written) -> None:
    table = written["dev_sets_validation"].set_index("dataset")
    kolektor = table.loc["kolektorsdd"]
    assert kolektor["detectors"] == 4 and kolektor["spearman_val_vs_test"] == pytest.approx(-0.2)
    assert (kolektor["chosen_by_val"], kolektor["chosen_image_auroc"], kolektor["best_image_auroc"]) == (
        "draem",
        0.6,
        0.85,
    )
    assert "magnetic_tile" not in table.index, "no validation signal was logged there"


def test_the_per_defect_type_table_has_a_row_per_detector_and_type(written) -> None:
    table = written["magnetic_tile_by_type"]
    assert list(table.columns) == ["detector", "defect_type", "images", "image_auroc", "pixel_auroc"]
    assert list(table["defect_type"]) == ["blowhole", "crack"]
    crack = table.iloc[1]
    assert (crack["detector"], crack["images"], crack["image_auroc"], crack["pixel_auroc"]) == (
        "patchcore",
        5,
        0.9,
        0.8,
    )
    assert math.isnan(table.iloc[0]["pixel_auroc"])


def test_the_command_line_names_a_missing_experiment(store, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "polydefect.tables", "--tracking-uri", store[0], "--experiment", "nope"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "--experiment" in result.stderr and "nope" in result.stderr
