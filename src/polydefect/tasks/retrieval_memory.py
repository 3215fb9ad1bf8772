"""Training the pose-conditioned feature memory: one pass keeping each good image's patch features whole."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from polydefect.models.retrieval_memory import RetrievalFeatureMemory
from polydefect.tasks.memory_bank import MemoryBankTask, turned_copies


class RetrievalMemoryTask(MemoryBankTask):
    """`MemoryBankTask` whose memory keeps every training image apart (no coreset): a test image is compared
    with the patches of its most similar training images only (`RetrievalFeatureMemory`). Inputs, maps and
    smoothing are the feature memory's (`input_size`, `keep_aspect`, `sigma`)."""

    net: RetrievalFeatureMemory

    def __init__(self, net: RetrievalFeatureMemory, **settings: Any) -> None:
        super().__init__(net, **settings)
        if self.hparams.keep_aspect and {90, 270} & set(self.rotations):
            raise ValueError(
                "model.rotations: with model.keep_aspect=true a retrieval memory keeps each image's shape, which a "
                "turn of 90 or 270 degrees changes: list [0, 180], or set model.keep_aspect=false"
            )
        self.collected: list[Tensor] = []  # (B, D, h, w) float16 features per training batch, on the CPU

    def start_collection(self) -> None:
        """Forget the features collected so far: a new pass over the training images begins."""
        self.collected = []

    @torch.no_grad()
    def collect(self, images: Tensor) -> int:
        """Store the patch features (B, D, h, w) of good images, each turned copy (`rotations`) as an image of its
        own, for `fit()`; returns how many images are stored."""
        for copy in turned_copies(images, self.rotations):
            self.collected.append(self.embed_input(copy).to("cpu", torch.float16))
        return sum(len(f) for f in self.collected)

    def remember_collected(self) -> None:
        """Keep every collected image's features and descriptor, then free them."""
        if not self.collected:
            raise RuntimeError("RetrievalMemoryTask.fit(): no features collected; run trainer.fit on good images first")
        self.net.remember(torch.cat(self.collected).float())
        self.collected = []
