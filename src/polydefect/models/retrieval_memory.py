"""Pose-conditioned feature memory: compare a test image only with the good training images that look most like it.

A part seen in many poses makes one shared bank of patches a poor reference: a stud seen edge-on in one pose is
normal, yet far from every stud of the poses it was not seen in. Here every good training image keeps its own
patch features and a global descriptor (its patch features averaged over a coarse grid of cells, so the layout
of the part in the frame counts, unit length); a test image retrieves the
`neighbours` training images whose descriptors are most similar (cosine) and each of its patches is scored by
its distance to the nearest patches of those images only. A training image never retrieves itself, so training
scores stay honest references for the thresholds.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polydefect.models.feature_memory import (
    check_aggregation,
    chosen_distances,
    embed_patches,
    take_stored_shapes,
)

SELF_SIMILARITY = 1 - 1e-5  # descriptors this similar are the same image: never its own reference
GRID = 4  # the descriptor averages the patch features over GRID x GRID cells: a mean over the whole frame
# would be the same for a part and its mirror or turn


class RetrievalFeatureMemory(nn.Module):
    """Per-image patch features of the good training images, searched only within the most similar images.

    Args:
        backbone: frozen module mapping (B, C, H, W) in [0, 1] to a list of feature maps.
        aggregation: side of the local averaging neighbourhood in feature-map cells (odd).
        k: nearest patches averaged for a patch's distance.
        neighbours: training images retrieved per test image.
    """

    def __init__(self, backbone: nn.Module, aggregation: int = 3, k: int = 1, neighbours: int = 5) -> None:
        super().__init__()
        check_aggregation(aggregation)
        if k < 1 or neighbours < 1:
            raise ValueError(f"model.net.k and model.net.neighbours must be >= 1, got {k} and {neighbours}")
        self.backbone, self.aggregation, self.k, self.neighbours = backbone, aggregation, k, neighbours
        dims = sum(backbone.channels)
        self.register_buffer("patches", torch.empty(0, 0, dims, dtype=torch.float16))  # (N, h*w, D)
        self.register_buffer("descriptors", torch.empty(0, dims * GRID * GRID))  # (N, D * GRID^2), unit length

    def embed(self, images: Tensor) -> Tensor:
        """(B, C, H, W) in [0, 1] -> (B, D, h, w) patch features at the finest requested stride."""
        return embed_patches(self.backbone, images, self.aggregation)

    @staticmethod
    def describe(features: Tensor) -> Tensor:
        """(B, D, h, w) patch features -> (B, D * GRID^2) unit-length global descriptors."""
        return F.normalize(F.adaptive_avg_pool2d(features.float(), GRID).flatten(1), dim=1)

    def remember(self, features: Tensor) -> None:
        """Keep the patch features (N, D, h, w) of N good images and their descriptors."""
        n, d = features.shape[:2]
        self.descriptors = self.describe(features).to(self.descriptors.device)
        self.patches = features.reshape(n, d, -1).transpose(1, 2).to(self.patches.device, torch.float16).contiguous()

    def retrieve(self, descriptors: Tensor) -> Tensor:
        """(B, D * GRID^2) query descriptors -> (B, neighbours) indices of the most similar training images, the query's
        own image (a training image scored again) left out."""
        if len(self.descriptors) == 0:
            raise RuntimeError("the retrieval memory is empty: call the task's fit() after training")
        similarity = descriptors.float() @ self.descriptors.T.to(descriptors.device)  # (B, N)
        similarity = similarity.masked_fill(similarity >= SELF_SIMILARITY, -2.0)
        return similarity.topk(min(self.neighbours, similarity.shape[1]), dim=1).indices

    def score(self, features: Tensor) -> Tensor:
        """(B, D, h, w) patch features (`embed`) -> (B, 1, h, w) distance of every patch to its nearest patches
        among the retrieved training images."""
        b, d, h, w = features.shape
        chosen = self.retrieve(self.describe(features))
        queries = features.reshape(b, d, -1).transpose(1, 2).float()  # (B, h*w, D)
        if torch.compiler.is_exporting():  # a traced graph (polydefect.export): the whole batch at once
            references = self.patches[chosen].reshape(b, -1, d).float()  # (B, n*P, D)
            nearest = torch.cdist(queries, references).topk(min(self.k, references.shape[1]), dim=2, largest=False)
            # each image's rows numbered within the batch's, so one flat search of the batch's rows measures them
            rows = nearest.indices + torch.arange(b, device=queries.device)[:, None, None] * references.shape[1]
            flat = chosen_distances(queries.reshape(-1, d), references.reshape(-1, d), rows.reshape(b * h * w, -1))
            return flat.reshape(b, 1, h, w)
        maps = []
        for query, indices in zip(queries, chosen, strict=True):
            reference = self.patches[indices.to(self.patches.device)].reshape(-1, d).to(query)  # (n*P, D)
            # cdist chooses (float32, by expansion); the chosen rows' distances are then taken exactly
            nearest = torch.cdist(query, reference).topk(min(self.k, reference.shape[0]), dim=1, largest=False)
            maps.append(chosen_distances(query, reference, nearest.indices).reshape(1, h, w))
        return torch.stack(maps)

    def forward(self, images: Tensor) -> Tensor:
        """(B, C, H, W) in [0, 1] -> (B, 1, h, w) distance of every patch to its nearest patches among the
        retrieved training images."""
        return self.score(self.embed(images))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        take_stored_shapes(self, state_dict, prefix, ["patches", "descriptors"])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
