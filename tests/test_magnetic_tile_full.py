"""All of the real magnetic-tile data through the data layer: every image and mask loads and batches."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from polydefect.config import DataConfig, PreprocessConfig
from polydefect.data.datamodules import ReconstructionDataModule
from polydefect.data.datasets import ImageDataset
from polydefect.data.sample import load_sample
from polydefect.data.splits import make_splits


@pytest.mark.slow
def test_every_magnetic_tile_image_loads_resizes_and_batches(magnetic_tile: Path) -> None:
    data = OmegaConf.merge(OmegaConf.structured(DataConfig), {"layout": "mvtec", "val_fraction": 0.1})
    pre = OmegaConf.merge(
        OmegaConf.structured(PreprocessConfig),
        {"mask_background": False, "clahe": {"enabled": False}, "size": [96, 96], "tile": {"core": 96, "window": 96}},
    )
    splits = make_splits(data, {"real": magnetic_tile}, seed=0)
    samples = {role: [load_sample(row, pre) for _, row in table.iterrows()] for role, table in vars(splits).items()}
    assert sum(len(s) for s in samples.values()) == 1344
    defective = [s for s in samples["test"] if s.label == 1]
    assert len(defective) == 392
    # four "uneven" masks are (almost) empty, and a few tiny defects vanish at 96 px
    assert sum(s.defect_mask.any() for s in defective) >= 380
    module = ReconstructionDataModule(samples["train"], samples["val"], core=96, window=96, batch_size=64)
    module.setup("fit")
    assert len(module.train_set) == len(samples["train"])
    test_images = sum(len(batch["label"]) for batch in DataLoader(ImageDataset(samples["test"]), batch_size=64))
    assert test_images == 644
