"""Every conf/segmenter/*.yaml builds a segmenter through its constructor's signature."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from polydefect.segmentation.base import Segmenter, build_segmenter
from polydefect.segmentation.unet import UNetSegmenter

CONF = Path(__file__).resolve().parents[1] / "conf" / "segmenter"


# conf/segmenter/none.yaml (the lead's "no segmentation" choice) is empty: only `_target_` nodes build a segmenter
BUILT = [p for p in sorted(CONF.glob("*.yaml")) if "_target_" in (OmegaConf.load(p) or {})]


@pytest.mark.parametrize("path", BUILT, ids=lambda p: p.stem)
def test_each_segmenter_config_builds_a_segmenter(path):
    assert isinstance(build_segmenter(OmegaConf.load(path)), Segmenter)


def test_the_segmenter_group_offers_unet_and_the_three_baselines():
    assert {p.stem for p in BUILT} >= {"unet", "otsu", "kmeans", "watershed"}


def test_unet_config_builds_the_thesis_network_with_a_partial_adam():
    segmenter = build_segmenter(OmegaConf.load(CONF / "unet.yaml"))
    assert isinstance(segmenter, UNetSegmenter)
    assert sum(p.numel() for p in segmenter.net.parameters()) == 1_940_817
    assert type(segmenter.optimizer(segmenter.net.parameters())).__name__ == "Adam"


def test_a_misspelt_key_fails_at_build_time():
    cfg = OmegaConf.load(CONF / "otsu.yaml")
    cfg.closing_kernal = 5
    with pytest.raises(Exception, match="closing_kernal"):
        build_segmenter(cfg)
