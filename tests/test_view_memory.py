"""The per-view feature memory: each view is scored against its own good images only, never against the image
itself, its state reloads, and through a real pipeline run it finds planted spots on fixed, jittered views."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.surfaces import textured_surfaces
from helpers.thesis import write_thesis_fixture
from helpers.tiny import compose_tiny
from omegaconf import open_dict

from polydefect.models.backbones import EfficientNetLiteFeatures
from polydefect.models.view_memory import ViewFeatureMemory, windowed_nearest
from polydefect.pipeline.run import run
from polydefect.tasks.view_memory import ViewMemoryTask


def _task(radius: int | None = 1) -> ViewMemoryTask:
    net = ViewFeatureMemory(EfficientNetLiteFeatures("efficientnet-lite0", stages=[2]), aggregation=3, radius=radius)
    return ViewMemoryTask(net, sigma=0.0).eval()


def _shifted(images: torch.Tensor, pixels: int) -> torch.Tensor:
    """The scene moved right by `pixels`, its left edge repeated (placement jitter)."""
    return torch.cat([images[..., :1].expand(-1, -1, -1, pixels), images[..., :-pixels]], -1)


@pytest.fixture(scope="module")
def scenes() -> dict[str, torch.Tensor]:
    """Two views (1, 1, 48, 64) of distinct scenes: stripes across and stripes along."""
    across = textured_surfaces(1, size=(64, 48)).transpose(-1, -2).contiguous()
    return {"real/a": textured_surfaces(1), "real/b": across}


def _fitted(scenes: dict[str, torch.Tensor], radius: int | None = 1) -> ViewMemoryTask:
    task = _task(radius)
    for view, image in scenes.items():  # two good images of each view, one shifted by two pixels
        task.collect(torch.cat([image, _shifted(image, 2)]), [view, view])
    task.fit()
    return task


def brute_force_nearest(queries: torch.Tensor, references: torch.Tensor, radius: int, allowed: torch.Tensor):
    """`windowed_nearest` by loops, in float64."""
    b, _, h, w = queries.shape
    best = torch.full((b, h, w), torch.inf, dtype=torch.float64)
    for i, y, x in torch.cartesian_prod(torch.arange(b), torch.arange(h), torch.arange(w)).tolist():
        for n, dy, dx in torch.cartesian_prod(torch.arange(len(references)), *[torch.arange(-radius, radius + 1)] * 2):
            if allowed[i, n] and 0 <= y + dy < h and 0 <= x + dx < w:
                difference = queries[i, :, y, x].double() - references[n, :, y + dy, x + dx].double()
                best[i, y, x] = min(best[i, y, x], difference.norm())
    return best


def test_windowed_distances_are_exact_far_from_the_origin() -> None:
    """Features with norms of ~400 at distances of ~6: there the float32 expansion alone errs by ~1e-3."""
    generator = torch.Generator().manual_seed(0)
    queries, references = (100 + torch.randn(n, 16, 5, 6, generator=generator) for n in (2, 3))
    allowed = torch.tensor([[True, False, True], [False, True, False]])
    exact = brute_force_nearest(queries, references, 1, allowed)
    torch.testing.assert_close(windowed_nearest(queries, references, 1, allowed).double(), exact, atol=1e-5, rtol=0)


@pytest.mark.parametrize("radius", [1, None])
def test_an_image_is_scored_against_its_own_views_references_only(scenes, radius) -> None:
    task = _fitted(scenes, radius)
    new_b = _shifted(scenes["real/b"], 1)  # a new good image of view b
    as_b = task.anomaly_map(new_b, ["real/b"]).mean()
    as_a = task.anomaly_map(new_b, ["real/a"]).mean()
    assert as_a > 2 * as_b


def test_a_training_image_is_scored_against_the_other_images_of_its_view_not_itself(scenes) -> None:
    task = _fitted(scenes)
    own = task.anomaly_map(scenes["real/a"], ["real/a"])
    assert own.mean() > 0
    single = _task()
    single.collect(torch.cat([scenes["real/a"], scenes["real/b"]]), ["real/a", "real/b"])
    single.fit()
    assert single.anomaly_map(scenes["real/a"], ["real/a"]).max() < 0.01 * own.mean()  # its view's only reference


def test_a_view_the_memory_never_saw_is_refused_naming_it(scenes) -> None:
    with pytest.raises(RuntimeError, match="no reference image of view 'synthetic/a'"):
        _fitted(scenes).anomaly_map(scenes["real/a"], ["synthetic/a"])


def test_the_saved_references_reload_into_a_memory_that_maps_the_same(scenes, tmp_path: Path) -> None:
    fitted = _fitted(scenes)
    fitted.save_weights(tmp_path / "model.safetensors")
    loaded = _task().load_weights(tmp_path / "model.safetensors")
    image = _shifted(scenes["real/a"], 1)
    assert torch.equal(loaded.anomaly_map(image, ["real/a"]), fitted.anomaly_map(image, ["real/a"]))


def test_the_view_memory_finds_planted_spots_on_fixed_jittered_views_in_a_pipeline_run(tmp_path: Path) -> None:
    data = write_thesis_fixture(tmp_path / "scenes", batches=6, positions=3, fixed_scenes=True)
    cfg = compose_tiny(
        tmp_path, "model=view_memory", "model.net.backbone.stages=[1,2]", "stages=[data,detect,evaluate]"
    )
    with open_dict(cfg):
        cfg.data.root = str(data)
        cfg.data.train_domains = ["real"]
    metrics = run(cfg)
    assert metrics["test/global/image_auroc"] >= 0.9
