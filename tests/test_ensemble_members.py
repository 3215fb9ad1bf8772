"""An ensemble of a memory bank and a segmentation head trained on pasted anomalies, fitted in one Trainer."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch
from helpers.surfaces import textured_surfaces
from helpers.tiny import compose_app
from helpers.trainer import bare_trainer
from torch.utils.data import DataLoader

from polydefect.models.backbones import EfficientNetLiteFeatures
from polydefect.models.feature_memory import PatchFeatureMemory
from polydefect.models.feature_segmenter import FeatureSegmenter
from polydefect.tasks.ensemble import EnsembleTask
from polydefect.tasks.feature_segmentation import FeatureSegmentationTask
from polydefect.tasks.memory_bank import MemoryBankTask


def _members() -> dict[str, MemoryBankTask | FeatureSegmentationTask]:
    bank = MemoryBankTask(
        PatchFeatureMemory(EfficientNetLiteFeatures("efficientnet-lite0", [2, 4])), input_size=64, bank_ratio=0.5
    )
    segmenter = FeatureSegmentationTask(
        FeatureSegmenter(EfficientNetLiteFeatures("efficientnet-lite0", [2, 4]), widths=(16, 8)),
        partial(torch.optim.Adam, lr=1e-2),
        input_size=64,
        anomaly_probability=1.0,
    )
    return {"bank": bank, "segmenter": segmenter}


def test_banks_collect_one_pass_while_the_head_trains_every_epoch_and_both_are_standardised() -> None:
    torch.manual_seed(0)
    ensemble = EnsembleTask(_members(), max_epochs=3)
    head = {k: v.clone() for k, v in ensemble.members["segmenter"].net.head.state_dict().items()}
    surfaces = textured_surfaces(14, size=(40, 56))  # 8 to train on, 4 to validate, 2 to test
    train = DataLoader([{"image": image} for image in surfaces[:8]], batch_size=4)
    val = DataLoader([{"image": image} for image in surfaces[8:12]], batch_size=2)
    trainer = bare_trainer(max_epochs=3)
    trainer.fit(ensemble, train_dataloaders=train, val_dataloaders=val)
    assert trainer.current_epoch == 3 and trainer.global_step == 3 * 2  # the head stepped on every batch
    assert torch.isfinite(trainer.callback_metrics["train/segmenter/loss"])
    assert any(not torch.equal(v, ensemble.members["segmenter"].net.head.state_dict()[k]) for k, v in head.items())
    ensemble.fit()
    patches = 8 * 8  # 64 px square input at stride 8
    assert len(ensemble.members["bank"].net.bank) == pytest.approx(0.5 * 8 * patches, abs=1)  # one pass, not three
    assert (ensemble.score_std != 1).all() and (ensemble.score_mean != 0).all()
    good = surfaces[12:]
    bad = good.clone()
    bad[:, :, 12:28, 16:36] = 1.0 - bad[:, :, 12:28, 16:36]
    good_map, bad_map = ensemble.anomaly_map(good), ensemble.anomaly_map(bad)
    assert good_map.shape == (2, 1, 40, 56) and good_map.dtype == torch.float32
    standardised = [
        (member.anomaly_map(bad) - ensemble.score_mean[i]) / ensemble.score_std[i]
        for i, member in enumerate(ensemble.members.values())
    ]
    assert torch.allclose(bad_map, torch.stack(standardised).mean(0), atol=1e-5)  # one upsampling of the mean
    assert bad_map.flatten(1).amax(1).min() > good_map.flatten(1).amax(1).max()


def test_members_on_one_backbone_run_it_once_per_batch_and_score_as_they_would_one_by_one() -> None:
    torch.manual_seed(0)
    members = _members()
    members["other"] = MemoryBankTask(  # another input size: its own pass
        PatchFeatureMemory(EfficientNetLiteFeatures("efficientnet-lite0", [2, 4])), input_size=96, bank_ratio=0.5
    )
    ensemble = EnsembleTask(members).eval()
    surfaces = textured_surfaces(6, size=(40, 56))
    for bank in ensemble._banks():
        bank.collect(surfaces[:4])
    ensemble.validation_images = [surfaces[4:]]
    passes = []
    for name, member in members.items():
        member.net.backbone.register_forward_hook(lambda *_, name=name: passes.append(name))
    ensemble.fit()
    assert sorted(passes) == ["bank", "other"]  # the segmenter's validation maps reuse the bank's features
    passes.clear()
    shared = ensemble.anomaly_map(surfaces[:2])
    assert sorted(passes) == ["bank", "other"]
    passes.clear()
    ensemble.hparams.share_features = False
    alone = ensemble.anomaly_map(surfaces[:2])
    assert sorted(passes) == ["bank", "other", "segmenter"]
    assert torch.allclose(shared, alone, atol=1e-5)


def test_a_member_that_is_neither_a_bank_nor_trained_on_pasted_anomalies_is_refused() -> None:
    with pytest.raises(ValueError, match="model.members.cae"):
        EnsembleTask({"cae": L.LightningModule()})


def test_the_default_ensembles_memories_average_their_features_as_its_segmenters_so_each_backbone_runs_once() -> None:
    members = compose_app("model=ensemble").model.members
    for memory, segmenter in (("lite0", "segmenter_lite0"), ("lite2", "segmenter_lite2")):
        assert members[memory].net.backbone == members[segmenter].net.backbone
        assert members[memory].net.aggregation == members[segmenter].net.aggregation  # one embedding key
        assert members[memory].sigma == members[segmenter].sigma  # one upsampling
