"""Data stage: find (or render) the real and synthetic images and split them into train / val / test tables."""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
from omegaconf import DictConfig

from polydefect.data.splits import DataSplits, make_splits

log = logging.getLogger(__name__)


def data_identity(cfg: DictConfig) -> dict:
    """The data settings that decide a stage's output, for its cache key: all but how many workers load them."""
    return {key: value for key, value in cfg.data.items() if key != "num_workers"}


def domain_roots(cfg: DictConfig) -> dict[str, Path]:
    """The folder of each domain the run needs; an unset root renders the embedded data set (cached)."""
    wanted = {"real"} | set(cfg.data.train_domains)
    given = {"real": cfg.data.root, "synthetic": cfg.data.synthetic_root}
    roots: dict[str, Path] = {}
    for domain in sorted(wanted):
        if given[domain]:
            roots[domain] = Path(given[domain]).expanduser()
            continue
        from polydefect.synth import ensure_rendered  # bpy is needed only when rendering

        log.info(
            "data.%s is unset: rendering the embedded %s data set",
            "root" if domain == "real" else "synthetic_root",
            domain,
        )
        roots[domain] = ensure_rendered(cfg.render[domain])
    return roots


def prepare_data(cfg: DictConfig) -> DataSplits:
    """Resolve the folders and split them; logs the counts of the nested MLflow run when one is active."""
    roots = domain_roots(cfg)
    splits = make_splits(cfg.data, roots, cfg.seed)
    counts = {
        "data/train_images": len(splits.train),
        "data/val_images": len(splits.val),
        "data/test_images": len(splits.test),
        "data/test_defective": int(splits.test["label"].sum()),
    }
    log.info("Data: %s", ", ".join(f"{k.split('/')[1]}={v}" for k, v in counts.items()))
    if mlflow.active_run():
        mlflow.log_metrics(counts)
        mlflow.log_params({f"data.resolved_root.{k}": str(v) for k, v in roots.items()})
    return splits
