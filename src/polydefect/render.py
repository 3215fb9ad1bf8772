"""Render the embedded data set (or reuse the cache) and expose it in the Hydra run folder as `data/`.

python -m polydefect.render synth=scanner synth.size=tiny
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from polydefect.synth import ensure_rendered

log = logging.getLogger(__name__)


def run(cfg: DictConfig, output_dir: Path) -> Path:
    """Render `cfg.synth` into the cache and link (or copy, `link=copy`) it to output_dir/data; return that path."""
    root = ensure_rendered(cfg.synth, progress=cfg.progress)
    log.info("data set of profile %s at %s", cfg.synth.profile, root)
    target = output_dir / "data"
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.is_dir():
        shutil.rmtree(target)
    if cfg.link == "symlink":
        target.symlink_to(root, target_is_directory=True)
    elif cfg.link == "copy":
        shutil.copytree(root, target)
    else:
        raise ValueError(f"link: {cfg.link!r}; choose symlink or copy")
    return target


@hydra.main(version_base="1.3", config_path="../../conf", config_name="render")
def main(cfg: DictConfig) -> None:
    run(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
