"""Several detectors (backbones, input sizes, a trained segmentation head) as one: maps normalised on good
validation images."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
from torch import Tensor, nn

from polydefect.tasks.base import DetectorTask
from polydefect.tasks.memory_bank import MemoryBankTask
from polydefect.tasks.pasted_anomalies import PastedAnomalyTask
from polydefect.tasks.patch_maps import PatchMapTask
from polydefect.tasks.validation_images import KeepsValidationImages


class EnsembleTask(KeepsValidationImages, DetectorTask):
    """Mean of member maps, each standardised by the image scores (map maxima) of good validation images.

    Members' maps live on different scales (feature distances of different backbones, probabilities of a
    segmentation head), so each map becomes (map - mean) / std of its maxima over the validation images
    seen during `trainer.fit`; then the ensemble's max is the mean of standardised image scores. Test
    images never enter the statistics.

    Members of two kinds train side by side in one fit: memory banks (`MemoryBankTask`) collect the features
    of the last epoch's training images; detectors trained on pasted anomalies (`PastedAnomalyTask`) take a
    step of their own optimizer on every training batch.

    Members on frozen backbone features (`PatchMapTask`: the feature memory, the feature segmenter) share them when
    scoring: each backbone, aggregation and input shape runs once per batch for all members that use it, and the
    standardised patch maps of members that upsample alike are averaged before one upsampling and smoothing (both
    linear, so the map is the same as upsampling each).

    Args:
        members: name -> detector task, e.g. two backbones' `MemoryBankTask` and a `FeatureSegmentationTask`.
        max_epochs: this stage's epoch budget: one pass for banks alone, the trained members' epochs otherwise.
        share_features: false scores every member on its own (the same map, slower; for comparison).
    """

    def __init__(
        self,
        members: Mapping[str, MemoryBankTask | PastedAnomalyTask],
        max_epochs: int = 1,
        share_features: bool = True,
    ) -> None:
        super().__init__()
        if not members:
            raise ValueError("model.members must name at least one detector")
        for name, member in members.items():
            if not isinstance(member, MemoryBankTask | PastedAnomalyTask):
                raise ValueError(
                    f"model.members.{name}: an ensemble member is a memory bank or a detector trained on pasted"
                    f" anomalies, got {type(member).__name__}"
                )
            if isinstance(member, MemoryBankTask) and member.score_rotations != (0,):
                raise ValueError(
                    f"model.members.{name}.score_rotations: an ensemble scores its members once, at the images' own"
                    f" angle; set it to [0], or score turned images with the memory alone"
                )
        self.save_hyperparameters(ignore=["members"], logger=False)
        self.automatic_optimization = False  # each trained member steps its own optimizer
        self.members = nn.ModuleDict(dict(members))
        self.register_buffer("score_mean", torch.zeros(len(members)))
        self.register_buffer("score_std", torch.ones(len(members)))
        self.validation_images: list[Tensor] = []  # good validation batches, (B, C, H, W) on the CPU

    def _banks(self) -> list[MemoryBankTask]:
        return [member for member in self.members.values() if isinstance(member, MemoryBankTask)]

    def _trained(self) -> dict[str, PastedAnomalyTask]:
        return {name: member for name, member in self.members.items() if isinstance(member, PastedAnomalyTask)}

    def _collecting(self) -> bool:
        """Banks collect in the last epoch (the only one when nothing else trains), so a run resumed from a
        checkpoint still builds them from every training image."""
        last = self.trainer.max_epochs
        return not self._trained() or last is None or last < 1 or self.current_epoch == last - 1

    def on_train_epoch_start(self) -> None:
        if self._collecting():
            for bank in self._banks():
                bank.start_collection()

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        if self._collecting() and self._banks():
            for bank in self._banks():
                count = bank.collect(batch["image"])
            self.log("train/features", float(count), on_step=True, batch_size=1)
        trained = self._trained()
        if not trained:
            return
        optimizers = self.optimizers()
        for (name, member), optimizer in zip(
            trained.items(), optimizers if isinstance(optimizers, list) else [optimizers], strict=True
        ):
            loss = member.training_losses(batch)["loss"]
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
            self.log(f"train/{name}/loss", loss, on_step=True, batch_size=len(batch["image"]))

    def on_train_epoch_end(self) -> None:
        if not self._trained():
            self.trainer.should_stop = True  # banks alone: a second pass would repeat the same features

    def configure_optimizers(self) -> list[torch.optim.Optimizer] | None:
        return [member.configure_optimizers() for member in self._trained().values()] or None

    def fit(self) -> None:
        """Finish every member (banks build their coreset), then standardise each on the stored validation images."""
        if not self.validation_images:
            raise RuntimeError(
                "EnsembleTask.fit(): no validation images seen; it standardises its members on good validation"
                " images (set data.val_fraction > 0, or pass val_dataloaders to trainer.fit)"
            )
        for member in self.members.values():
            member.fit()
        maxima = [[m.flatten(1).amax(1) for m in self._member_maps(images)] for images in self.validation_images]
        for index, scores in enumerate(torch.cat(list(per_member)) for per_member in zip(*maxima, strict=True)):
            self.score_mean[index] = scores.mean()
            self.score_std[index] = scores.std().clamp_min(1e-6) if len(scores) > 1 else 1.0

    def _embedding(self, member: PatchMapTask, images: Tensor, embeddings: dict[Hashable, Tensor]) -> Tensor:
        """The member's features of `images`, computed once per `embedding_key` (when `share_features`)."""
        if not self.hparams.share_features:
            return member.embed_input(images)
        key = member.embedding_key(images.shape[-2:])
        if key not in embeddings:
            embeddings[key] = member.embed_input(images)
        return embeddings[key]

    @torch.inference_mode()
    def _raw_maps(self, images: Tensor) -> list[Tensor]:
        """Each member's unstandardised map of `images`, in member order: a `PatchMapTask`'s patch map (embeddings
        shared), any other member's image map."""
        embeddings: dict[Hashable, Tensor] = {}
        return [
            member.patch_map(self._embedding(member, images, embeddings))
            if isinstance(member, PatchMapTask)
            else member.anomaly_map(images)
            for member in self.members.values()
        ]

    def _member_maps(self, images: Tensor) -> list[Tensor]:
        """Each member's raw (B, 1, H, W) map of `images`, in member order, sharing their embeddings."""
        size = images.shape[-2:]
        return [
            member.image_map(raw, size) if isinstance(member, PatchMapTask) else raw
            for member, raw in zip(self.members.values(), self._raw_maps(images), strict=True)
        ]

    @torch.inference_mode()
    def anomaly_map(self, images: Tensor, views: Sequence[str] | None = None) -> Tensor:
        """(B, C, H, W) in [0, 1] -> (B, 1, H, W) float32 mean of the members' standardised maps (views unused:
        no member needs them)."""
        size = images.shape[-2:]
        pending: dict[Hashable, tuple[PatchMapTask, Tensor]] = {}  # image_map_key -> (a member, summed patch maps)
        maps = []
        for index, (member, raw) in enumerate(zip(self.members.values(), self._raw_maps(images), strict=True)):
            standardised = (raw - self.score_mean[index]) / self.score_std[index]
            if not isinstance(member, PatchMapTask):
                maps.append(standardised)
                continue
            key = member.image_map_key(size) if self.hparams.share_features else index
            if key in pending:
                pending[key] = (pending[key][0], pending[key][1] + standardised)
            else:
                pending[key] = (member, standardised)
        maps += [member.image_map(summed, size) for member, summed in pending.values()]
        return torch.stack(maps).sum(0) / len(self.members)
