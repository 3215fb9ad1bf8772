"""Structured-config schemas for the nodes that are not instantiated, registered with Hydra's ConfigStore.

`conf/config.yaml` names `base_config` first in its defaults list, so every YAML value is merged onto
these dataclasses: a misspelt key or a wrong type fails at start with a message naming the key.
Nodes built with `_target_` (segmenter, model, augment) are checked by their constructors instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from hydra.core.config_store import ConfigStore

from polydefect.scoring.location import NORMALISATIONS
from polydefect.scoring.maps import ERRORS
from polydefect.scoring.scores import PEAK_BASELINE, REDUCTIONS
from polydefect.scoring.thresholds import METHODS, REFERENCE_SPLITS
from polydefect.stage_keys import FINGERPRINTS

# Choices as enums: a misspelt value (scoring.reduction=maxx) fails at start naming the key and the choices,
# not after training. StrEnum members are their strings, so the code and the stage-cache keys see plain values;
# the choices are the lists the scoring code checks against (lower-case names: each member's value is its name).
MapError = StrEnum("MapError", ERRORS)
Reduction = StrEnum("Reduction", REDUCTIONS)
ThresholdMethod = StrEnum("ThresholdMethod", METHODS)
ThresholdSplit = StrEnum("ThresholdSplit", REFERENCE_SPLITS)
Fingerprint = StrEnum("Fingerprint", FINGERPRINTS)
Normalisation = StrEnum("Normalisation", NORMALISATIONS)


@dataclass
class DataConfig:
    """Which images a run trains and tests on (thesis 4.1.1)."""

    variant: str = "real"  # real | synthetic | mixed | mvtec: a name for logs and tables
    layout: str = "thesis"  # thesis | mvtec | auto
    root: str | None = None  # real images; None renders the embedded `scanner` profile
    synthetic_root: str | None = None  # synthetic images; None renders the embedded `clean` profile
    train_domains: list[str] = field(default_factory=lambda: ["real"])  # real and/or synthetic
    test_batches: list[int] = field(default_factory=lambda: [1, 2])  # thesis layout: real batches kept for testing
    val_fraction: float = 0.15  # share of the training images held out for validation
    size: str = "small"  # size of the embedded data: tiny | small | thesis
    batch_size: int = 8
    num_workers: int = 0
    # how each data file enters the stage-cache keys: stat (path, size, modification time) or content (a hash of
    # its bytes: slower; a fresh copy of the same data keeps its keys, a file rewritten with its time kept does not)
    fingerprint: Fingerprint = Fingerprint.stat


@dataclass
class ClaheConfig:
    enabled: bool = True
    clip_limit: float = 9.0  # thesis listing 3.2
    tile_grid: int = 9


@dataclass
class TileConfig:
    core: int = 256  # kept centre of each window (thesis 3.8.1)
    window: int = 320  # mirror-padded window fed to the model


@dataclass
class PreprocessConfig:
    """How an image becomes model input: grey or colour, mask, CLAHE, resize, tile."""

    colour: bool = False  # keep RGB (3 channels) instead of grey (thesis); grey files are replicated
    mask_background: bool = True
    # crop each image to a square around its object mask, with this share of the object's extent as margin on
    # each side (object-centric input for parts small in the frame); None keeps the whole frame
    crop_margin: float | None = None
    clahe: ClaheConfig = field(default_factory=ClaheConfig)
    size: list[int] | None = None  # [width, height] to resize to; None keeps the data's size (or see short_side)
    # with size None: one size for the data set, its training images' median aspect with this short side (px)
    short_side: int | None = None
    tile: TileConfig = field(default_factory=TileConfig)


@dataclass
class SegmentStageConfig:
    mean_mask: bool = False  # replace each mask by its view's mean over all batches (thesis 5.1.1)
    max_epochs: int | None = None  # caps the segmenter's own epochs (thesis: 100+); None: no cap


@dataclass
class PastedValidationConfig:
    """The validation signal (polydefect/evaluation/pasted_validation.py): held-out good images with pasted
    anomalies as positives; fixed before any data set was measured, never read off test labels."""

    enabled: bool = True
    threshold: list[float] = field(default_factory=lambda: [0.5, 0.8])  # Perlin thresholds: blob sizes drawn
    max_area: float = 0.05  # largest share of the object one pasted anomaly may cover (defects are small)
    # pasted shapes, taking turns over the images: blob (Perlin), spot, scratch (evaluation/paste_shapes.py)
    shapes: list[str] = field(default_factory=lambda: ["blob", "spot", "scratch"])
    seed: int = 9173  # the draw; not the run's seed, so no detector trains on these very pastes


@dataclass
class DetectStageConfig:
    min_foreground: float = 0.05  # training windows whose core is less object than this are skipped
    map_sigma: float = 0.0  # Gaussian smoothing of anomaly maps, px (after the map, before scoring)
    samples: int = 4  # test images drawn as input / reconstruction / map panels
    max_epochs: int | None = None  # caps the model's own epochs (thesis: 100); None: no cap
    validation: PastedValidationConfig = field(default_factory=PastedValidationConfig)


@dataclass
class ThresholdConfig:
    # max (thesis 4.3) | median (figure 5.3) | quantile of the good reference scores
    method: ThresholdMethod = ThresholdMethod.max
    quantile: float = 0.99  # for method=quantile
    # train (thesis 4.3) | val: the good validation images, which no detector has seen
    fit_on: ThresholdSplit = ThresholdSplit.train


@dataclass
class SpcConfig:
    sigma: float = 3.0  # control limit: reference mean + sigma * reference sd of nQI
    min_views: int = 1  # a batch is out of control when this many of its views are above their limit


@dataclass
class ScoringConfig:
    """From anomaly maps to image scores, thresholds and batch verdicts (thesis 4.3, 5.6.3, eq. 1.1)."""

    error: MapError = MapError.squared  # squared | absolute
    reduction: Reduction = Reduction.mean  # mean | max | topk_mean | peak_topk_mean | sum
    k: float = 0.01  # fraction of the object's pixels averaged by topk_mean and peak_topk_mean
    peak_baseline: float = PEAK_BASELINE  # peak_topk_mean: width of the local level, share of the map's long side
    # none | location: each map pixel as a standard score against the same pixel of the good validation images'
    # maps (polydefect/scoring/location.py), so places that are high on every good image do not decide the score
    normalise: Normalisation = Normalisation.none
    threshold: ThresholdConfig = field(default_factory=ThresholdConfig)
    spc: SpcConfig = field(default_factory=SpcConfig)


@dataclass
class TrainerConfig:
    """Lightning Trainer hardware and length settings shared by every trained stage."""

    accelerator: str = "cpu"
    devices: Any = 1
    strategy: str = "auto"
    precision: str = "32-true"
    max_steps: int = -1
    limit_train_batches: float = 1.0
    limit_val_batches: float = 1.0
    num_sanity_val_steps: int = 0
    log_every_n_steps: int = 10
    deterministic: bool = False
    enable_progress_bar: bool = True


@dataclass
class MlflowConfig:
    tracking_uri: str = "sqlite:///mlflow.db"  # relative to the directory the command was started in
    experiment_name: str = "polydefect"
    log_models: bool = True


@dataclass
class PathsConfig:
    output_dir: str = "${hydra:runtime.output_dir}"
    cache_dir: str = "${oc.env:XDG_CACHE_HOME,${oc.env:HOME}/.cache}/polydefect/stages"
    tables_dir: str = "experiments/tables"


@dataclass
class PolydefectConfig:
    data: DataConfig = field(default_factory=DataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    segment: SegmentStageConfig = field(default_factory=SegmentStageConfig)
    detect: DetectStageConfig = field(default_factory=DetectStageConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    augment: Any = None
    segmenter: Any = None
    model: Any = None
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    render: Any = None
    stages: list[str] = field(default_factory=lambda: ["data", "segment", "detect", "evaluate"])
    seed: int = 42
    reuse_freed_memory: bool = True  # glibc keeps freed blocks for reuse (allocator.py): 1.3x scoring, 1.13x training
    name: str = "default"  # experiment name: the MLflow run name and the tables' row key


def register_configs() -> None:
    """Make the schemas known to Hydra; called before composing."""
    store = ConfigStore.instance()
    store.store(name="base_config", node=PolydefectConfig)
