"""The PatchCore-style memory-bank detector: one epoch of training, fit(), maps, and a state that reloads."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.tiny import compose_app
from helpers.trainer import bare_trainer
from hydra.utils import instantiate
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader

from polydefect.models.backbones import EfficientNetLiteFeatures
from polydefect.models.feature_memory import PatchFeatureMemory, ivf_index, nearest_distances
from polydefect.tasks.ensemble import EnsembleTask
from polydefect.tasks.memory_bank import MemoryBankTask


def _tiles(count: int, seed: int, defect: bool = False, size: tuple[int, int] = (72, 88)) -> torch.Tensor:
    """Grey textured surfaces (B, 1, H, W) in [0, 1]; defective ones carry a dark blotch in the centre."""
    rng = np.random.default_rng(seed)
    height, width = size
    yy, xx = np.mgrid[:height, :width]
    images = []
    for _ in range(count):
        phase = rng.uniform(0, 2 * np.pi)
        image = 0.5 + 0.1 * np.sin(xx / 3.0 + phase) + rng.normal(0, 0.03, size)
        if defect:
            image[(yy - 36) ** 2 + (xx - 44) ** 2 < 64] = 0.05
        images.append(image)
    return torch.from_numpy(np.clip(np.stack(images), 0, 1)).float()[:, None]


def _task(**overrides: object) -> MemoryBankTask:
    net = PatchFeatureMemory(EfficientNetLiteFeatures("efficientnet-lite0", stages=[2, 4]), aggregation=3, k=1)
    settings = {"input_size": 64, "bank_ratio": 0.25, "sigma": 2.0} | overrides
    return MemoryBankTask(net, **settings)


@pytest.fixture(scope="module")
def fitted() -> MemoryBankTask:
    torch.manual_seed(0)
    task = _task()
    loader = DataLoader([{"image": image} for image in _tiles(8, seed=0)], batch_size=4)
    trainer = bare_trainer(max_epochs=3)
    trainer.fit(task, train_dataloaders=loader, val_dataloaders=loader)
    assert trainer.current_epoch == 1  # one pass, whatever max_epochs says
    task.fit()
    return task


def test_fit_keeps_the_bank_ratio_of_the_collected_patch_features(fitted: MemoryBankTask) -> None:
    patches_per_image = 8 * 8  # 64 px input at stride 8
    assert len(fitted.net.bank) == pytest.approx(0.25 * 8 * patches_per_image, abs=1)
    assert fitted.coreset is None  # the collected features are gone with the fit


def test_defective_images_score_higher_and_peak_on_the_defect(fitted: MemoryBankTask) -> None:
    good = fitted.anomaly_map(_tiles(4, seed=1))
    bad = fitted.anomaly_map(_tiles(4, seed=2, defect=True))
    assert good.shape == bad.shape == (4, 1, 72, 88) and good.dtype == torch.float32
    assert bad.flatten(1).amax(1).min() > good.flatten(1).amax(1).max()
    peak_rows, peak_cols = np.unravel_index(bad.flatten(1).argmax(1).numpy(), (72, 88))
    assert np.all(np.abs(peak_rows - 36) < 12) and np.all(np.abs(peak_cols - 44) < 12)


def test_maps_are_in_units_of_the_good_validation_images_mean_peak(fitted: MemoryBankTask) -> None:
    # the fixture's fit saw its 8 training tiles as validation images
    assert fitted.anomaly_map(_tiles(8, seed=0)).flatten(1).amax(1).mean() == pytest.approx(1.0, abs=1e-5)
    raw = copy.deepcopy(fitted)
    raw.map_unit.fill_(1.0)
    images = torch.cat([_tiles(2, seed=5), _tiles(2, seed=6, defect=True)])
    assert fitted.map_unit > 2  # raw feature distances are larger than 1: the unit changes the values
    assert torch.allclose(fitted.anomaly_map(images) * fitted.map_unit, raw.anomaly_map(images), rtol=1e-5)


def test_a_fit_without_validation_images_keeps_raw_distances() -> None:
    task = _task()
    task.collect(_tiles(4, seed=0))
    task.fit()
    assert task.map_unit == 1.0


def test_maps_keep_odd_input_sizes_for_grey_and_colour(fitted: MemoryBankTask) -> None:
    grey = _tiles(2, seed=3, size=(51, 97))
    grey_map = fitted.anomaly_map(grey)
    colour_map = fitted.anomaly_map(grey.expand(-1, 3, -1, -1))
    assert grey_map.shape == colour_map.shape == (2, 1, 51, 97)
    assert torch.allclose(grey_map, colour_map)


def test_state_round_trips_through_safetensors_into_a_fresh_task(fitted: MemoryBankTask, tmp_path: Path) -> None:
    path = tmp_path / "patchcore.safetensors"
    save_file(fitted.state_dict(), str(path))
    fresh = _task()
    fresh.load_state_dict(load_file(str(path)))
    images = _tiles(2, seed=4, defect=True)
    assert torch.equal(fresh.anomaly_map(images), fitted.anomaly_map(images))


def test_weights_saved_before_maps_had_a_unit_load_as_raw_distances(fitted: MemoryBankTask, tmp_path: Path) -> None:
    path = tmp_path / "older.safetensors"
    save_file({k: v for k, v in fitted.state_dict().items() if k != "map_unit"}, str(path))
    older = _task().load_weights(path)
    images = _tiles(2, seed=4, defect=True)
    assert older.map_unit == 1.0
    assert torch.allclose(older.anomaly_map(images), fitted.anomaly_map(images) * fitted.map_unit, rtol=1e-5)


def test_maps_under_bf16_autocast_rank_like_the_fp32_maps(fitted: MemoryBankTask) -> None:
    # A run trained in bf16-mixed precision scores under bf16 autocast: the features reach faiss as bf16.
    images = torch.cat([_tiles(2, seed=7), _tiles(2, seed=8, defect=True)])
    full = fitted.anomaly_map(images)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = fitted.anomaly_map(images)
    assert mixed.dtype == torch.float32 and torch.isfinite(mixed).all()
    assert torch.corrcoef(torch.stack([full.flatten(), mixed.flatten()]))[0, 1] > 0.95
    assert mixed.flatten(1).amax(1)[2:].min() > mixed.flatten(1).amax(1)[:2].max()


def test_features_collected_under_autocast_are_kept_in_float32() -> None:
    task = _task()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        task.collect(_tiles(2, seed=0))
    assert task.coreset.projected.tell() == task.coreset.seen * 128 * 4  # float32 rows of 128


def test_scoring_before_fit_says_to_call_fit() -> None:
    with pytest.raises(RuntimeError, match="fit()"):
        _task().anomaly_map(_tiles(1, seed=5))


@pytest.mark.parametrize(("k", "queries", "rows"), [(3, 50, 30), (1, 50, 30), (1, 2500, 9000), (2, 2500, 9000)])
def test_nearest_distances_match_a_brute_force_reference(k: int, queries: int, rows: int) -> None:
    """Small, and over several blocks of queries (2 048) and bank rows (4 096)."""
    generator = torch.Generator().manual_seed(0)
    query_rows, bank = torch.randn(queries, 8, generator=generator), torch.randn(rows, 8, generator=generator)
    reference = torch.cdist(query_rows, bank).topk(k, largest=False).values.mean(1)
    assert torch.allclose(nearest_distances(query_rows, bank, k=k), reference, atol=1e-4)


@pytest.mark.parametrize(
    ("search", "settings"), [("hnsw", {"hnsw_links": 16, "hnsw_ef": 32}), ("ivf", {"ivf_lists": 8, "ivf_probes": 4})]
)
def test_approximate_search_finds_near_exact_distances_detects_and_survives_a_deep_copy(
    fitted: MemoryBankTask, search: str, settings: dict[str, int]
) -> None:
    net = PatchFeatureMemory(fitted.net.backbone, aggregation=3, search=search, **settings)
    approximate = _task()
    approximate.net = net
    net.remember(fitted.net.bank)
    approximate.map_unit.copy_(fitted.map_unit)
    images = torch.cat([_tiles(2, seed=3), _tiles(2, seed=4, defect=True)])
    exact, found = fitted.anomaly_map(images), approximate.anomaly_map(images)
    assert (found >= exact - 1e-4).all()  # an approximate neighbour is never nearer than the nearest
    assert torch.allclose(found, exact, rtol=0.02, atol=1e-3)  # a small bank: (nearly) every neighbour is found
    scores = found.flatten(1).amax(1)
    assert scores[2:].min() > scores[:2].max()
    assert torch.equal(copy.deepcopy(approximate).anomaly_map(images), found)  # the index is rebuilt, not copied
    with pytest.raises(ValueError, match="model.net.search"):
        PatchFeatureMemory(fitted.net.backbone, search="annoy")


def test_ivf_settings_are_checked_where_they_are_given(fitted: MemoryBankTask) -> None:
    with pytest.raises(ValueError, match="model.net.ivf_probes"):
        PatchFeatureMemory(fitted.net.backbone, search="ivf", ivf_probes=0)
    rows = fitted.net.bank.shape[0]
    with pytest.raises(ValueError, match="model.net.ivf_lists"):
        ivf_index(fitted.net.bank, lists=rows + 1)


def test_ensemble_standardises_members_on_validation_images_and_ranks_defects_higher() -> None:
    torch.manual_seed(0)
    members = {
        "lite0_64": _task(),
        "lite2_96": MemoryBankTask(
            PatchFeatureMemory(EfficientNetLiteFeatures("efficientnet-lite2", stages=[2])), input_size=96, sigma=2.0
        ),
    }
    ensemble = EnsembleTask(members)
    trainer = bare_trainer(max_epochs=2)
    train = DataLoader([{"image": image} for image in _tiles(8, seed=0)], batch_size=4)
    val = DataLoader([{"image": image} for image in _tiles(4, seed=6)], batch_size=2)
    trainer.fit(ensemble, train_dataloaders=train, val_dataloaders=val)
    ensemble.fit()
    assert sum(len(images) for images in ensemble.validation_images) == 4
    good = ensemble.anomaly_map(_tiles(4, seed=1))
    bad = ensemble.anomaly_map(_tiles(4, seed=2, defect=True))
    assert good.shape == (4, 1, 72, 88)
    assert bad.flatten(1).amax(1).min() > good.flatten(1).amax(1).max()
    # Standardised on good validation images: a good test image's score is near the validation spread.
    assert good.flatten(1).amax(1).abs().max() < 5


def test_ensemble_fit_without_validation_images_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="val_dataloaders"):
        EnsembleTask({"only": _task()}).fit()


@pytest.mark.parametrize(("name", "task_type"), [("patchcore", MemoryBankTask), ("ensemble", EnsembleTask)])
def test_model_configs_build_their_task(name: str, task_type: type) -> None:
    task = instantiate(compose_app(f"model={name}").model)  # composed: the ensemble's members come from defaults
    assert isinstance(task, task_type)
