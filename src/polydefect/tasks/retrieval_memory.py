"""Training the pose-conditioned feature memory: one pass keeping each good image's patch features whole."""

from __future__ import annotations

import torch
from torch import Tensor

from polydefect.models.retrieval_memory import RetrievalFeatureMemory
from polydefect.tasks.memory_bank import MemoryBankTask


class RetrievalMemoryTask(MemoryBankTask):
    """`MemoryBankTask` whose memory keeps every training image apart (no coreset): a test image is compared
    with the patches of its most similar training images only (`RetrievalFeatureMemory`). Inputs, maps and
    smoothing are the feature memory's (`input_size`, `keep_aspect`, `sigma`)."""

    net: RetrievalFeatureMemory

    @torch.no_grad()
    def collect(self, images: Tensor) -> int:
        """Store the patch features (B, D, h, w) of good images for `fit()`; returns how many images are stored."""
        self.collected.append(self.embed_input(images).to("cpu", torch.float16))
        return sum(len(f) for f in self.collected)

    def fit(self) -> None:
        """Keep every collected image's features and descriptor, then free them."""
        if not self.collected:
            raise RuntimeError("RetrievalMemoryTask.fit(): no features collected; run trainer.fit on good images first")
        self.net.remember(torch.cat(self.collected).float())
        self.collected = []
