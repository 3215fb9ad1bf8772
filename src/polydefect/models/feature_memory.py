"""PatchCore-style feature memory: locally aggregated multi-layer patch features and nearest-neighbour distances."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import faiss
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _float32_array(rows: Tensor) -> np.ndarray:
    """(N, D) rows as the contiguous float32 array faiss takes, from any device and float type (bf16 under
    autocast has no numpy type)."""
    return np.ascontiguousarray(rows.detach().float().cpu().numpy())


SEARCHES = ("exact", "hnsw", "ivf")
SEARCH_ROWS = 4096  # bank rows an exact search compares at once
SEARCH_QUERIES = 2048  # queries an exact search compares at once: its score matrix stays 2048 x 4096 (32 MB)


def check_search(search: str) -> None:
    """`model.net.search` names a search: "exact" (`nearest_rows`), "hnsw" (`hnsw_index`) or "ivf" (`ivf_index`)."""
    if search not in SEARCHES:
        raise ValueError(f"model.net.search must be one of {list(SEARCHES)}, got {search!r}")


def check_bank(bank: Tensor) -> None:
    """A search needs a bank: an empty one means the detector was never fitted."""
    if bank.shape[0] == 0:
        raise RuntimeError("the memory bank is empty: call the task's fit() after training")


def hnsw_index(bank: Tensor, links: int = 32, breadth: int = 64) -> faiss.Index:
    """An approximate faiss index over the rows of bank (M, D): a graph of `links` links per row searched with
    `breadth` candidates (benchmarks/README.md has its recall and speed)."""
    check_bank(bank)
    index = faiss.IndexHNSWFlat(bank.shape[1], links)
    index.hnsw.efSearch = breadth
    index.add(_float32_array(bank))
    return index


def ivf_index(bank: Tensor, lists: int | None = None, probes: int = 8) -> faiss.Index:
    """An approximate faiss index over the rows of bank (M, D): the rows grouped by k-means into `lists` cells
    (None: 4 sqrt(M), at most one per 39 rows, the fewest faiss' k-means trains on), each query compared with the
    rows of its `probes` nearest cells only. Patch features cluster tightly, so a few cells hold a query's nearest
    row (benchmarks/README.md has its recall and speed)."""
    check_bank(bank)
    rows = bank.shape[0]
    cells = lists if lists is not None else max(1, min(round(4 * rows**0.5), rows // 39))
    if not 1 <= cells <= rows:
        raise ValueError(f"model.net.ivf_lists must be in 1..{rows} (the bank's rows), got {cells}")
    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(bank.shape[1]), bank.shape[1], cells)
    features = _float32_array(bank)
    index.train(features)  # faiss' k-means starts from a fixed seed: the same bank gives the same cells
    index.add(features)
    index.nprobe = min(probes, cells)
    return index


def search_distances(index: faiss.Index, bank: Tensor, queries: Tensor, k: int = 1) -> Tensor:
    """Mean Euclidean distance of each query row (N, D) to its k nearest rows of `bank` (M, D), the index built
    on it finding them -> (N,)."""
    _, nearest = index.search(_float32_array(queries), min(k, index.ntotal))
    return chosen_distances(queries, bank, torch.from_numpy(nearest).to(bank.device))


def chosen_distances(queries: Tensor, bank: Tensor, nearest: Tensor) -> Tensor:
    """Mean Euclidean distance of each query row (N, D) to its chosen rows of bank, `nearest` (N, k) -> (N,).

    The search only chooses the rows; the distances are then taken as differences in float64, so the PyTorch
    path and an exported graph, whose float32 searches round differently, give the same figures (the expansion
    |q|^2 - 2 q.b + |b|^2 loses ~1e-4 on distances of 30-40 to cancellation).
    """
    return row_distances(queries[:, None, :], bank[nearest]).mean(1).to(torch.float32)


def row_distances(queries: Tensor, rows: Tensor) -> Tensor:
    """Euclidean distance between matching rows (..., D) of `queries` and `rows` -> (...) float64, taken as
    differences in float64: what every memory reports once its search (in float32, by expansion) has chosen."""
    return (queries.double() - rows.double()).square().sum(-1).sqrt()


def nearest_rows(queries: Tensor, bank: Tensor, k: int = 1, query_block: int | None = SEARCH_QUERIES) -> Tensor:
    """The indices (N, k) of each query row's (N, D) k nearest rows of bank (M, D), found exactly in float32.

    Matrix products of `query_block` queries (all at once where None: an exported graph, whose batch axis is
    free) against SEARCH_ROWS bank rows at a time give |b|^2 - 2 q.b (a query's own norm does not change which
    rows are nearest). On 2 cores, 8192 queries against the 73 778 x 344 bank of posed_bricks' object-centric
    memory: 2.5 s, where faiss' exact index (IndexFlatL2) took 9.2 s to find the same rows.
    """
    check_bank(bank)
    queries = queries.to(bank.dtype)
    blocks = [queries] if query_block is None else queries.split(query_block)
    found = []
    for block in blocks:
        values, indices = [], []
        for start in range(0, bank.shape[0], SEARCH_ROWS):
            rows = bank[start : start + SEARCH_ROWS]
            squared = torch.addmm(rows.square().sum(1)[None], block, rows.T, alpha=-2)
            nearest_values, nearest_indices = smallest(squared, k)
            values.append(nearest_values)
            indices.append(nearest_indices + start)
        _, best = smallest(torch.cat(values, 1), k)
        found.append(torch.cat(indices, 1).gather(1, best))
    return torch.cat(found)


def smallest(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The (N, k) smallest values of each row of scores (N, M) and their column indices (fewer where M < k). For
    k = 1 (the default memory) a minimum, which reads the 2048 x 4096 block once: twice topk's speed, a fifth off
    the whole search."""
    if k == 1:
        return scores.min(dim=1, keepdim=True)
    nearest = scores.topk(min(k, scores.shape[1]), dim=1, largest=False)
    return nearest.values, nearest.indices


def nearest_distances(queries: Tensor, bank: Tensor, k: int = 1, query_block: int | None = SEARCH_QUERIES) -> Tensor:
    """Mean Euclidean distance of each query row (N, D) to its k nearest rows of bank (M, D) -> (N,), exactly:
    the rows `nearest_rows` finds, their distances as `chosen_distances` takes them."""
    return chosen_distances(queries, bank, nearest_rows(queries, bank, k, query_block))


def check_aggregation(aggregation: int) -> None:
    """`model.net.aggregation` must be an odd neighbourhood side, so the averaging stays centred on its patch."""
    if aggregation < 1 or aggregation % 2 == 0:
        raise ValueError(f"model.net.aggregation must be an odd size >= 1, got {aggregation}")


def take_stored_shapes(module: nn.Module, state_dict: dict[str, Any], prefix: str, names: Sequence[str]) -> None:
    """Give the buffers `names`, whose sizes are known only once fitted, the stored ones' shapes (and dtypes), so
    loading a state dict can copy into them; call from `_load_from_state_dict` before the default loading."""
    for name in names:
        if prefix + name in state_dict:
            setattr(module, name, torch.empty_like(state_dict[prefix + name], device=getattr(module, name).device))


def patch_rows(features: Tensor) -> Tensor:
    """(B, D, h, w) patch features -> (B * h * w, D) rows, image by image and row-major within each: the order in
    which a bank stores them and a map is read back."""
    return features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])


