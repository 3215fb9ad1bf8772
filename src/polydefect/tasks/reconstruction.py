"""Training an autoencoder on windows of good images, and whole-image reconstruction and anomaly maps."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping
from torch import Tensor, nn

from polydefect.data.tiling import split, stitch
from polydefect.models.losses import reconstruction_loss
from polydefect.scoring.maps import error_map
from polydefect.tasks.base import DetectorTask
from polydefect.tasks.inputs import match_channels


class ReconstructionTask(DetectorTask):
    """Any reconstructor (`encode`/`decode`/`forward`, `in_channels`) plus its loss, optimizer and whole-image
    prediction. Images of another channel count are matched to the net's (colour averaged to grey).

    Args:
        net: the autoencoder, e.g. `ConvAutoencoder` or `DenseAutoencoder`.
        optimizer: a partial optimizer (Hydra `_partial_: true`) completed with the net's parameters.
        loss: "mse" (thesis 4.3), "ssim" or "mse+ssim".
        noise_std: std of Gaussian noise added to the training input only (denoising autoencoder);
            the target stays the clean window. 0 turns it off.
        core: kept centre of each window when reconstructing whole images, px.
        window: side of the windows the net sees, px (`preprocess.tile.window`).
        chunk_size: windows per forward pass in `reconstruct`: bounds memory, and keeps a convolutional
            net's activations small enough for the allocator to reuse (`polydefect.allocator`).
        max_epochs: this stage's epoch budget; the pipeline hands it to the Trainer.
        patience: early-stopping patience in epochs on `val/loss` (thesis 3.8); None turns it off.
    """

    checkpoint_monitor = "val/loss"  # the pipeline keeps the epoch with the lowest

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer],
        loss: str = "mse",
        noise_std: float = 0.0,
        core: int = 256,
        window: int = 320,
        chunk_size: int = 4,
        max_epochs: int = 100,
        patience: int | None = 10,
    ) -> None:
        super().__init__()
        if noise_std < 0:
            raise ValueError(f"model.noise_std must be >= 0, got {noise_std}")
        if chunk_size <= 0:
            raise ValueError(f"model.chunk_size must be positive, got {chunk_size}")
        self.save_hyperparameters(ignore=["net", "optimizer"], logger=False)
        self.net = net
        self.optimizer_factory = optimizer
        self.criterion = reconstruction_loss(loss)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, window, window) in [0, 1] -> reconstruction of the same shape."""
        return self.net(x)

    def _step(self, batch: dict[str, Tensor], stage: str) -> dict[str, Tensor]:
        x = match_channels(batch["image"], self.net.in_channels)  # (B, C, window, window) in [0, 1]
        training = stage == "train"
        noisy = x
        if training and self.hparams.noise_std > 0:
            noisy = (x + self.hparams.noise_std * torch.randn_like(x)).clamp(0.0, 1.0)
        x_hat = self.net(noisy)
        loss = self.criterion(x_hat, x)
        self.log(f"{stage}/loss", loss, prog_bar=True, on_step=training, on_epoch=not training, batch_size=len(x))
        return {"loss": loss, "output": x_hat}

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self._step(batch, "val")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.parameters())

    def configure_callbacks(self) -> list[Callback]:
        """Early stopping on `val/loss` (checkpoints stay the Trainer's: a model's would replace them)."""
        if self.hparams.patience is None:
            return []
        return [EarlyStopping(monitor="val/loss", mode="min", patience=self.hparams.patience)]

    @torch.inference_mode()
    def reconstruct(self, images: Tensor) -> Tensor:
        """Reconstruct whole images by overlap-tiling: split, forward in chunks, stitch the cores.

        Args:
            images: (B, C, H, W) in [0, 1], any H, W.

        Returns:
            (B, net.in_channels, H, W) reconstruction on the task's device.
        """
        was_training = self.training
        self.eval()
        try:
            images = match_channels(images.to(self.device), self.net.in_channels)
            tiles, grid = split(images, self.hparams.core, self.hparams.window)
            # a traced graph (polydefect.export) takes every window at once: its batch size is not known
            chunks = [tiles] if torch.compiler.is_exporting() else tiles.split(self.hparams.chunk_size)
            outputs = torch.cat([self.net(chunk) for chunk in chunks])
        finally:
            self.train(was_training)
        return stitch(outputs, grid)

    @torch.inference_mode()
    def anomaly_map(self, images: Tensor, views: Sequence[str] | None = None) -> Tensor:
        """(B, C, H, W) in [0, 1] -> (B, 1, H, W) squared reconstruction error: higher = more anomalous (views
        unused: an image is its own reference)."""
        return self.map_and_reconstruction(images)[0]

    @torch.inference_mode()
    def map_and_reconstruction(self, images: Tensor, views: Sequence[str] | None = None) -> tuple[Tensor, Tensor]:
        """The anomaly map and the reconstruction it was computed from, from one pass over the windows."""
        images = match_channels(images.to(self.device), self.net.in_channels)
        reconstruction = self.reconstruct(images)
        return error_map(images, reconstruction), reconstruction
