"""A detector's fit holds no more than it needs: the training images are read as training uses them, and the
trainer with its training data is gone before the bank is built and the validation scores (they refer to each
other, so only a cyclic collection would free them otherwise)."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

from helpers.tiny import compose_tiny
from lightning import LightningDataModule

from polydefect.data.datasets import ImageDataset
from polydefect.data.sample import LazySamples
from polydefect.data.splits import make_splits
from polydefect.pipeline.detect import fitting_samples, train_detector, training_datamodule
from polydefect.tasks.base import build_detector


def test_training_lets_go_of_its_trainer_and_data_before_the_bank_is_built(tmp_path: Path) -> None:
    cfg = compose_tiny(tmp_path, "model=patchcore", "model.input_size=64")
    splits = make_splits(cfg.data, {"real": Path(cfg.data.root), "synthetic": Path(cfg.data.synthetic_root)}, 0)
    samples = fitting_samples(splits, cfg.preprocess)
    assert isinstance(samples["train"], LazySamples) and len(samples["train"]) == len(splits.train)
    assert isinstance(samples["val"], list)  # held: the validation signal scores them and their pasted copies
    detector = build_detector(cfg.model)
    made: list[weakref.ref] = []

    def datamodule() -> LightningDataModule:  # handed over as the pipeline does: the caller keeps no reference
        data = training_datamodule(cfg, detector, samples["train"], samples["val"])
        made.append(weakref.ref(data))
        return data

    gc.disable()  # no collection but the one `train_detector` asks for
    try:
        train_detector(cfg, detector, datamodule(), tmp_path / "fit")
        assert made[0]() is None and detector._trainer is None
    finally:
        gc.enable()
    image = ImageDataset(samples["val"])[0]["image"][None]
    assert bool(detector.eval().anomaly_map(image).isfinite().all())  # the bank was built after all
