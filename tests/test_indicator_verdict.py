"""The scanner data's batch verdict comes from batch 1's defects, not from the two-knob indicator brick beside it.

Batch 1 is rendered twice: with its defects, and without them (`synth.defects.per_part=[0,0]`: still a defective
batch to the renderer, so its indicator keeps two knobs, but no part gets a defect; the parts after the first one
are placed anew, as by hand, because their jitter is drawn after the first part's defects). The copy without
defects joins the data set as batch 13, a test batch beside batch 1; batches 2-12 train and are the SPC
reference; the pipeline has to flag batch 1 and not batch 13. Rendering 12 batches and training takes about a
minute on 2 cores; where a U-Net trained for the run finds the parts, two more (marked slow).

The scene, lighting, cameras and indicator are the scanner profile's; the render is 256 x 192 px with 2 scanner
positions (4 views), its defects are enlarged (2-3 black specks of 4-6 mm or scratches of 8-12 mm per part) and
its sensor is quieter than the default, so that a CAE trained for seconds sees them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers.renders import NEEDS_BPY, synth_config
from helpers.tiny import compose_app, store_uri
from omegaconf import open_dict

from polydefect.data.io import read_mask
from polydefect.pipeline.run import run
from polydefect.synth import ensure_rendered

pytestmark = [pytest.mark.render, NEEDS_BPY]
RENDER = [
    "synth=scanner",
    "synth.size=tiny",
    "synth.width=256",
    "synth.height=192",
    "synth.defects.kinds=[black_speck,scratch]",
    "synth.defects.size_mm.black_speck=[4,6]",
    "synth.defects.size_mm.scratch=[8,12]",
    "synth.sensor.read_noise=0.004",
    "synth.sensor.shot_noise=0.008",
]
BATCHES = 12
WITHOUT_DEFECTS = BATCHES + 1  # the number batch 1 without its defects gets in the data set
DETECTOR = [  # a CAE small enough to train in seconds on 64 px windows, deep enough not to copy the specks
    "model=cae",
    "model.net.widths=[8,16,32,64]",
    "model.net.bottleneck=[32,8,32]",
    "model.optimizer.lr=0.003",
    "detect.max_epochs=24",
    "preprocess=segmented",
    "preprocess.tile.core=64",
    "preprocess.tile.window=64",
]


def render(cache: Path, *overrides: str) -> Path:
    return ensure_rendered(synth_config(cache, *RENDER, *overrides), progress=False)


@pytest.fixture(scope="module")
def batch_1(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Batch 1 rendered alone, with its defects and without them."""
    cache = tmp_path_factory.mktemp("renders")
    return {
        "with_defects": render(cache, "synth.batches=1", "synth.defects.per_part=[2,3]"),
        "without": render(cache, "synth.batches=1", "synth.defects.per_part=[0,0]"),
    }


@pytest.fixture(scope="module")
def scanner_data(batch_1: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Batches 1 (with defects) to 12 and, as batch 13, batch 1 without its defects, in one thesis-layout folder."""
    root = tmp_path_factory.mktemp("indicator")
    rendered = render(root / "renders", f"synth.batches={BATCHES}", "synth.defects.per_part=[2,3]")
    data = root / "data"
    for batch in rendered.glob("batch_*"):
        shutil.copytree(batch, data / batch.name)
    for folder in ("images", "object_masks"):  # its empty defect masks stay behind: the batch is a good one
        shutil.copytree(batch_1["without"] / "batch_01" / folder, data / f"batch_{WITHOUT_DEFECTS:02d}" / folder)
    return data


def manifest(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines()]


def verdict(data: Path, name: str, *overrides: str) -> pd.DataFrame:
    """The batch verdict of a pipeline run on `data`, trained and scored as `overrides` say."""
    root = data.parent / name
    cfg = compose_app(
        "data=real",
        f"data.root={data}",
        f"data.test_batches=[1,{WITHOUT_DEFECTS}]",
        *DETECTOR,
        *overrides,
        "trainer=fast",
        "trainer.limit_train_batches=1.0",
        "data.batch_size=8",
        "detect.samples=2",
        f"name=indicator_{name}",
        f"paths.cache_dir={root / 'cache'}",
        f"mlflow.tracking_uri={store_uri(root)}",
    )
    with open_dict(cfg):
        cfg.paths.output_dir = str(root / "out")
    run(cfg)
    return pd.read_csv(root / "out" / "evaluation" / "batch_verdict.csv")


def test_batch_1_without_its_defects_keeps_its_two_knob_indicator_and_has_no_defect_pixels(batch_1) -> None:
    with_defects, without = manifest(batch_1["with_defects"]), manifest(batch_1["without"])
    assert [r["view"] for r in without] == [r["view"] for r in with_defects]
    assert {r["indicator_knobs"] for r in without} == {r["indicator_knobs"] for r in with_defects} == {2}
    assert all(part["defects"] for part in with_defects[0]["parts"])
    assert not any(part["defects"] for record in without for part in record["parts"])
    for record, twin in zip(without, with_defects, strict=True):  # the same cameras and light
        assert record["camera_pose"] == twin["camera_pose"] and record["light"] == twin["light"]
        assert not read_mask(batch_1["without"] / record["files"]["defect_mask"], (192, 256)).any()
        assert read_mask(batch_1["with_defects"] / twin["files"]["defect_mask"], (192, 256)).any()


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize(
    "segmenter",
    [
        pytest.param(["segmenter=none"], id="object_masks"),  # the rendered masks: the indicator is background
        pytest.param(
            ["segmenter=unet", "segmenter.image_size=128", "segmenter.batch_size=8", "segment.max_epochs=30"],
            id="unet",
            marks=pytest.mark.slow,  # the U-Net trains for two more minutes
        ),
    ],
)
def test_the_spc_flags_batch_1_with_its_defects_and_not_without_them(scanner_data: Path, segmenter) -> None:
    batches = verdict(scanner_data, segmenter[0].removeprefix("segmenter="), *segmenter)
    assert sorted(batches["batch"]) == [*range(1, BATCHES + 1), WITHOUT_DEFECTS]
    assert sorted(batches.loc[batches["out_of_control"], "batch"]) == [1]
    assert np.isfinite(batches["mean_nqi"]).all()
