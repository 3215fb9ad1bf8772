"""The U-Net behind the `Segmenter` interface: training from images and masks, batched inference, post-processing."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import lightning as L
import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, Dataset

from polydefect.data.preprocess import resize, to_grey_uint8
from polydefect.segmentation.postprocess import postprocess
from polydefect.tasks.fitting import fit_task
from polydefect.tasks.segmentation import SegmentationTask


class _ArrayDataset(Dataset):
    """Images and masks already resized to the model input, kept as uint8 (4x less memory than float)."""

    def __init__(self, images: np.ndarray, masks: np.ndarray) -> None:
        self.images, self.masks = images, masks  # (N, S, S) uint8, (N, S, S) bool

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image = torch.from_numpy(self.images[index]).float().div_(255).unsqueeze(0)  # (1, S, S)
        mask = torch.from_numpy(self.masks[index]).float().unsqueeze(0)
        return {"image": image, "mask": mask}


class UNetSegmenter:
    """Masks from a U-Net at `image_size` x `image_size`, post-processed back to each image's size (thesis 3.7).

    The constructor takes the keys of conf/segmenter/unet.yaml; call `fit` (or `fit_datamodule`) to train,
    or `load` to reuse trained weights.

    Args:
        net: the network, e.g. `polydefect.models.unet.UNet`; it returns logits.
        optimizer: a partial optimizer (Hydra `_partial_: true`).
        image_size: side of the square model input; images are resized to it whatever their aspect (thesis: 512).
        batch_size: images per training and inference batch (thesis: 16).
        max_epochs: training length limit (thesis: 100-400).
        patience: early-stopping patience on the validation loss (thesis: 9-50).
        dice_weight: weight of a Dice term added to the BCE loss (thesis: 0).
        val_fraction: share of the training images held out when no validation images are given (thesis: 0.1).
        threshold: object probability threshold (thesis: 0.5).
        closing_kernel: cross kernel side of the closing (thesis: 5).
        closing_iterations: closing iterations (thesis: 3).
        seed: seed of the validation split and the batch order.
        device: inference device; None picks CUDA when available.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer],
        image_size: int = 128,
        batch_size: int = 16,
        max_epochs: int = 100,
        patience: int = 9,
        dice_weight: float = 0.0,
        val_fraction: float = 0.1,
        threshold: float = 0.5,
        closing_kernel: int = 5,
        closing_iterations: int = 3,
        seed: int = 0,
        device: str | None = None,
    ) -> None:
        self.net, self.optimizer = net, optimizer
        self.image_size, self.batch_size = int(image_size), int(batch_size)
        self.max_epochs, self.patience, self.dice_weight = int(max_epochs), int(patience), float(dice_weight)
        self.val_fraction, self.threshold, self.seed = float(val_fraction), float(threshold), int(seed)
        self.closing_kernel, self.closing_iterations = int(closing_kernel), int(closing_iterations)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))

    def _model_input(self, image: np.ndarray) -> np.ndarray:
        """Any image -> (S, S) uint8 grey, as the net sees it."""
        size = (self.image_size, self.image_size)
        return resize(to_grey_uint8(image), size)

    def _arrays(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> _ArrayDataset:
        if len(images) != len(masks):
            raise ValueError(f"{len(images)} images but {len(masks)} masks")
        size = (self.image_size, self.image_size)
        return _ArrayDataset(
            np.stack([self._model_input(image) for image in images]),
            np.stack([resize(mask.astype(bool), size, is_mask=True) for mask in masks]),
        )

    def fit(
        self,
        train_images: Sequence[np.ndarray],
        train_masks: Sequence[np.ndarray],
        val_images: Sequence[np.ndarray] | None = None,
        val_masks: Sequence[np.ndarray] | None = None,
        workdir: str | Path = "segmenter",
        trainer_kwargs: Mapping[str, Any] | None = None,
    ) -> UNetSegmenter:
        """Train on grey images and bool object masks (any sizes); keep the best weights by validation loss.

        Args:
            train_images: (H, W) uint8/uint16 grey or (H, W, 3) BGR images.
            train_masks: (H, W) bool object masks, one per image.
            val_images: validation images; None holds out `val_fraction` of the training images.
            val_masks: their masks.
            workdir: checkpoints go to `workdir/checkpoints`; a `last.ckpt` there is resumed from.
            trainer_kwargs: extra `lightning.Trainer` arguments (accelerator, logger, max_epochs, ...);
                None values are ignored.
        """
        if not len(train_images):
            raise ValueError("segmenter.fit: no training images")
        train = self._arrays(train_images, train_masks)
        if val_images is not None and len(val_images):
            val = self._arrays(val_images, val_masks if val_masks is not None else [])
        else:
            order = np.random.default_rng(self.seed).permutation(len(train))
            held = order[: round(self.val_fraction * len(train))]
            if len(held) and len(held) < len(train):
                kept = order[len(held) :]
                val = _ArrayDataset(train.images[held], train.masks[held])
                train = _ArrayDataset(train.images[kept], train.masks[kept])
            else:
                val = train  # too few images to hold any out
        generator = torch.Generator().manual_seed(self.seed)
        train_loader = DataLoader(train, batch_size=self.batch_size, shuffle=True, generator=generator)
        val_loader = DataLoader(val, batch_size=self.batch_size)
        return self._train(train_loader, val_loader, workdir, trainer_kwargs)

    def fit_datamodule(
        self, datamodule: L.LightningDataModule, workdir: str | Path, trainer_kwargs: Mapping[str, Any] | None = None
    ) -> UNetSegmenter:
        """Train from a datamodule yielding {"image", "mask"} batches at `image_size` (SegmentationDataModule)."""
        return self._train(datamodule, None, workdir, trainer_kwargs)

    def _train(
        self,
        train: DataLoader | L.LightningDataModule,
        val: DataLoader | None,
        workdir: str | Path,
        trainer_kwargs: Mapping[str, Any] | None,
    ) -> UNetSegmenter:
        settings: dict[str, Any] = {
            "max_epochs": self.max_epochs,
            "default_root_dir": str(workdir),
            "logger": False,
            "enable_model_summary": False,
            "num_sanity_val_steps": 0,
        }
        settings.update({k: v for k, v in (trainer_kwargs or {}).items() if v is not None})
        task = SegmentationTask(self.net, self.optimizer, self.dice_weight, self.threshold, self.patience)
        if isinstance(train, L.LightningDataModule):
            fit_task(task, settings, workdir, task.checkpoint_monitor, datamodule=train)
        else:
            fit_task(task, settings, workdir, task.checkpoint_monitor, train_dataloaders=train, val_dataloaders=val)
        self.net.cpu()
        return self

    @torch.inference_mode()
    def probabilities(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Object probabilities at the model's resolution: a (S, S) float32 map per image."""
        self.net.to(self.device).eval()
        maps: list[np.ndarray] = []
        for start in range(0, len(images), self.batch_size):
            chunk = np.stack([self._model_input(image) for image in images[start : start + self.batch_size]])
            batch = torch.from_numpy(chunk).to(self.device).float().div_(255).unsqueeze(1)  # (B, 1, S, S)
            maps.extend(torch.sigmoid(self.net(batch).float())[:, 0].cpu().numpy())
        return maps

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """(H, W) bool masks at each image's own size: threshold, closing, resize back (listing 3.7)."""
        return [
            postprocess(p, image.shape[:2], self.threshold, self.closing_kernel, self.closing_iterations)
            for p, image in zip(self.probabilities(images), images, strict=True)
        ]

    def predict(self, image: np.ndarray) -> np.ndarray:
        """(H, W) bool object mask of one image."""
        return self.predict_batch([image])[0]

    def score_batch(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """(H, W) float32 object probabilities at each image's own size (linear resize), for ROC curves."""
        return [
            cv2.resize(p, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
            for p, image in zip(self.probabilities(images), images, strict=True)
        ]

    def save(self, path: str | Path) -> None:
        """Write the net's weights as safetensors."""
        save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, str(path))

    def load(self, path: str | Path) -> UNetSegmenter:
        """Read weights written by `save` into the net (built from the same config)."""
        self.net.load_state_dict(load_file(str(path)))
        return self
