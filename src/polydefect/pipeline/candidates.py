"""`model=auto`'s candidates as runnable configs: each one the run's config with its own model and inputs.

A candidate (`model.candidates.<name>`) holds a `model` node (any conf/model choice, composed by Hydra's defaults
list) and optionally a `preprocess` patch (the data stage merges it over the run's preprocessing and turns a size
rule into a size, as it does for the run's own) and a `scoring` patch (merged over the run's scoring).
`model.choose_from` lists the names to try, in order.
A candidate whose patch crops to the part or masks its background (`crop_margin`, `mask_background`) is
object-centric: it is tried only where the images have object masks (the folder's own or a segmenter's).
"""

from __future__ import annotations

import copy

import pandas as pd
from omegaconf import DictConfig, OmegaConf, open_dict

from polydefect.segmentation.part_finder import has_masks

CANDIDATES = "candidates"
SIGNALS = ("synthetic_image_auroc", "synthetic_pixel_auroc")  # what `model.metric` may name


def is_auto(model: DictConfig) -> bool:
    """Whether the model node is a choice among candidates rather than one detector."""
    return CANDIDATES in model


def candidate_names(model: DictConfig) -> list[str]:
    """The candidates to try, in the order that breaks ties; each one named must be defined."""
    names = list(model.get("choose_from") or [])
    if not names:
        raise ValueError("model.choose_from: name at least one of model.candidates")
    unknown = [name for name in names if name not in model[CANDIDATES]]
    if unknown:
        raise ValueError(f"model.choose_from: {unknown} not in model.candidates ({sorted(model[CANDIDATES])})")
    return names


def check_auto(cfg: DictConfig) -> None:
    """Refuse, naming the key, a choice that could not be made: before anything is trained or written."""
    candidate_names(cfg.model)
    metric = str(cfg.model.get("metric", SIGNALS[0]))
    if metric not in SIGNALS:
        raise ValueError(f"model.metric: {metric!r} is not a validation signal; choose from {list(SIGNALS)}")
    if not cfg.detect.validation.enabled:
        raise ValueError("model=auto chooses on the validation signal: detect.validation.enabled must be true")


def is_object_centric(model: DictConfig, name: str) -> bool:
    """Whether candidate `name` crops to the part or masks its background: without object masks it would
    see the whole frame, as another candidate already does."""
    patch = model[CANDIDATES][name].get("preprocess") or {}
    return patch.get("crop_margin") is not None or bool(patch.get("mask_background", False))


def has_object_masks(train: pd.DataFrame) -> bool:
    """Whether the training images come with object masks, their own or a segmenter's (`predicted_mask_path`)."""
    return has_masks(train, "predicted_mask_path") or has_masks(train)


def candidate_config(cfg: DictConfig, name: str) -> DictConfig:
    """The run's config with candidate `name`'s model, and its preprocessing and scoring where it has its own."""
    candidate = cfg.model[CANDIDATES][name]
    chosen = copy.deepcopy(cfg)
    with open_dict(chosen):
        chosen.model = copy.deepcopy(candidate.model)
        for patched in ("preprocess", "scoring"):
            if patched in candidate:
                chosen[patched] = OmegaConf.merge(cfg[patched], candidate[patched])
    return chosen
