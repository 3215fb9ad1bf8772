"""What the detectors on frozen backbone features share: a map made per patch of one embedding, then upsampled and
smoothed, so an ensemble can compute an embedding once for every member that uses it, and upsample the members'
combined patch maps once."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Hashable, Sequence
from typing import Any

import torch
from torch import Tensor

from polydefect.scoring.maps import patch_map_to_image
from polydefect.tasks.base import DetectorTask
from polydefect.tasks.inputs import input_shape, resize_input


class PatchMapTask(DetectorTask):
    """A detector whose map is `image_map(patch_map(embed_input(images)))`.

    The subclass has `net.embed` (images at the network's input -> (B, D, h, w) features), `net.backbone`,
    `net.aggregation` and the hparams `input_size`, `keep_aspect` and `sigma`, and defines `patch_map`. Two
    members with equal `embedding_key` compute equal features for the same images (a frozen backbone of the same
    name and stages, the same aggregation and input shape); two with equal `image_map_key` upsample alike, and
    `image_map` is linear and keeps constants, so the upsampled mean of their patch maps is the mean of their maps.
    """

    net: Any
    hparams: Any

    @abstractmethod
    def patch_map(self, features: Tensor) -> Tensor:
        """(B, D, h, w) features from `embed_input` -> (B, 1, h, w) per-patch map: higher = more anomalous."""

    def network_shape(self, size: Sequence[int]) -> tuple[int, int]:
        """(H, W) the network sees for images of `size` (H, W)."""
        return input_shape(int(size[0]), int(size[1]), self.hparams.input_size, self.hparams.keep_aspect)

    def embedding_key(self, size: Sequence[int]) -> Hashable:
        """Equal for members whose `embed_input` gives equal features on images of `size`; a backbone without a
        `signature` shares with none."""
        backbone = self.net.backbone
        return getattr(backbone, "signature", id(backbone)), self.net.aggregation, self.network_shape(size)

    def embed_input(self, images: Tensor) -> Tensor:
        """(B, C, H, W) images -> (B, D, h, w) patch features at the network's input size (`input_size`,
        `keep_aspect`)."""
        resized = resize_input(images.to(self.device, torch.float32), self.hparams.input_size, self.hparams.keep_aspect)
        return self.net.embed(resized)

    def image_map_key(self, size: Sequence[int]) -> Hashable:
        """Equal for members whose `image_map` upsamples alike for images of `size`."""
        return self.network_shape(size), float(self.hparams.sigma)

    def image_map(self, patch_map: Tensor, size: Sequence[int]) -> Tensor:
        """(B, 1, h, w) patch map -> (B, 1, *size) float32: upsampled to the network's input, smoothed there with
        `sigma`, resized to the images' size."""
        return patch_map_to_image(patch_map, self.network_shape(size), self.hparams.sigma, tuple(size))

    @torch.inference_mode()
    def anomaly_map(self, images: Tensor, views: Sequence[str] | None = None) -> Tensor:
        """(B, C, H, W) in [0, 1], C = 1 or 3 -> (B, 1, H, W) float32 map (views unused: one model serves every
        view)."""
        return self.image_map(self.patch_map(self.embed_input(images)), images.shape[-2:])
