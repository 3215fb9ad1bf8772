"""Data stage: find (or render) the real and synthetic images, split them into train / val / test tables, check them."""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
from omegaconf import DictConfig, OmegaConf, open_dict

from polydefect.data.preprocess import aspect_kept_size
from polydefect.data.splits import DataSplits, make_splits
from polydefect.data.validate import validate_tables
from polydefect.pipeline.candidates import CANDIDATES, check_auto, is_auto
from polydefect.scoring.location import check_normalise

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


def prepare_data(cfg: DictConfig) -> tuple[DataSplits, dict[str, Path]]:
    """The run's splits and the folder of each domain, every file checked: bad input stops the run here,
    before its MLflow run, output folder or any stage cache entry exists. A size rule (`preprocess.short_side`)
    becomes the size it gives these images, in `cfg` itself, so the logged config and the cache keys hold it."""
    check_normalise(cfg.scoring.normalise, cfg.detect.validation.enabled)
    roots = domain_roots(cfg)
    splits = make_splits(cfg.data, roots, cfg.seed)
    shapes = validate_tables((splits.train, splits.val, splits.test))
    train_shapes = [shapes[path] for path in splits.train["image_path"]]
    apply_size_rule(cfg.preprocess, train_shapes, "preprocess")
    auto = cfg.model is not None and is_auto(cfg.model)
    if auto:
        check_auto(cfg)
    candidates = cfg.model[CANDIDATES] if auto else {}
    for name, candidate in candidates.items():  # model=auto: each candidate's own inputs
        if "preprocess" in candidate:
            with open_dict(candidate):
                candidate.preprocess = OmegaConf.merge(cfg.preprocess, candidate.preprocess)
            apply_size_rule(candidate.preprocess, train_shapes, f"model.{CANDIDATES}.{name}.preprocess")
    return splits, roots


def apply_size_rule(preprocess: DictConfig, train_shapes: list[tuple[int, int]], where: str) -> None:
    """A size rule (`short_side` with no `size`) becomes the size it gives the training images, in place."""
    if preprocess.size is None and preprocess.short_side is not None:
        size = aspect_kept_size(train_shapes, preprocess.short_side)
        log.info("%s.short_side=%d: every image is resized to %d x %d", where, preprocess.short_side, *size)
        with open_dict(preprocess):
            preprocess.size = size


def log_data(splits: DataSplits, roots: dict[str, Path]) -> None:
    """Log the split sizes and resolved folders, to the nested `data` stage run when one is active."""
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
