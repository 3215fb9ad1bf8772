"""The summary a run ends with: its tables from a metrics dict, and a real `python -m polydefect +experiment=tiny`
whose console output ends with it and whose MLflow description is the same text."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
from helpers.tiny import compose_app, run_app, store_uri, tiny_overrides
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE
from omegaconf import open_dict

from polydefect.pipeline.run import run
from polydefect.reporting.summary import MAX_BATCH_ROWS, run_summary

METRICS = {
    "segment/test_f1": 0.91,
    "segment/test_iou": 0.84,
    "test/global/image_auroc": 0.5625,
    "test/global/f1": 0.0,
    "test/per_view/image_auroc": 0.59,
    "test/per_view/f1": 0.2106,
    "test/val_f1/image_auroc": math.nan,  # one class only
    "test/type/scratch/image_auroc": 0.7,
    "test/pixel_auroc": 0.8125,
    "test/aupro": 0.4,
    "val/synthetic_image_auroc": 0.875,
    "val/synthetic_pixel_auroc": 0.9,
    "spc/good_batches_flagged": 0.0,
}


def verdicts(batches: int, flagged: set[int]) -> pd.DataFrame:
    rows = [
        {
            "batch": b,
            "views": 24,
            "views_out": 5 if b in flagged else 0,
            "mean_nqi": 0.5 * b,
            "out_of_control": b in flagged,
        }
        for b in range(1, batches + 1)
    ]
    return pd.DataFrame(rows)


def summary_of(metrics: dict, table: pd.DataFrame | None = None, uri: str = "sqlite:////runs/mlflow.db") -> str:
    return run_summary("mixed", metrics, table, Path("/runs/outputs/mixed/1"), uri, "3", "abc123")


def test_the_image_table_has_a_row_per_threshold_in_the_order_they_were_fitted() -> None:
    lines = summary_of(METRICS).splitlines()
    assert lines[0] == "## polydefect run `mixed`"
    assert "| threshold | image AUROC | F1    |" in lines
    rows = [line for line in lines if line.startswith(("| global", "| per_view", "| val_f1", "| type"))]
    assert rows == [
        "| global    | 0.562       | 0.000 |",
        "| per_view  | 0.590       | 0.211 |",
        "| val_f1    | n/a         | n/a   |",
    ]
    assert "Pixel AUROC 0.812, AUPRO 0.400: test maps against the defect masks." in lines
    validation = "Validation (good held-out images and pasted anomalies): image AUROC 0.875, pixel AUROC 0.900."
    assert validation in lines


def test_the_segmentation_figures_are_shown_where_the_segment_stage_measured_them() -> None:
    lines = summary_of({"segment/test_f1": 0.91, "segment/test_iou": 0.84}).splitlines()
    assert "| object masks | F1    | IoU   |" in lines
    assert "| test images  | 0.910 | 0.840 |" in lines
    assert not [line for line in lines if "image AUROC" in line or "Pixel" in line]


def test_every_batch_verdict_is_listed() -> None:
    text = summary_of(METRICS, verdicts(3, {1}))
    assert "| batch | views out of control | mean nQI | SPC verdict    |" in text
    assert "| 1     | 5 of 24              | 0.50     | out of control |" in text
    assert "| 3     | 0 of 24              | 1.50     | in control     |" in text


def test_many_batches_are_cut_short_with_the_out_of_control_ones_first() -> None:
    lines = summary_of(METRICS, verdicts(50, {7, 40})).splitlines()
    rows = [line for line in lines if line.startswith("| ") and line.rstrip(" |").endswith(" control")]
    assert len(rows) == MAX_BATCH_ROWS
    assert [row.split("|")[1].strip() for row in rows[:3]] == ["7", "40", "1"]
    assert f"The first {MAX_BATCH_ROWS} of 50 batches, out-of-control ones first" in "\n".join(lines)


def test_it_ends_with_the_mlflow_ui_command_for_the_store_and_the_runs_page() -> None:
    lines = summary_of(METRICS).splitlines()
    assert "Outputs: `/runs/outputs/mixed/1`" in lines
    assert lines[-3:] == [
        "    mlflow ui --backend-store-uri sqlite:////runs/mlflow.db",
        "",
        "then http://127.0.0.1:5000/#/experiments/3/runs/abc123",
    ]


def test_a_store_path_with_spaces_is_quoted_for_the_shell() -> None:
    assert "mlflow ui --backend-store-uri 'sqlite:////my runs/mlflow.db'" in summary_of(
        {}, uri="sqlite:////my runs/mlflow.db"
    )


def test_a_tracking_server_is_named_by_the_runs_page_on_it() -> None:
    text = summary_of({}, uri="http://tracking:5000/")
    assert text.splitlines()[-1] == "MLflow run `abc123`: http://tracking:5000/#/experiments/3/runs/abc123"
    assert "mlflow ui" not in text


def test_a_segmentation_only_run_is_described_by_its_segmentation_figures(tmp_path: Path) -> None:
    overrides = [o for o in tiny_overrides(tmp_path) if not o.startswith("segmenter.")]  # otsu has no size
    cfg = compose_app("+experiment=tiny", *overrides, "segmenter=otsu", "stages=[data,segment]")
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "out")
    result = run(cfg)
    assert "| object masks | precision | recall | F1 " in result["summary"]
    assert "image AUROC" not in result["summary"]
    parent = MlflowClient(store_uri(tmp_path)).get_run(result["run_id"])
    assert parent.data.tags[MLFLOW_RUN_NOTE] == result["summary"]


def test_python_m_polydefect_tiny_ends_with_the_summary_that_describes_its_mlflow_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_app(["+experiment=tiny", *tiny_overrides(tmp_path), f"hydra.run.dir={out}"], cwd=tmp_path)
    run_id = json.loads((out / "mlflow_run.json").read_text())["run_id"]
    description = MlflowClient(store_uri(tmp_path)).get_run(run_id).data.tags[MLFLOW_RUN_NOTE]
    assert result.stdout.rstrip("\n").endswith(description)
    assert f"    mlflow ui --backend-store-uri {store_uri(tmp_path)}\n" in description
    assert f"Outputs: `{out}`" in description
    assert "| global " in description and "| batch " in description
