"""The pose-conditioned memory (`model=retrieval_memory`): a test image is compared with the training images of
its own pose, found by a global descriptor, and never a training image with itself."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from helpers.trainer import bare_trainer
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader

from polydefect.models.backbones import EfficientNetLiteFeatures
from polydefect.models.retrieval_memory import RetrievalFeatureMemory
from polydefect.tasks.retrieval_memory import RetrievalMemoryTask

ANGLES = (0, 90, 180, 270)


def posed_part(angle: int, rng: np.random.Generator, pit: bool = False) -> torch.Tensor:
    """(1, 64, 64) in [0, 1]: an L-shaped bright part on a dark floor, turned by `angle`, with grain; `pit`: a
    dark 6 x 6 px spot on its long arm."""
    image = np.full((64, 64), 0.15)
    image[12:52, 18:30] = 0.8  # the long arm
    image[40:52, 30:48] = 0.8  # the foot
    if pit:
        image[21:27, 21:27] = 0.05
    image = np.rot90(image, angle // 90).copy()
    image += cv2.GaussianBlur(rng.normal(0, 0.03, image.shape), (0, 0), 1.0)
    return torch.from_numpy(image.clip(0, 1)).float()[None]


def part_mask(angle: int) -> torch.Tensor:
    """(64, 64) bool: where the part of `posed_part(angle)` lies (the frame's grained floor left out)."""
    mask = np.zeros((64, 64), bool)
    mask[12:52, 18:30] = mask[40:52, 30:48] = True
    return torch.from_numpy(np.rot90(mask, angle // 90).copy())


def training_images() -> list[torch.Tensor]:
    """4 images per pose, in pose order."""
    rng = np.random.default_rng(0)
    return [posed_part(angle, rng) for angle in ANGLES for _ in range(4)]


def fitted(neighbours: int = 3) -> RetrievalMemoryTask:
    train = training_images()
    net = RetrievalFeatureMemory(EfficientNetLiteFeatures("efficientnet-lite0", stages=[2, 4]), neighbours=neighbours)
    task = RetrievalMemoryTask(net, input_size=64, sigma=2.0)
    loader = DataLoader([{"image": image} for image in train], batch_size=4)
    bare_trainer(max_epochs=1).fit(task, train_dataloaders=loader)
    task.fit()
    return task.eval()


@pytest.fixture(scope="module")
def task() -> RetrievalMemoryTask:
    return fitted()


def test_a_test_image_retrieves_the_training_images_of_its_own_pose(task: RetrievalMemoryTask) -> None:
    rng = np.random.default_rng(1)
    for pose, angle in enumerate(ANGLES):
        features = task.net.embed(posed_part(angle, rng)[None])
        chosen = task.net.retrieve(task.net.describe(features))[0]
        assert set((chosen // 4).tolist()) == {pose}, (angle, chosen.tolist())


def test_a_training_image_never_retrieves_itself(task: RetrievalMemoryTask) -> None:
    images = torch.stack(training_images()[::4])  # the first training image of each pose, scored again
    chosen = task.net.retrieve(task.net.describe(task.net.embed(images)))
    for pose, indices in enumerate(chosen):
        assert 4 * pose not in indices.tolist() and set((indices // 4).tolist()) == {pose}


def test_a_pit_stands_out_in_every_pose(task: RetrievalMemoryTask) -> None:
    rng = np.random.default_rng(2)
    good = torch.stack([posed_part(a, rng) for a in ANGLES])
    pitted = torch.stack([posed_part(a, rng, pit=True) for a in ANGLES])
    on_part = torch.stack([part_mask(a) for a in ANGLES])[:, None]  # maps are scored over the object only
    peak_good, peak_pitted = ((task.anomaly_map(x) * on_part).amax(dim=(1, 2, 3)) for x in (good, pitted))
    assert (peak_pitted > 1.2 * peak_good).all(), (peak_good.tolist(), peak_pitted.tolist())


def test_the_memory_reloads_from_its_saved_state(task: RetrievalMemoryTask, tmp_path) -> None:
    save_file({k: v.contiguous() for k, v in task.state_dict().items()}, tmp_path / "memory.safetensors")
    fresh = RetrievalMemoryTask(
        RetrievalFeatureMemory(EfficientNetLiteFeatures("efficientnet-lite0", stages=[2, 4]), neighbours=3),
        input_size=64,
        sigma=2.0,
    )
    fresh.load_state_dict(load_file(tmp_path / "memory.safetensors"))
    image = posed_part(90, np.random.default_rng(3), pit=True)[None]
    assert torch.equal(fresh.eval().anomaly_map(image), task.anomaly_map(image))
