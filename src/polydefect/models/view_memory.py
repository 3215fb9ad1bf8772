"""Per-view feature memory: each fixed view's good images kept as patch-feature maps at their pixel positions, and a
test patch's distance to the nearest patch of the same view near the same place (a registered comparison)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polydefect.models.feature_memory import (
    check_aggregation,
    embed_patches,
    nearest_distances,
    row_distances,
    take_stored_shapes,
)

log = logging.getLogger(__name__)


def stable_hash(data: bytes) -> int:
    """A 64-bit signed hash that is the same in every process (Python's `hash` of a str is salted per process)."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little", signed=True)


def image_fingerprints(images: Tensor) -> Tensor:
    """(B, C, H, W) in [0, 1] -> (B,) int64 hash of each image's 8-bit pixels: the same image, the same number."""
    pixels = (images.detach().float().cpu() * 255).round().to(torch.uint8).numpy()
    return torch.tensor([stable_hash(p.tobytes()) for p in pixels], dtype=torch.int64)


def key_hashes(views: Sequence[str]) -> Tensor:
    """(B,) int64 hash of each view key, so the keys live in the state dict as numbers."""
    return torch.tensor([stable_hash(v.encode()) for v in views], dtype=torch.int64)


BAND_ROWS = 8  # map rows whose nearest patches' distances are taken at once


def windowed_nearest(queries: Tensor, references: Tensor, radius: int, allowed: Tensor) -> Tensor:
    """Distance of each query patch to the nearest reference patch within `radius` cells of its position.

    The nearest patch is found in float32 by expansion (|q|^2 - 2 q.r + |r|^2), and its distance then taken as
    float64 differences (`row_distances`): the expansion loses ~1e-4 to cancellation on distances of 30-40, and
    loses it differently in each runtime (an exported graph, `polydefect.export`).

    Args:
        queries: (B, D, h, w) patch features.
        references: (N, D, h, w) patch features of the same view's reference images.
        radius: largest shift searched, in cells, along each axis (a (2r + 1)^2 window).
        allowed: (B, N) bool, which references may serve each query.

    Returns:
        (B, h, w) Euclidean distances.
    """
    b, _, h, w = queries.shape
    padded = F.pad(references, (radius, radius, radius, radius))
    inside = F.pad(torch.ones(h, w, dtype=torch.bool, device=queries.device), (radius, radius, radius, radius))
    query_norms = queries.pow(2).sum(1)[:, None]  # (B, 1, h, w)
    barred = ~allowed[:, :, None, None]
    best = torch.full((b, h, w), torch.inf, device=queries.device)
    best_reference = torch.zeros((b, h, w), dtype=torch.int64, device=queries.device)
    best_shift = torch.zeros((b, h, w), dtype=torch.int64, device=queries.device)
    side = 2 * radius + 1
    for dy in range(side):
        for dx in range(side):
            shifted = padded[:, :, dy : dy + h, dx : dx + w]
            squared = query_norms + shifted.pow(2).sum(1)[None] - 2 * torch.einsum("bdhw,ndhw->bnhw", queries, shifted)
            squared = squared.masked_fill(barred | ~inside[dy : dy + h, dx : dx + w], torch.inf)
            nearest = squared.min(1)
            closer = nearest.values < best
            best = torch.where(closer, nearest.values, best)
            best_reference = torch.where(closer, nearest.indices, best_reference)
            best_shift = torch.where(closer, dy * side + dx, best_shift)
    rows = torch.arange(h, device=queries.device)[:, None] + torch.div(best_shift, side, rounding_mode="floor")
    columns = torch.arange(w, device=queries.device) + best_shift % side
    cells, query_cells = padded.permute(0, 2, 3, 1), queries.permute(0, 2, 3, 1)  # (N | B, h, w, D)
    bands = []  # a band of map rows at a time: the matched features, in float64, are twice the queries' size
    for top in range(0, h, BAND_ROWS):
        band = slice(top, top + BAND_ROWS)
        matches = cells[best_reference[:, band], rows[:, band], columns[:, band]]  # (B, band, w, D)
        bands.append(row_distances(query_cells[:, band], matches))
    return torch.where(best.isinf(), best, torch.cat(bands, 1).to(torch.float32))  # no reference: inf, as before


class ViewFeatureMemory(nn.Module):
    """The patch features of every view's good images, and each test patch's distance to that view's patches.

    The views are fixed up to the hand placement of the parts, so a patch is compared with the reference patches
    within `radius` cells of its own position (None: with every patch of the view, a per-view PatchCore). A
    reference never serves another view, nor the image it was made from (unless it is its view's only one): a
    training image is scored as a new good image of its view would be, so thresholds and SPC limits fitted on
    training scores hold for new images.
    The references are buffers (features, view-key hashes, image hashes), saved with the state dict.

    Args:
        backbone: frozen module mapping (B, C, H, W) in [0, 1] to a list of feature maps.
        aggregation: side of the local averaging of each feature map, cells (odd; 1 turns it off).
        radius: search window around a patch's position, cells along each axis; None searches the whole view.
    """

    def __init__(self, backbone: nn.Module, aggregation: int = 3, radius: int | None = 1) -> None:
        super().__init__()
        check_aggregation(aggregation)
        if radius is not None and radius < 0:
            raise ValueError(f"model.net.radius must be >= 0 or null, got {radius}")
        self.backbone, self.aggregation, self.radius = backbone, aggregation, radius
        self.register_buffer("features", torch.empty(0, sum(backbone.channels), 0, 0))
        self.register_buffer("view_hashes", torch.empty(0, dtype=torch.int64))
        self.register_buffer("image_hashes", torch.empty(0, dtype=torch.int64))

    def embed(self, images: Tensor) -> Tensor:
        """(B, C, H, W) in [0, 1] -> (B, D, h, w) patch features at the finest requested stride."""
        return embed_patches(self.backbone, images, self.aggregation)

    def remember(self, features: Tensor, views: Sequence[str], fingerprints: Tensor) -> None:
        """Make the (N, D, h, w) features of good images, with their view keys and image hashes, the references."""
        if not len(features) == len(views) == len(fingerprints):
            raise ValueError(f"{len(features)} feature maps, {len(views)} view keys, {len(fingerprints)} hashes")
        device = self.features.device
        self.features = features.detach().to(device, torch.float32).contiguous()
        self.view_hashes = key_hashes(views).to(device)
        self.image_hashes = fingerprints.to(device, torch.int64)

    def forward(self, images: Tensor, views: Sequence[str]) -> Tensor:
        """(B, C, H, W) in [0, 1] and their view keys -> (B, 1, h, w) distance of every patch to its view's."""
        if len(views) != len(images):
            raise ValueError(f"{len(images)} images but {len(views)} view keys")
        features = self.embed(images)
        fingerprints = image_fingerprints(images).to(self.image_hashes.device)
        wanted = key_hashes(views).to(self.view_hashes.device)
        distances = torch.empty(features.shape[0], *features.shape[-2:], device=features.device)
        for view in dict.fromkeys(views):
            rows = [i for i, v in enumerate(views) if v == view]
            if not (self.view_hashes == wanted[rows[0]]).any():
                raise RuntimeError(
                    f"no reference image of view {view!r}: the memory compares an image only with good training "
                    "images of its own view and domain (renders are other cameras), so train it on good images of "
                    "every view it scores (data=real or data=mixed, not data=synthetic, for real test batches), "
                    "all of them (trainer.limit_train_batches=1.0)"
                )
            allowed = self.references_allowed(wanted[rows], fingerprints[rows])
            if (self.image_hashes[None] == fingerprints[rows, None])[allowed].any():
                log.warning("view %r: an image is its view's only reference and is scored against itself", view)
            distances[rows] = self._distances(features[rows], allowed.to(features.device))
        return distances[:, None]

    def references_allowed(self, wanted: Tensor, fingerprints: Tensor) -> Tensor:
        """(B,) view-key hashes and (B,) image hashes -> (B, N) bool: the references of each image's view, less the
        image itself, unless it is its view's only reference (better a zero map than no score)."""
        same_view = self.view_hashes[None] == wanted[:, None]
        allowed = same_view & (self.image_hashes[None] != fingerprints[:, None])
        return allowed | (same_view & ~allowed.any(1, keepdim=True))  # logical ops: no bool Where in ONNX Runtime

    def hashed_forward(self, images: Tensor, wanted: Tensor, fingerprints: Tensor) -> Tensor:
        """`forward` with the view keys and the images' pixels given as hashes (a traced graph has no strings):
        every reference is searched at once, the other views' barred. The caller checks the views are known."""
        if self.radius is None:
            raise ValueError("a view memory with model.net.radius=null searches per image and cannot be exported")
        features = self.embed(images)
        return windowed_nearest(features, self.features, self.radius, self.references_allowed(wanted, fingerprints))[
            :, None
        ]

    def _distances(self, queries: Tensor, allowed: Tensor) -> Tensor:
        """(B, D, h, w) queries of one view and the (B, N) references each may use -> (B, h, w) distances."""
        used = allowed.any(0)
        references, allowed = self.features[used], allowed[:, used]
        if self.radius is not None:
            return windowed_nearest(queries, references, self.radius, allowed)
        d = queries.shape[1]
        cells = references.permute(0, 2, 3, 1)  # (N, h, w, D)
        return torch.stack(
            [
                nearest_distances(query.permute(1, 2, 0).reshape(-1, d), cells[row].reshape(-1, d)).reshape(
                    query.shape[-2:]
                )
                for query, row in zip(queries, allowed, strict=True)
            ]
        )

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        take_stored_shapes(self, state_dict, prefix, ["features", "view_hashes", "image_hashes"])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
