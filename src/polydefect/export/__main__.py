"""`python -m polydefect.export run=<run id or folder> out=<folder>`: a trained run as an inspection bundle."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from polydefect.export.bundle import export_bundle


@hydra.main(version_base="1.3", config_path="../../../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    out = export_bundle(str(cfg.run), cfg.mlflow.tracking_uri, Path(cfg.out), int(cfg.verify))
    print(f"Bundle: {out}")


if __name__ == "__main__":
    main()
