"""`python -m polydefect`: the Hydra app that runs one pipeline (data -> segment -> detect -> evaluate)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from polydefect.config import register_configs

register_configs()


@hydra.main(version_base="1.3", config_path="../../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Run the pipeline and print its summary, the last thing on the console (each job's own in a multirun);
    returns the run's objective so Hydra sweepers can optimise it."""
    from polydefect.pipeline.run import run

    result = run(cfg)
    print(f"\n{result['summary']}", flush=True)  # a blank line after the progress bars
    return result.get("objective")


if __name__ == "__main__":
    main()
