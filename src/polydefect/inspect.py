"""`python -m polydefect.inspect run=<run id or folder> data.root=<folder>`: score a new batch with a trained pipeline.

Everything comes from the run's MLflow artifacts: the resolved config, the U-Net and detector weights
(safetensors: nothing is unpickled), the fitted thresholds and the SPC control limits.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import hydra
from hydra.core.hydra_config import HydraConfig
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from polydefect.data.layout import discover
from polydefect.data.validate import validate_tables
from polydefect.judging import TrainedPipeline, judge, read_pipeline, run_segmenter
from polydefect.pipeline.run import RUN_FILE
from polydefect.reporting.html import render_report
from polydefect.reporting.overlay import anomaly_overlay
from polydefect.scoring.location import LOCATION_FILE
from polydefect.scoring.spc import SPC_LIMITS
from polydefect.tasks.base import load_detector

log = logging.getLogger(__name__)


def locate_run(run: str, tracking_uri: str) -> tuple[str, str]:
    """(run id, store) from a run id, or from a run's output folder holding `mlflow_run.json`."""
    folder = Path(run).expanduser()
    if folder.is_dir():
        run_file = folder / RUN_FILE
        if not run_file.is_file():
            raise FileNotFoundError(f"run={run}: no {RUN_FILE} in this folder; is it a polydefect run's output folder?")
        found = json.loads(run_file.read_text())
        return found["run_id"], found["tracking_uri"]
    return run, tracking_uri


def stage_runs(client: MlflowClient, run_id: str) -> dict[str | None, Run]:
    """The stage runs (segment, detect, evaluate, ...) of a pipeline run, by their `stage` tag."""
    parent = client.get_run(run_id)
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
    return {child.data.tags.get("stage"): child for child in children}


def download_pipeline(run_id: str, tracking_uri: str, folder: Path) -> TrainedPipeline:
    """Fetch the artifacts of the parent run and of its segment, detect and evaluate stage runs."""
    client = MlflowClient(tracking_uri)
    stages = stage_runs(client, run_id)
    if "detect" not in stages or "evaluate" not in stages:
        raise ValueError(f"run={run_id}: has no detect and evaluate stages (stages: {sorted(stages)})")
    folder.mkdir(parents=True, exist_ok=True)
    evaluate_id = stages["evaluate"].info.run_id
    wanted = [(run_id, "config.yaml"), (evaluate_id, "evaluation/thresholds.json")]
    if f"evaluation/{SPC_LIMITS}" in {a.path for a in client.list_artifacts(evaluate_id, "evaluation")}:
        wanted.append((evaluate_id, f"evaluation/{SPC_LIMITS}"))
    detect_artifacts = {a.path for a in client.list_artifacts(stages["detect"].info.run_id, "model")}
    if "model/model.safetensors" not in detect_artifacts:
        raise FileNotFoundError(f"run={run_id}: no model/model.safetensors artifact (was mlflow.log_models false?)")
    wanted.append((stages["detect"].info.run_id, "model/model.safetensors"))
    if f"model/{LOCATION_FILE}" in detect_artifacts:  # the per-location calibration (scoring.normalise=location)
        wanted.append((stages["detect"].info.run_id, f"model/{LOCATION_FILE}"))
    segment_id = stages["segment"].info.run_id if "segment" in stages else None
    if segment_id and "unet.safetensors" in {a.path for a in client.list_artifacts(segment_id)}:
        wanted.append((segment_id, "unet.safetensors"))
    for source, path in wanted:
        local = Path(client.download_artifacts(source, path, str(folder)))
        if local.parent != folder:
            local.replace(folder / local.name)
    return read_pipeline(run_id, folder)


def inspect_folder(cfg: DictConfig, out: Path) -> Path:
    """Score every image under `cfg.data.root` and write report.html, report.csv and the overlays into `out`."""
    run_id, tracking_uri = locate_run(str(cfg.run), cfg.mlflow.tracking_uri)
    table = discover(cfg.data.root, cfg.data.layout)
    validate_tables([table])  # a bad file stops the inspection before anything is downloaded or written
    pipeline = download_pipeline(run_id, tracking_uri, out / "pipeline")
    log.info("Scoring %d images of %s with run %s", len(table), cfg.data.root, run_id)
    detector = load_detector(pipeline.cfg.model, pipeline.folder / "model.safetensors")
    judged = judge(pipeline, detector, run_segmenter(pipeline), table, cfg.threshold, cfg.overlays, out / "masks")
    scored = judged.scored
    overlay_paths = [""] * len(scored)
    for index, (amap, object_mask) in judged.top.items():
        name = f"overlays/{index:04d}_{Path(table.iloc[index]['image_path']).stem}.png"
        (out / "overlays").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out / name), anomaly_overlay(judged.samples[index].image, amap, object_mask, judged.vmax))
        overlay_paths[index] = name
    scored = scored.assign(overlay=overlay_paths)
    scored.to_csv(out / "report.csv", index=False)
    summary = {
        "run": run_id,
        "store": tracking_uri,
        "experiment": str(pipeline.cfg.name),
        "images": str(cfg.data.root),
        "threshold": f"{judged.threshold.kind} ({judged.threshold.method})",
        "flagged": f"{int(scored['anomalous'].sum())} of {len(scored)} images",
    }
    title = f"polydefect inspection: {Path(cfg.data.root).name}"
    (out / "report.html").write_text(render_report(title, summary, scored, judged.batches, judged.notes))
    if judged.batches is not None:
        judged.batches.to_csv(out / "batches.csv", index=False)
    return out


@hydra.main(version_base="1.3", config_path="../../conf", config_name="inspect")
def main(cfg: DictConfig) -> None:
    out = inspect_folder(cfg, Path(HydraConfig.get().runtime.output_dir))
    print(f"Report: {out / 'report.html'}")


if __name__ == "__main__":
    main()
