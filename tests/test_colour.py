"""Colour parts: `preprocess.colour` keeps RGB from reading to the detector, grey models still run on it, and
an MVTec-layout folder of colour images goes through the whole pipeline with the default and a grey detector."""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
from helpers.mvtec import write_colour_mvtec
from helpers.tiny import compose_app, store_uri
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf, open_dict

from polydefect.config import PreprocessConfig
from polydefect.data.datasets import WindowDataset, to_tensor
from polydefect.data.layout import discover_mvtec
from polydefect.data.preprocess import clahe, to_rgb_uint8
from polydefect.data.sample import load_sample
from polydefect.data.tiling import split
from polydefect.evaluation.plots import reconstruction_panels
from polydefect.models.cae import ConvAutoencoder
from polydefect.pipeline.run import run
from polydefect.reporting.overlay import anomaly_overlay
from polydefect.tasks.reconstruction import ReconstructionTask


def test_colour_files_become_rgb_and_grey_files_are_replicated() -> None:
    bgr = np.zeros((2, 3, 3), np.uint8)
    bgr[..., 0] = 200  # blue in OpenCV's order
    assert to_rgb_uint8(bgr)[0, 0].tolist() == [0, 0, 200]
    grey = np.full((2, 3), 70, np.uint16) * 257  # 16-bit, scaled by the full range
    assert to_rgb_uint8(grey)[0, 0].tolist() == [70, 70, 70]


def test_colour_clahe_equalises_lightness_keeps_grey_grey_and_the_background_black() -> None:
    rng = np.random.default_rng(0)
    image = np.zeros((64, 64, 3), np.uint8)
    mask = np.zeros((64, 64), bool)
    mask[16:48, 16:48] = True
    image[mask] = rng.integers(100, 130, (mask.sum(), 1))  # grey texture, equal channels
    out = clahe(image, mask, clip_limit=9.0, tile_grid=4)
    assert out[~mask].max() == 0
    assert out[mask].std() > image[mask].std()
    assert np.abs(out[mask].astype(int) - out[mask].mean(axis=1, keepdims=True)).max() <= 2  # still grey


@pytest.fixture(scope="module")
def colour_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_colour_mvtec(tmp_path_factory.mktemp("colour") / "data")


def _preprocess(**overrides):
    return OmegaConf.merge(OmegaConf.structured(PreprocessConfig), {"colour": True, **overrides})


def test_colour_samples_keep_three_channels_and_two_dimensional_masks(colour_root: Path) -> None:
    table = discover_mvtec(colour_root)
    stained = table[table["defect_type"] == "stain"].iloc[0]
    sample = load_sample(stained, _preprocess(size=[64, 48]))
    assert sample.image.shape == (48, 64, 3) and sample.object_mask.shape == sample.defect_mask.shape == (48, 64)
    assert sample.defect_mask.any()
    hue = cv2.cvtColor(sample.image, cv2.COLOR_RGB2HSV)[..., 0]
    assert hue[sample.defect_mask].mean() > hue[~sample.defect_mask].mean() + 50  # the stain is blue, the plate orange
    assert to_tensor(sample.image).shape == (3, 48, 64)


def test_colour_windows_are_cut_and_augmented_with_their_channels(colour_root: Path) -> None:
    table = discover_mvtec(colour_root)
    samples = [load_sample(row, _preprocess()) for _, row in table[table["split"] == "train"].iterrows()]
    windows = WindowDataset(samples, core=32, window=48, augment=A.HorizontalFlip(p=1.0))
    assert windows[0]["image"].shape == (3, 48, 48) and windows[0]["mask"].shape == (1, 48, 48)


