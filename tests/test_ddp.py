"""`trainer=ddp`: a tiny pipeline trains the U-Net and the CAE with Lightning DDP on 2 CPU processes (gloo); both
ranks end with the same weights, and only rank 0 logs to MLflow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import mlflow
import pytest
import torch
from helpers.tiny import compose_tiny, store_uri
from lightning.pytorch.callbacks import Callback
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file, save_file
from services.sweeps import pipeline_runs, stage_runs

from polydefect.pipeline import detect, segment, training
from polydefect.pipeline.run import STAGES, run

DDP = ["trainer=ddp", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1"]


class SaveRankWeights(Callback):
    """Writes each rank's weights at the end of fit to `<folder>/<Task>_rank<r>of<world>.safetensors`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        name = f"{type(pl_module).__name__}_rank{trainer.global_rank}of{trainer.world_size}.safetensors"
        save_file({k: v.detach().contiguous() for k, v in pl_module.state_dict().items()}, str(self.folder / name))


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One pipeline run with trainer=ddp; every Trainer of it also saves each rank's final weights."""
    root = tmp_path_factory.mktemp("ddp")
    ranks = root / "ranks"
    ranks.mkdir()

    def with_rank_weights(*args: Any, **kwargs: Any) -> dict[str, Any]:
        settings = training.trainer_kwargs(*args, **kwargs)
        settings["callbacks"] = [*settings.get("callbacks", []), SaveRankWeights(ranks)]
        return settings

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(segment, "trainer_kwargs", with_rank_weights)
        patch.setattr(detect, "trainer_kwargs", with_rank_weights)
        torch.set_num_threads(1)
        metrics = run(compose_tiny(root, *DDP))
    return {"root": root, "ranks": ranks, "metrics": metrics, "client": MlflowClient(store_uri(root))}


@pytest.mark.parametrize("task", ["SegmentationTask", "ReconstructionTask"])
def test_both_ranks_end_training_with_identical_weights(ddp_run, task: str) -> None:
    files = sorted(ddp_run["ranks"].glob(f"{task}_rank*.safetensors"))
    assert [f.name for f in files] == [f"{task}_rank0of2.safetensors", f"{task}_rank1of2.safetensors"]
    rank0, rank1 = (load_file(str(f)) for f in files)
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key


def test_the_trained_weights_come_back_to_the_pipeline(ddp_run) -> None:
    rank0 = load_file(str(ddp_run["ranks"] / "ReconstructionTask_rank0of2.safetensors"))
    (fit_folder,) = [p for p in (ddp_run["root"] / "cache" / "fit").iterdir() if not p.name.startswith(".")]
    saved = load_file(str(fit_folder / "model.safetensors"))
    assert all(torch.equal(saved[key], rank0[key]) for key in saved)


def test_only_rank_zero_logs_to_mlflow(ddp_run) -> None:
    client = ddp_run["client"]
    (parent,) = pipeline_runs(client)
    stages = stage_runs(client, parent)
    assert parent.info.run_id == ddp_run["metrics"]["run_id"]
    assert set(stages) == set(STAGES), "no rank opened runs of its own"
    assert {s.info.status for s in [parent, *stages.values()]} == {"FINISHED"}
    for stage in ("segment", "detect"):
        history = client.get_metric_history(stages[stage].info.run_id, "val/loss")
        assert len(history) == 1, f"{stage}: one epoch logs val/loss once, not once per rank"
    assert mlflow.active_run() is None


def test_ddp_inside_a_slurm_job_still_starts_two_ranks(monkeypatch, tmp_path: Path) -> None:
    slurm_job = {"SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1", "SLURM_JOB_NAME": "polydefect", "SLURM_JOB_ID": "7"}
    for key, value in {**slurm_job, "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}.items():
        monkeypatch.setenv(key, value)
    trainer = L.Trainer(**training.trainer_kwargs(compose_tiny(tmp_path, *DDP), 1, tmp_path))
    assert trainer.world_size == 2, "the ranks are the trainer's own processes, not the job's single SLURM task"
