"""Every `model=` choice (conf/model) trains, picks its checkpoint and scores through the real pipeline on tiny data.

Detectors differ in what their training logs (a validation loss or none), which decides how the pipeline keeps
their weights; this runs each one end to end so a detector the sweeps name cannot fail only at full scale.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.tiny import compose_tiny
from mlflow.tracking import MlflowClient

from polydefect.pipeline.run import run

SHRINK = {  # smaller inputs and nets for the detectors whose defaults take minutes
    "patchcore": ["model.input_size=64"],
    "view_memory": ["trainer.limit_train_batches=1.0"],  # its one pass must see every view's good images
    "draem": [
        "model.input_size=32",
        "model.net.reconstruction_widths=[8,16,16]",
        "model.net.segmentation_widths=[8,16,16]",
        "model.max_epochs=2",
    ],
    "feature_segmenter": ["model.input_size=64", "model.net.widths=[16,8]", "model.max_epochs=2"],
    "ensemble": [
        "model.members.lite0.input_size=64",
        "model.members.lite2.input_size=64",
        "model.members.segmenter_lite0.input_size=64",
        "model.members.segmenter_lite0.net.widths=[16,8]",
        "model.members.segmenter_lite2.input_size=64",
        "model.members.segmenter_lite2.net.widths=[16,8]",
        "model.max_epochs=2",
    ],
}
DETECTORS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "model").glob("*.yaml"))


@pytest.mark.parametrize("detector", DETECTORS)
def test_the_detector_runs_end_to_end_and_its_run_finishes(detector: str, tmp_path: Path) -> None:
    cfg = compose_tiny(tmp_path, f"model={detector}", *SHRINK.get(detector, []), f"name=tiny_{detector}")
    metrics = run(cfg)
    assert 0.0 <= metrics["test/global/image_auroc"] <= 1.0
    assert MlflowClient(cfg.mlflow.tracking_uri).get_run(metrics["run_id"]).info.status == "FINISHED"
