"""Every detector config builds a `Detector`, anything else is refused at build time naming the key, and a
detector's weights round-trip through safetensors into a detector that maps images the same way."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.tiny import CONF, compose_app
from omegaconf import OmegaConf

from polydefect.pipeline.candidates import is_auto
from polydefect.tasks.base import Detector, DetectorTask, build_detector, load_detector

MODELS = sorted(path.stem for path in (CONF / "model").glob("*.yaml"))


@pytest.mark.parametrize("model", MODELS)
def test_every_model_config_builds_a_detector(model: str) -> None:
    node = compose_app(f"model={model}").model
    nodes = [candidate.model for candidate in node.candidates.values()] if is_auto(node) else [node]
    for detector in map(build_detector, nodes):  # model=auto: each of its candidates
        assert isinstance(detector, Detector) and isinstance(detector, DetectorTask)
        assert detector.checkpoint_monitor in (None, "val/loss")


def test_a_target_that_is_no_detector_is_refused_naming_the_key() -> None:
    with pytest.raises(TypeError, match=r"model\._target_: Linear is not a LightningModule implementing Detector"):
        build_detector(OmegaConf.create({"_target_": "torch.nn.Linear", "in_features": 2, "out_features": 1}))


def test_saved_weights_load_into_a_detector_that_maps_images_the_same_way(tmp_path: Path) -> None:
    model = compose_app("model=cae", "model.net.widths=[4,8]", "model.net.bottleneck=[8,4,8]").model
    torch.manual_seed(0)
    trained = build_detector(model).eval()
    trained.save_weights(tmp_path / "model.safetensors")
    torch.manual_seed(1)  # another initialisation: only the loaded weights can make the maps agree
    loaded = load_detector(model, tmp_path / "model.safetensors")
    images = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    assert not loaded.training
    assert torch.equal(loaded.anomaly_map(images), trained.anomaly_map(images))
    maps, reconstruction = loaded.map_and_reconstruction(images)
    assert maps.shape == (2, 1, 64, 64) and reconstruction.shape == images.shape
