"""Rendering in tests: the composed `synth` node of conf/render.yaml, and the skip where bpy is absent."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from helpers.paths import REPO

NEEDS_BPY = pytest.mark.skipif(
    importlib.util.find_spec("bpy") is None and os.environ.get("CI") != "true",
    reason="needs the bpy package: pip install -e .[render]",
)


def synth_config(cache_dir: Path, *overrides: str) -> DictConfig:
    """The composed `synth` node of conf/render.yaml with overrides, rendering into cache_dir."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("render", overrides=[f"synth.cache_dir={cache_dir}", *overrides])
    return cfg.synth
