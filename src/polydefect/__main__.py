"""`python -m polydefect`: the Hydra app that runs one pipeline (data -> segment -> detect -> evaluate)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from polydefect.config import register_configs

register_configs()


@hydra.main(version_base="1.3", config_path="../../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Run the pipeline; returns the run's objective so Hydra sweepers can optimise it."""
    from polydefect.pipeline.run import run

    return run(cfg).get("objective")


if __name__ == "__main__":
    main()
