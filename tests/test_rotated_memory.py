"""Rotation-augmented memories (`model.rotations`): a part that can lie at any angle is known at the angles the
training images did not show, and a defect still stands out at every angle."""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest
import torch
from helpers.trainer import bare_trainer
from torch.utils.data import DataLoader

from polydefect.export.graphs import export_detector
from polydefect.models.backbones import EfficientNetLiteFeatures
from polydefect.models.feature_memory import PatchFeatureMemory
from polydefect.models.retrieval_memory import RetrievalFeatureMemory
from polydefect.tasks.ensemble import EnsembleTask
from polydefect.tasks.memory_bank import MemoryBankTask, check_rotations, check_score_rotations, turned
from polydefect.tasks.retrieval_memory import RetrievalMemoryTask

TURNS = [0, 90, 180, 270]


def striped(count: int, seed: int, turned: bool = False, defect: bool = False) -> torch.Tensor:
    """Grey 64 x 64 surfaces (B, 1, H, W) with stripes across x, or across y where `turned` (the same part a
    quarter turn round); defective ones carry a dark blotch off the centre."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64]
    images = []
    for _ in range(count):
        image = 0.5 + 0.15 * np.sin((yy if turned else xx) / 2.5 + rng.uniform(0, 2 * np.pi)) + rng.normal(0, 0.02)
        if defect:
            image[(yy - 24) ** 2 + (xx - 40) ** 2 < 36] = 0.05
        images.append(image)
    return torch.from_numpy(np.clip(np.stack(images), 0, 1)).float()[:, None]


def fitted(task: MemoryBankTask) -> MemoryBankTask:
    torch.manual_seed(0)
    loader = DataLoader([{"image": image} for image in striped(8, seed=0)], batch_size=4)
    bare_trainer(max_epochs=1).fit(task, train_dataloaders=loader)
    task.fit()
    return task


def backbone() -> EfficientNetLiteFeatures:
    return EfficientNetLiteFeatures("efficientnet-lite0", stages=[2, 4])


@pytest.fixture(scope="module")
def memories() -> dict[str, MemoryBankTask]:
    settings = {"input_size": 64, "bank_ratio": 0.5, "sigma": 2.0}
    memories = {
        str(turns): fitted(MemoryBankTask(PatchFeatureMemory(backbone()), rotations=turns, **settings))
        for turns in ([0], TURNS)
    }
    scored_turned = MemoryBankTask(PatchFeatureMemory(backbone()), rotations=TURNS, score_rotations=TURNS, **settings)
    return memories | {"scored at every turn": fitted(scored_turned)}


def peaks(task: MemoryBankTask, images: torch.Tensor) -> torch.Tensor:
    return task.anomaly_map(images).flatten(1).amax(1)


def test_a_turned_good_part_is_known_only_to_the_rotated_memory(memories) -> None:
    plain, rotated = memories["[0]"], memories[str(TURNS)]
    good, turned = striped(4, seed=1), striped(4, seed=2, turned=True)
    # the plain memory has seen the stripes one way only: turned, a good part looks like a defect to it
    assert peaks(plain, turned).min() > 1.5 * peaks(plain, good).max()
    # the rotated memory knows both ways: a turned good part scores as an upright one does
    assert peaks(rotated, turned).max() < 1.3 * peaks(rotated, good).max()
    assert len(rotated.net.bank) == pytest.approx(4 * len(plain.net.bank), rel=0.01)


def test_the_rotated_memory_still_finds_a_defect_at_every_angle(memories) -> None:
    rotated = memories[str(TURNS)]
    for across_y in (False, True):
        good = peaks(rotated, striped(4, seed=3, turned=across_y))
        bad = peaks(rotated, striped(4, seed=4, turned=across_y, defect=True))
        assert bad.min() > good.max()


def test_the_retrieval_memory_keeps_each_turned_copy_as_an_image_of_its_own() -> None:
    task = fitted(RetrievalMemoryTask(RetrievalFeatureMemory(backbone(), neighbours=2), input_size=64, rotations=TURNS))
    assert len(task.net.patches) == 4 * 8
    good = peaks(task, striped(4, seed=5, turned=True))
    bad = peaks(task, striped(4, seed=6, turned=True, defect=True))
    assert bad.min() > good.max()


def test_scoring_at_every_quarter_turn_turns_the_map_with_the_part(memories) -> None:
    averaged = memories["scored at every turn"]
    part = striped(2, seed=7, defect=True)
    for angle in (90, 180, 270):
        # the mean over every turn is the same mean however the part lies: its map turns with it, exactly
        torch.testing.assert_close(averaged.anomaly_map(turned(part, angle)), turned(averaged.anomaly_map(part), angle))
    # scored once, the backbone's answer depends on the angle
    once = memories[str(TURNS)]
    assert (once.anomaly_map(turned(part, 90)) - turned(once.anomaly_map(part), 90)).abs().max() > 0.05
    for across_y in (False, True):
        good = peaks(averaged, striped(4, seed=3, turned=across_y))
        bad = peaks(averaged, striped(4, seed=4, turned=across_y, defect=True))
        assert bad.min() > good.max()


def test_an_exported_memory_scores_turned_images_as_its_pytorch_path(memories, tmp_path) -> None:
    task = memories["scored at every turn"]
    session = onnxruntime.InferenceSession(str(export_detector(task, 1, (64, 64), tmp_path / "map.onnx")))
    part = striped(3, seed=9, defect=True)
    exported = session.run(None, {session.get_inputs()[0].name: part.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(exported), task.anomaly_map(part), rtol=1e-4, atol=1e-4)


def test_score_rotations_outside_the_memory_s_rotations_are_named() -> None:
    with pytest.raises(ValueError, match=r"model.score_rotations must list distinct angles of model.rotations"):
        check_score_rotations([0, 90], (0, 180))
    assert check_score_rotations([0, 180], (0, 90, 180)) == (0, 180)


def test_an_ensemble_refuses_a_member_that_scores_turned_images() -> None:
    member = MemoryBankTask(PatchFeatureMemory(backbone()), rotations=TURNS, score_rotations=TURNS)
    with pytest.raises(ValueError, match=r"model.members.lite0.score_rotations"):
        EnsembleTask({"lite0": member})


@pytest.mark.parametrize("turns", [[90], [0, 45], [0, 90, 90], []])
def test_rotations_other_than_distinct_quarter_turns_with_zero_are_named(turns) -> None:
    with pytest.raises(ValueError, match=r"model.rotations must list distinct angles of \[0, 90, 180, 270\]"):
        check_rotations(turns)
