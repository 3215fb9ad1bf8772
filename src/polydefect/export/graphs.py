"""A detector's map (and a U-Net's logits) as an ONNX graph: the same function as its `anomaly_map`, traced with
`torch.export` at the run's preprocessed image size, with a dynamic batch axis.

Maps take view keys as strings, which a graph cannot; a detector that needs them (`needs_views`) gets them as
64-bit hashes (`polydefect.models.view_memory.key_hashes`) and the images' pixel hashes beside them
(`image_fingerprints`), so its graph computes what the PyTorch path does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from polydefect.export.files import IMAGE_HASHES, IMAGES, LOGITS, MAP, VIEW_HASHES
from polydefect.tasks.base import DetectorTask

log = logging.getLogger(__name__)

MAX_BATCH = 256  # the largest batch an exported graph accepts


class MapGraph(nn.Module):
    """images -> (B, 1, H, W) map, as the detector's `anomaly_map` makes it."""

    def __init__(self, detector: DetectorTask) -> None:
        super().__init__()
        self.detector = detector.eval()

    def forward(self, images: Tensor) -> Tensor:
        return self.detector.anomaly_map(images)


class ViewMapGraph(MapGraph):
    """(images, view-key hashes, image hashes) -> (B, 1, H, W) map of a detector that needs views."""

    def forward(self, images: Tensor, view_hashes: Tensor, image_hashes: Tensor) -> Tensor:  # type: ignore[override]
        return self.detector.hashed_map(images, view_hashes, image_hashes)


def map_inputs(detector: DetectorTask) -> list[str]:
    """The names of a detector graph's inputs, in order."""
    return [IMAGES, VIEW_HASHES, IMAGE_HASHES] if detector.needs_views else [IMAGES]


def export_graph(module: nn.Module, inputs: Sequence[Tensor], names: Sequence[str], output: str, path: Path) -> Path:
    """Trace `module` on `inputs` (batch first, the batch axis left free up to MAX_BATCH, every other axis fixed)
    into one self-contained ONNX file: the weights, a memory bank included, are inside it."""
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with torch.inference_mode(False), torch.no_grad():
        program = torch.onnx.export(
            module.eval(),
            tuple(inputs),
            input_names=list(names),
            output_names=[output],
            dynamic_shapes=[{0: batch} for _ in inputs],
            dynamo=True,
            verbose=False,
        )
    program.save(str(path), external_data=False)
    return path


def export_detector(detector: DetectorTask, channels: int, shape: tuple[int, int], path: Path) -> Path:
    """The detector's map of (B, `channels`, *`shape`) images in [0, 1] as an ONNX file at `path`. Traced on two
    images: a batch of one would be fixed into the graph."""
    images = torch.rand(2, channels, *shape, generator=torch.Generator().manual_seed(0))
    hashes = [torch.zeros(2, dtype=torch.int64), torch.arange(2, dtype=torch.int64)] if detector.needs_views else []
    log.info("exporting %s for %d-channel %dx%d images", type(detector).__name__, channels, *shape)
    graph = ViewMapGraph(detector) if detector.needs_views else MapGraph(detector)
    return export_graph(graph, [images, *hashes], map_inputs(detector), MAP, path)


def export_segmenter_net(net: nn.Module, image_size: int, path: Path) -> Path:
    """A U-Net's logits of (B, 1, S, S) grey images in [0, 1] as an ONNX file at `path`."""
    images = torch.rand(2, 1, image_size, image_size, generator=torch.Generator().manual_seed(0))
    return export_graph(net, [images], [IMAGES], LOGITS, path)
