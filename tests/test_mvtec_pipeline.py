"""The magnetic-tile experiment on a few real images: the feature-memory detector runs through the whole
pipeline on an MVTec-layout folder and the evaluation breaks its figures down per defect type."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import cv2
import pandas as pd
import pytest
from helpers.tiny import run_app, store_uri
from mlflow.tracking import MlflowClient

from polydefect import tables

PICK = {"train/good": 10, "test/good": 3, "test/blowhole": 2, "test/crack": 2}


def copy_subset(source: Path, target: Path) -> Path:
    """The first few images of some folders of an MVTec-layout set, with their ground-truth masks."""
    for folder, count in PICK.items():
        (target / folder).mkdir(parents=True)
        for image in sorted((source / folder).glob("*.jpg"))[:count]:
            shutil.copy(image, target / folder / image.name)
            kind = folder.split("/")[1]
            mask = source / "ground_truth" / kind / f"{image.stem}_mask.png"
            if folder.startswith("test") and kind != "good":
                (target / "ground_truth" / kind).mkdir(parents=True, exist_ok=True)
                shutil.copy(mask, target / "ground_truth" / kind / mask.name)
    return target


@pytest.fixture(scope="module")
def mvtec_run(magnetic_tile: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("mvtec")
    data = copy_subset(magnetic_tile, root / "magnetic_tile")  # the folder names the data set in the tables
    overrides = [
        "+experiment=magnetic_tile",
        "model=patchcore",
        f"data.root={data}",
        "data.batch_size=4",
        "preprocess.size=[96,96]",
        "preprocess.tile.core=96",
        "preprocess.tile.window=96",
        "model.input_size=64",
        "model.bank_ratio=0.5",
        "trainer=fast",
        f"paths.cache_dir={root / 'cache'}",
        f"mlflow.tracking_uri={store_uri(root)}",
        f"hydra.run.dir={root / 'out'}",
    ]
    run_app(overrides, cwd=root)
    client = MlflowClient(store_uri(root))
    experiment = client.get_experiment_by_name("polydefect").experiment_id
    (parent,) = client.search_runs([experiment], "tags.experiment = 'magnetic_tile'")
    return {"root": root, "metrics": parent.data.metrics}


def test_the_run_measures_image_and_pixel_metrics(mvtec_run) -> None:
    metrics = mvtec_run["metrics"]
    for key in ("test/global/image_auroc", "test/global/f1", "test/pixel_auroc", "test/aupro"):
        assert 0.0 <= metrics[key] <= 1.0, key


def test_each_defect_type_gets_its_own_image_and_pixel_auroc(mvtec_run) -> None:
    by_type = pd.read_csv(mvtec_run["root"] / "out" / "evaluation" / "defect_types.csv")
    assert list(by_type["defect_type"]) == ["blowhole", "crack"]
    assert list(by_type["images"]) == [2, 2]
    assert by_type[["image_auroc", "pixel_auroc"]].apply(lambda c: c.between(0, 1)).all().all()
    assert mvtec_run["metrics"]["test/type/crack/images"] == 2


def test_a_gallery_shows_the_maps_of_each_defect_type(mvtec_run) -> None:
    gallery = cv2.imread(str(mvtec_run["root"] / "out" / "evaluation" / "defect_maps.png"))
    assert gallery is not None and gallery.shape[1] > gallery.shape[0]  # two rows (types) of four panels


def test_the_tables_command_writes_the_detector_and_per_type_rows(mvtec_run) -> None:
    out = mvtec_run["root"] / "tables"
    tables.main(["--tracking-uri", store_uri(mvtec_run["root"]), "--out", str(out)])
    detectors = pd.read_csv(out / "magnetic_tile.csv")
    assert list(detectors["detector"]) == ["patchcore"]
    assert detectors.loc[0, "train_s"] > 0 and detectors.loc[0, "infer_img_per_s"] > 0
    by_type = pd.read_csv(out / "magnetic_tile_by_type.csv")
    assert list(by_type["defect_type"]) == ["blowhole", "crack"]
