"""Training a feature-memory detector: one pass collecting patch features of good images, then a coreset bank."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from polydefect.models.coreset import CoresetBuilder
from polydefect.models.feature_memory import PatchFeatureMemory, patch_rows
from polydefect.tasks.base import DetectorTask
from polydefect.tasks.patch_maps import PatchMapTask
from polydefect.tasks.validation_images import KeepsValidationImages

QUARTER_TURNS = (0, 90, 180, 270)  # the turns `model.rotations` may list: exact on the pixel grid (no resampling)


def check_rotations(rotations: list[int] | tuple[int, ...]) -> tuple[int, ...]:
    """`model.rotations` lists distinct quarter turns in degrees, 0 (the image as it is) among them."""
    turns = tuple(int(angle) for angle in rotations)
    if 0 not in turns or len(set(turns)) != len(turns) or not set(turns) <= set(QUARTER_TURNS):
        raise ValueError(
            f"model.rotations must list distinct angles of {list(QUARTER_TURNS)}, 0 among them; got {list(rotations)}"
        )
    return turns


def check_score_rotations(score_rotations: list[int] | tuple[int, ...], rotations: tuple[int, ...]) -> tuple[int, ...]:
    """`model.score_rotations` lists distinct quarter turns that the memory knows (`model.rotations`): an image
    scored turned by an angle the memory never saw would light up everywhere."""
    turns = tuple(int(angle) for angle in score_rotations)
    if not turns or len(set(turns)) != len(turns) or not set(turns) <= set(rotations):
        raise ValueError(
            f"model.score_rotations must list distinct angles of model.rotations {list(rotations)}; "
            f"got {list(score_rotations)}"
        )
    return turns


def turned_copies(images: Tensor, rotations: tuple[int, ...]) -> list[Tensor]:
    """(B, C, H, W) -> one copy of the batch per angle (degrees, counter-clockwise), the batch itself for 0."""
    return [turned(images, angle) for angle in rotations]


def turned(images: Tensor, angle: int) -> Tensor:
    """(..., H, W) turned counter-clockwise by a quarter-turn angle in degrees (negative: clockwise); itself for 0."""
    return torch.rot90(images, angle // 90, dims=(-2, -1)) if angle % 360 else images


class OnePassTask(DetectorTask):
    """A detector on a frozen backbone: no optimizer, one epoch whose training steps collect the good images'
    features, then an explicit `fit()` that builds the memory from them."""

    def on_train_epoch_end(self) -> None:
        # A second pass would only repeat the same features (the backbone is frozen).
        self.trainer.should_stop = True

    def configure_optimizers(self) -> None:
        return None


class MemoryBankTask(KeepsValidationImages, PatchMapTask, OnePassTask):
    """PatchCore-style detector: no optimizer, one epoch of feature collection, then an explicit `fit()`.

    Images of any size are resized to a square `input_size` inside the task, or with `keep_aspect` to a short
    side of `input_size` (long narrow images keep their detail), and the maps are resized back, so callers see
    their own H, W.

    Maps are feature distances in units of `map_unit`: the mean of the good validation images' map maxima, set by
    `fit()` where the fit saw validation images (1 otherwise, raw distances). A map of 1 at its peak is then as
    anomalous as a typical good image gets at its worst point, whatever the backbone or the input size, and the
    values stay small enough for float32 to carry the same absolute precision in every runtime.

    Args:
        net: the feature memory (backbone, aggregation, k) whose bank `fit()` fills.
        input_size: side of the square the backbone sees, px (its short side with `keep_aspect`); None keeps
            each batch's size.
        keep_aspect: keep the image's aspect ratio instead of squashing it to a square.
        bank_ratio: fraction of the collected patch features kept by the greedy coreset, in (0, 1].
        rotations: quarter turns (degrees) of every good image whose features join the memory: a part that can lie
            at any angle is then known at angles the training images did not show; [0] keeps the images as they are.
        score_rotations: quarter turns (among `rotations`) at which every scored image is seen; its map is the
            mean of their maps, turned back. The backbone answers a surface differently at each angle: on a good
            one the answers disagree and average down, a defect stands out at every angle. [0] scores once.
        sigma: Gaussian smoothing std of the map at `input_size` resolution, px; 0 turns it off.
        projection_dim: random-projection dimensions used by the coreset selection.
        chunk_size: most features reduced together by the coreset selection (cost grows with it).
        seed: fixes the coreset selection.
        max_epochs: this stage's epoch budget; one pass is all the bank needs.
    """

    def __init__(
        self,
        net: PatchFeatureMemory,
        input_size: int | None = 160,
        keep_aspect: bool = False,
        bank_ratio: float = 0.1,
        rotations: list[int] | tuple[int, ...] = (0,),
        score_rotations: list[int] | tuple[int, ...] = (0,),
        sigma: float = 4.0,
        projection_dim: int = 128,
        chunk_size: int = 10_000,
        seed: int = 0,
        max_epochs: int = 1,
    ) -> None:
        super().__init__()
        if not 0.0 < bank_ratio <= 1.0:
            raise ValueError(f"model.bank_ratio must be in (0, 1], got {bank_ratio}")
        if input_size is not None and input_size < 32:
            raise ValueError(f"model.input_size must be >= 32 px or null, got {input_size}")
        self.rotations = check_rotations(rotations)
        self.score_rotations = check_score_rotations(score_rotations, self.rotations)
        self.save_hyperparameters(ignore=["net"], logger=False)
        self.net = net
        self.coreset: CoresetBuilder | None = None  # the features collected for `fit()`, from the first collect()
        self.register_buffer("map_unit", torch.ones(()))
        self.validation_images = []

    def start_collection(self) -> None:
        """Forget the features collected so far: a new pass over the training images begins."""
        if self.coreset is not None:
            self.coreset.close()
        self.coreset = None

    @torch.no_grad()
    def collect(self, images: Tensor) -> int:
        """Store the patch features of good images (B, C, H, W), and of their turned copies (`rotations`), for
        `fit()`; returns how many were collected so far. They go to the coreset in float32 whatever the training
        precision: it keeps them and their projection on disk until `fit()`."""
        if self.coreset is None:
            settings = self.hparams
            self.coreset = CoresetBuilder(
                settings.bank_ratio, settings.projection_dim, settings.chunk_size, settings.seed
            )
        for copy in turned_copies(images, self.rotations):
            features = self.embed_input(copy)
            seen = self.coreset.add(patch_rows(features))
        return seen

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self.log("train/features", float(self.collect(batch["image"])), on_step=True, batch_size=1)

    def fit(self) -> None:
        """Fill the memory from the collected features, then set `map_unit` on the good validation images."""
        self.remember_collected()
        self.map_unit.fill_(1.0)
        peaks = [self.anomaly_map(images).flatten(1).amax(1) for images in self.validation_images]
        self.validation_images = []
        if peaks and (unit := float(torch.cat(peaks).mean())) > 0:
            self.map_unit.fill_(unit)

    def remember_collected(self) -> None:
        """Build the bank from the coreset of the collected features, then drop them."""
        if self.coreset is None:
            raise RuntimeError("MemoryBankTask.fit(): no features collected; run trainer.fit on good images first")
        self.net.remember(self.coreset.finish())
        self.coreset = None

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        """Weights saved before maps had a unit load with unit 1: their runs' maps were the raw distances."""
        state_dict.setdefault(prefix + "map_unit", torch.ones(()))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.inference_mode()
    def anomaly_map(self, images: Tensor, views: Sequence[str] | None = None) -> Tensor:
        """(B, C, H, W) in [0, 1] -> (B, 1, H, W) float32 map: the mean over `score_rotations` of the map of the
        turned images, turned back (views unused: one memory serves every view)."""
        scored_once = super().anomaly_map
        maps = [turned(scored_once(turned(images, angle)), -angle) for angle in self.score_rotations]
        return maps[0] if len(maps) == 1 else torch.stack(maps).mean(0)

    def patch_map(self, features: Tensor) -> Tensor:
        """(B, D, h, w) features -> (B, 1, h, w) distance of each patch to the bank in `map_unit`s: higher = more
        anomalous."""
        return self.net.score(features) / self.map_unit
