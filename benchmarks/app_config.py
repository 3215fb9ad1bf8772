"""The app's own config, composed as `python -m polydefect` would, so benchmarks build what the pipeline builds."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from polydefect.config import register_configs

CONF = Path(__file__).resolve().parents[1] / "conf"


def compose_config(*overrides: str) -> DictConfig:
    """The composed root config with `overrides` (e.g. "preprocess=thesis", "model=patchcore")."""
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", list(overrides))


def fresh_store(scratch: Path) -> list[str]:
    """Overrides giving a run a stage cache and an MLflow store of its own in `scratch`: it fits everything anew,
    as on a new machine, and leaves nothing behind once `scratch` is removed."""
    return [f"paths.cache_dir={scratch / 'cache'}", f"mlflow.tracking_uri=sqlite:///{scratch / 'mlflow.db'}"]
