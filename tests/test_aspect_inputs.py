"""Long narrow images keep their aspect: a size rule that follows the data (`preprocess.short_side`), and feature
detectors that see the short side at `input_size` with the long side following (`model.keep_aspect`)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers.tiny import compose_app
from helpers.trainer import bare_trainer
from torch.utils.data import DataLoader

from polydefect.data.preprocess import aspect_kept_size
from polydefect.models.backbones import EfficientNetLiteFeatures
from polydefect.models.feature_memory import PatchFeatureMemory
from polydefect.pipeline.data import prepare_data
from polydefect.tasks.inputs import antialiased_resize, input_shape, resize_input
from polydefect.tasks.memory_bank import MemoryBankTask


def surfaces(count: int, height: int, width: int, seed: int) -> torch.Tensor:
    """Grey grained surfaces (B, 1, H, W) in [0, 1]."""
    rng = np.random.default_rng(seed)
    grain = np.stack([cv2.GaussianBlur(rng.normal(0.5, 0.08, (height, width)), (0, 0), 1.0) for _ in range(count)])
    return torch.from_numpy(grain.clip(0, 1)).float()[:, None]


def fitted_bank(keep_aspect: bool, images: torch.Tensor) -> MemoryBankTask:
    torch.manual_seed(0)
    net = PatchFeatureMemory(EfficientNetLiteFeatures("efficientnet-lite0", stages=[2, 4]), aggregation=3, k=1)
    task = MemoryBankTask(net, input_size=64, keep_aspect=keep_aspect, bank_ratio=0.5, sigma=2.0)
    bare_trainer(max_epochs=1).fit(task, train_dataloaders=DataLoader([{"image": i} for i in images], batch_size=4))
    task.fit()
    return task.eval()


def test_the_input_keeps_the_short_side_at_input_size_and_the_aspect() -> None:
    assert input_shape(1250, 500, 160) == (160, 160)  # squashed to the square
    assert input_shape(1250, 500, 160, keep_aspect=True) == (400, 160)
    assert input_shape(300, 900, 64, keep_aspect=True) == (64, 192)
    assert input_shape(100, 100, 64, keep_aspect=True) == input_shape(100, 100, 64) == (64, 64)
    assert input_shape(77, 33, None, keep_aspect=True) == (77, 33)
    assert resize_input(torch.zeros(2, 3, 1250, 500), 160, keep_aspect=True).shape == (2, 3, 400, 160)


@pytest.mark.parametrize("source", [(1250, 500), (256, 256), (37, 64), (7, 9)])
@pytest.mark.parametrize("target", [(648, 256), (160, 408), (40, 33), (3, 2)])
def test_the_resize_is_torch_s_antialiased_bilinear_taken_in_float64(
    source: tuple[int, int], target: tuple[int, int]
) -> None:
    images = torch.rand(2, 3, *source, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    exact = torch.nn.functional.interpolate(images, size=target, mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(antialiased_resize(images, target), exact, atol=1e-12, rtol=0)
    # in float32 it stays within a few rounding steps of that: torch's own float32 resize errs by up to ~3e-5
    torch.testing.assert_close(antialiased_resize(images.float(), target).double(), exact, atol=5e-7, rtol=0)


def test_on_square_images_the_aspect_kept_detector_gives_the_square_one_s_maps() -> None:
    train, test = surfaces(8, 96, 96, seed=0), surfaces(3, 96, 96, seed=1)
    test[0, :, 40:46, 40:46] = 0.0
    square, kept = fitted_bank(False, train), fitted_bank(True, train)
    assert torch.equal(square.net.bank, kept.net.bank)
    assert torch.equal(square.anomaly_map(test), kept.anomaly_map(test))


def test_a_small_defect_on_a_long_image_stands_out_more_with_the_aspect_kept() -> None:
    """A 4 x 4 px pit on a 48 x 384 strip: squashed to 64 x 64 it spans less than a patch along the strip."""
    train, good = surfaces(8, 48, 384, seed=0), surfaces(4, 48, 384, seed=1)
    pitted = good.clone()
    pitted[:, :, 22:26, 180:184] = 0.0
    contrast = {}
    for keep_aspect in (False, True):
        task = fitted_bank(keep_aspect, train)
        peak_pitted = task.anomaly_map(pitted).amax(dim=(1, 2, 3))
        peak_good = task.anomaly_map(good).amax(dim=(1, 2, 3))
        contrast[keep_aspect] = float((peak_pitted / peak_good).min())
    assert contrast[True] > 1.1 * contrast[False]
    assert contrast[True] > 1.3  # every pitted strip's peak stands clear of its own good twin's


def test_the_size_rule_takes_the_median_aspect_with_the_short_side_given() -> None:
    assert aspect_kept_size([(1250, 500), (1240, 500), (1270, 500)], 256) == [256, 640]
    assert aspect_kept_size([(100, 300), (100, 320), (90, 300)], 64) == [208, 64]  # 3.2: 204.8 -> 208
    assert aspect_kept_size([(64, 64)], 64) == [64, 64]
    with pytest.raises(ValueError, match="preprocess.short_side"):
        aspect_kept_size([(64, 64)], 4)


def test_a_run_resolves_the_size_rule_from_its_training_images_into_its_config(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for split, kind, count in (("train", "good", 6), ("test", "good", 2), ("test", "crack", 2)):
        for index in range(count):
            path = tmp_path / "strips" / split / kind / f"{index:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), rng.integers(0, 255, (325 - 5 * (split == "test"), 100), np.uint8))
    cfg = compose_app(
        "data=mvtec", f"data.root={tmp_path / 'strips'}", "preprocess.size=null", "preprocess.short_side=64"
    )
    prepare_data(cfg)
    assert list(cfg.preprocess.size) == [64, 208]  # width, height: the training images' 100 x 325 at 64 x 208
