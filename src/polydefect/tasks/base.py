"""The interface every detector implements, so the detect stage, the ensemble and inspect treat them alike.

A detector is a LightningModule trained on good images by `fit_task` (`polydefect.tasks.fitting`), then
`fit()` once in plain sight (memory banks build their coreset there), then `anomaly_map` per batch.

Maps take each image's view key (`Sample.view_key`, "real/p03_c1") beside the images: a detector that compares
an image with the same view of the good batches (`needs_views`) needs it; every other detector ignores it.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import lightning as L
from hydra.utils import instantiate
from safetensors.torch import load_file, save_file
from torch import Tensor

log = logging.getLogger(__name__)


@runtime_checkable
class Detector(Protocol):
    """What the pipeline needs of a detector besides the LightningModule hooks it trains with."""

    checkpoint_monitor: str | None  # the logged metric whose lowest epoch is kept; None keeps the last epoch
    # True: trains on whole good images whose batches carry their view keys ("view"), not on windows, and its
    # maps need the keys; such a detector also has `hashed_map(images, view_hashes, image_hashes)`, its map with
    # the keys and the images' pixels as 64-bit hashes, which an exported graph computes (polydefect.export)
    needs_views: bool

    def fit(self) -> None:
        """Finish the detector after the Lightning fit (build a bank, standardise members); may do nothing."""
        ...

    def anomaly_map(self, images: Tensor, views: Sequence[str] | None = None) -> Tensor:
        """(B, C, H, W) in [0, 1] and the images' view keys -> (B, 1, H, W) float32 map at the images' size:
        higher = more anomalous."""
        ...

    def map_and_reconstruction(self, images: Tensor, views: Sequence[str] | None = None) -> tuple[Tensor, Tensor]:
        """The map and what the detector made of the images (for figure panels), from one pass."""
        ...

    def save_weights(self, path: str | Path) -> None:
        """Write the state as safetensors (no pickled code)."""
        ...

    def load_weights(self, path: str | Path) -> Detector:
        """Read weights written by `save_weights` into a detector built from the same config."""
        ...


class DetectorTask(L.LightningModule, ABC):
    """The `Detector` defaults: nothing to build after training, no reconstruction, safetensors state."""

    checkpoint_monitor: str | None = None
    needs_views: bool = False

    def fit(self) -> None:
        """Trained detectors are complete when the Lightning fit ends."""

    @abstractmethod
    def anomaly_map(self, images: Tensor, views: Sequence[str] | None = None) -> Tensor:
        """(B, C, H, W) in [0, 1] and the images' view keys -> (B, 1, H, W) float32 map at the images' size:
        higher = more anomalous."""

    def map_and_reconstruction(self, images: Tensor, views: Sequence[str] | None = None) -> tuple[Tensor, Tensor]:
        """Detectors that do not reconstruct show the images themselves beside their maps."""
        return self.anomaly_map(images, views), images

    def save_weights(self, path: str | Path) -> None:
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(path))

    def load_weights(self, path: str | Path) -> DetectorTask:
        self.load_state_dict(load_file(str(path)))
        return self


def build_detector(model: Any) -> DetectorTask:
    """Instantiate the `model` config node (conf/model/*.yaml) and check it implements `Detector`."""
    log.info("Instantiating <%s>", model._target_)
    task = instantiate(model, _convert_="all")
    if not isinstance(task, L.LightningModule) or not isinstance(task, Detector):
        raise TypeError(f"model._target_: {type(task).__name__} is not a LightningModule implementing Detector")
    return task


def load_detector(model: Any, weights: str | Path) -> DetectorTask:
    """A detector rebuilt from its config and saved weights, ready to score."""
    detector = build_detector(model)
    detector.load_weights(weights)
    return detector.eval()