def test_grey_files_read_as_rgb_keep_one_channel_of_windows_and_hand_out_the_same_rgb(colour_root: Path) -> None:
    table = discover_mvtec(colour_root)
    rgb = [load_sample(row, _preprocess()) for _, row in table[table["split"] == "train"].iterrows()]
    grey = [replace(s, image=to_rgb_uint8(cv2.cvtColor(s.image, cv2.COLOR_RGB2GRAY))) for s in rgb]  # 3 equal channels
    kept, colour = WindowDataset(grey, core=32, window=48), WindowDataset(rgb, core=32, window=48)
    assert kept.grey_as_rgb and kept.images.ndim == 3 and not colour.grey_as_rgb and colour.images.ndim == 4
    whole = torch.stack([to_tensor(s.image) for s in grey])  # the RGB windows as cut before, from the same images
    expected = (split(whole, 32, 48)[0] * 255).round().to(torch.uint8)
    assert all(torch.equal((kept[i]["image"] * 255).round().to(torch.uint8), expected[i]) for i in range(len(kept)))
    flipped = WindowDataset(grey, core=32, window=48, augment=A.HorizontalFlip(p=1.0))[0]["image"]
    assert torch.equal(flipped, kept[0]["image"].flip(-1))  # augmented as the RGB window it hands out


def test_a_grey_autoencoder_scores_colour_images_as_their_channel_mean() -> None:
    torch.manual_seed(0)
    net = ConvAutoencoder(widths=(4, 8), bottleneck=(8, 4, 8), dropout=0.0)
    task = ReconstructionTask(net, functools.partial(torch.optim.Adam, lr=1e-3), core=16, window=32)
    colour = torch.rand(2, 3, 40, 24)
    maps = task.anomaly_map(colour)
    assert maps.shape == (2, 1, 40, 24)
    assert torch.allclose(maps, task.anomaly_map(colour.mean(1, keepdim=True)))
    loss = task.training_step({"image": torch.rand(4, 3, 32, 32)}, 0)["loss"]
    assert torch.isfinite(loss)


def test_colour_inputs_draw_in_panels_and_overlays() -> None:
    images = torch.rand(2, 3, 24, 32)
    reconstructions = images.mean(1, keepdim=True)  # a grey model's reconstruction of a colour input
    maps = (images - reconstructions).square().mean(1, keepdim=True)
    assert reconstruction_panels(images, reconstructions, maps) is not None
    rgb = (np.random.default_rng(0).random((24, 32, 3)) * 255).astype(np.uint8)
    overlay = anomaly_overlay(rgb, np.zeros((24, 32)), np.ones((24, 32), bool), vmax=1.0)
    assert overlay.shape == (24, 64, 3)
    assert overlay[0, 0].tolist() == rgb[0, 0, ::-1].tolist()  # RGB in, BGR out for cv2.imwrite


@pytest.mark.parametrize(
    "overrides",
    [
        [  # the colour feature detectors, both backbones, both kinds
            "model=ensemble",
            "model.members.lite0.input_size=64",
            "model.members.lite2.input_size=64",
            "model.members.segmenter_lite0.input_size=64",
            "model.members.segmenter_lite2.input_size=64",
        ],
        ["model=cae", "model.net.widths=[4,8]", "model.net.bottleneck=[8,4,8]"],  # a grey model
    ],
    ids=["ensemble", "grey_cae"],
)
def test_a_colour_mvtec_folder_runs_end_to_end(colour_root: Path, tmp_path: Path, overrides: list[str]) -> None:
    cfg = compose_app(
        "data=mvtec",
        f"data.root={colour_root}",
        "data.batch_size=4",
        "preprocess.size=[64,64]",
        "preprocess.tile.core=64",
        "preprocess.tile.window=64",
        "trainer=fast",
        "detect.samples=2",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"mlflow.tracking_uri={store_uri(tmp_path)}",
        *overrides,
    )
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "out")
    assert cfg.preprocess.colour
    metrics = run(cfg)
    assert 0.0 <= metrics["test/pixel_auroc"] <= 1.0
    assert MlflowClient(store_uri(tmp_path)).get_run(metrics["run_id"]).info.status == "FINISHED"
    assert (tmp_path / "out" / "evaluation" / "defect_maps.png").is_file()