def embed_patches(backbone: nn.Module, images: Tensor, aggregation: int) -> Tensor:
    """(B, C, H, W) in [0, 1] -> (B, D, h, w): each backbone map averaged over `aggregation` cells, resized to the
    largest map and concatenated along channels (D = sum of the maps' channels)."""
    maps = backbone(images)
    size = max((m.shape[-2:] for m in maps), key=lambda s: s[0] * s[1])
    pad = aggregation // 2
    pooled = [F.avg_pool2d(m, aggregation, 1, pad, count_include_pad=False) for m in maps]
    return torch.cat([F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in pooled], 1)


class PatchFeatureMemory(nn.Module):
    """Embeds images as patch features and scores each patch by its distance to a bank of normal patches.

    Each requested backbone map is averaged over an `aggregation` x `aggregation` neighbourhood (so a
    patch feature sees its surroundings, PatchCore's local aggregation), resized to the finest map and
    concatenated along channels. The bank is a buffer, so it is saved and loaded with the state dict.

    Args:
        backbone: frozen module mapping (B, C, H, W) in [0, 1] to a list of feature maps (finest first
            or not: all are resized to the largest one).
        aggregation: side of the averaging neighbourhood in feature-map cells; 1 turns it off.
        k: neighbours averaged for a patch's distance.
        search: "exact" nearest neighbours (`nearest_distances`), or approximate: "hnsw" (`hnsw_index`) or
            "ivf" (`ivf_index`).
        hnsw_links, hnsw_ef: the HNSW graph's links per row and its search breadth (more: closer to exact).
        ivf_lists, ivf_probes: the IVF index's cells (None: from the bank's size) and the cells searched per query.
    """

    def __init__(
        self,
        backbone: nn.Module,
        aggregation: int = 3,
        k: int = 1,
        search: str = "exact",
        hnsw_links: int = 32,
        hnsw_ef: int = 64,
        ivf_lists: int | None = None,
        ivf_probes: int = 8,
    ) -> None:
        super().__init__()
        check_aggregation(aggregation)
        if k < 1:
            raise ValueError(f"model.net.k must be >= 1, got {k}")
        check_search(search)  # at build time, before any training
        self.backbone, self.aggregation, self.k = backbone, aggregation, k
        self.search, self.hnsw_links, self.hnsw_ef = search, hnsw_links, hnsw_ef
        if ivf_probes < 1:
            raise ValueError(f"model.net.ivf_probes must be >= 1, got {ivf_probes}")
        self.ivf_lists, self.ivf_probes = ivf_lists, ivf_probes
        self.register_buffer("bank", torch.empty(0, sum(backbone.channels)))
        self._index: faiss.Index | None = None  # hnsw, ivf: built on the first search, dropped when the bank changes

    def embed(self, images: Tensor) -> Tensor:
        """(B, C, H, W) in [0, 1] -> (B, D, h, w) patch features at the finest requested stride."""
        return embed_patches(self.backbone, images, self.aggregation)

    def remember(self, features: Tensor) -> None:
        """Make features (M, D) the bank of normal patches."""
        self.bank = features.detach().to(self.bank.device, torch.float32).contiguous()
        self._index = None

    def score(self, features: Tensor) -> Tensor:
        """(B, D, h, w) patch features (`embed`) -> (B, 1, h, w) distance of every patch to its nearest normal
        patches."""
        b, _, h, w = features.shape
        queries = patch_rows(features)
        if torch.compiler.is_exporting():  # an ONNX graph (polydefect.export) searches the bank exactly itself
            return nearest_distances(queries, self.bank, self.k, query_block=None).reshape(b, 1, h, w)
        if self.search == "exact":
            return nearest_distances(queries, self.bank, self.k).reshape(b, 1, h, w)
        if self._index is None:
            self._index = self.approximate_index()
        return search_distances(self._index, self.bank, queries, self.k).reshape(b, 1, h, w)

    def approximate_index(self) -> faiss.Index:
        """The faiss index `search` names, over the bank."""
        if self.search == "ivf":
            return ivf_index(self.bank, self.ivf_lists, self.ivf_probes)
        return hnsw_index(self.bank, self.hnsw_links, self.hnsw_ef)

    def forward(self, images: Tensor) -> Tensor:
        """(B, C, H, W) in [0, 1] -> (B, 1, h, w) distance of every patch to its nearest normal patches."""
        return self.score(self.embed(images))

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (DDP's spawn, deep copies) without the faiss index, which does not pickle; it is rebuilt."""
        return {**super().__getstate__(), "_index": None}

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        take_stored_shapes(self, state_dict, prefix, ["bank"])
        self._index = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
