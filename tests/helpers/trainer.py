"""A Lightning Trainer for unit tests: CPU, no logger, checkpoints, progress bar or model summary."""

from __future__ import annotations

from typing import Any

import lightning as L


def bare_trainer(**settings: Any) -> L.Trainer:
    """`L.Trainer(**settings)` with nothing written and nothing printed; `settings` set the budget."""
    defaults = dict(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return L.Trainer(**{**defaults, **settings})
