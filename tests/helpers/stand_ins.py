"""Detectors by the `Detector` interface's scoring half only, for tests of what happens to their maps."""

from __future__ import annotations

import torch
from torch import nn


class MapStandIn(nn.Module):
    """A detector that scores: a device (of its one parameter) and a `map_and_reconstruction` the test defines."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))

    @property
    def device(self) -> torch.device:
        return self.anchor.device
