"""Exported graphs behind the interfaces the scoring code already takes: an ONNX Runtime session as a `Detector`
(for `polydefect.scoring.stream`) and as a U-Net's net (for `UNetSegmenter`), so a bundle scores new images
through the same code as a trained run, with only the network swapped."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import Tensor

from polydefect.export.files import IMAGE_HASHES, IMAGES, VIEW_HASHES
from polydefect.models.view_memory import image_fingerprints, key_hashes


def cpu_session(path: Path, threads: int = 0) -> ort.InferenceSession:
    """An ONNX Runtime session on the CPU; `threads` 0 lets it use every core."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxDetector:
    """A detector's exported map (`polydefect.export.graphs.export_detector`), scored with ONNX Runtime.

    It has what scoring needs of a `Detector` (a device, eval(), maps); it cannot be trained or saved.
    """

    checkpoint_monitor = None

    def __init__(self, session: ort.InferenceSession) -> None:
        self.session = session
        self.needs_views = VIEW_HASHES in {i.name for i in session.get_inputs()}
        self.device = torch.device("cpu")

    def eval(self) -> OnnxDetector:
        return self

    def anomaly_map(self, images: Tensor, views: Sequence[str] | None = None) -> Tensor:
        """(B, C, H, W) in [0, 1] at the size the graph was exported for -> (B, 1, H, W) float32 map."""
        feed = {IMAGES: images.float().cpu().numpy()}
        if self.needs_views:
            if views is None:
                raise ValueError("this detector compares each image with its view's references: give the views")
            feed[VIEW_HASHES] = key_hashes(views).numpy()
            feed[IMAGE_HASHES] = image_fingerprints(images).numpy()
        return torch.from_numpy(self.session.run(None, feed)[0])

    def map_and_reconstruction(self, images: Tensor, views: Sequence[str] | None = None) -> tuple[Tensor, Tensor]:
        return self.anomaly_map(images, views), images


class OnnxNet:
    """A U-Net's exported logits, callable as the torch net `UNetSegmenter.probabilities` calls."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self.session = session

    def to(self, device: torch.device) -> OnnxNet:
        return self

    def eval(self) -> OnnxNet:
        return self

    def __call__(self, images: Tensor) -> Tensor:
        return torch.from_numpy(self.session.run(None, {IMAGES: np.ascontiguousarray(images.cpu().numpy())})[0])
