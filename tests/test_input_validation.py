"""Bad input stops a run before anything is written: no MLflow run (not even FAILED), no cache entry, no output."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers.mvtec import write_colour_mvtec
from helpers.thesis import write_thesis_fixture
from helpers.tiny import compose_tiny
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from polydefect.data.io import ImageReadError
from polydefect.data.layout import discover
from polydefect.data.validate import validate_tables
from polydefect.inspect import inspect_folder
from polydefect.pipeline.run import STAGES, run


def truncate(path: Path) -> None:
    """Cut a valid PNG in half, as an interrupted copy leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def resize_file(path: Path) -> None:
    """Rewrite a mask 8 px wider than its image."""
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(path), np.zeros((mask.shape[0], mask.shape[1] + 8), mask.dtype))


def assert_nothing_written(cfg: DictConfig) -> None:
    client = MlflowClient(cfg.mlflow.tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    assert not experiments or not client.search_runs(experiments)
    cache = Path(cfg.paths.cache_dir)
    assert not any((cache / stage).exists() for stage in STAGES)
    assert not Path(cfg.paths.output_dir).exists()


@pytest.mark.parametrize(
    ("relative", "spoil", "message"),
    [
        ("batch_01/images/p01_c0.png", truncate, "not a readable image"),  # batch 1 is a test batch
        ("batch_03/object_masks/p02_c1.png", resize_file, "mask is 104x64 but its image is 96x64"),
    ],
    ids=["truncated_test_image", "wrong_sized_mask"],
)
def test_one_bad_file_stops_the_run_before_mlflow(tmp_path: Path, relative: str, spoil, message: str) -> None:
    cfg = compose_tiny(tmp_path)
    bad = Path(cfg.data.root) / relative
    spoil(bad)
    with pytest.raises(ImageReadError, match=rf"{bad}: {message}"):
        run(cfg)
    assert_nothing_written(cfg)


def test_every_bad_file_is_named_in_one_error(tmp_path: Path) -> None:
    cfg = compose_tiny(tmp_path)
    image = Path(cfg.data.root) / "batch_02" / "images" / "p02_c0.png"
    mask = Path(cfg.data.synthetic_root) / "batch_01" / "object_masks" / "p01_c1.png"
    truncate(image)
    resize_file(mask)
    with pytest.raises(ImageReadError, match=r"2 unusable input files") as raised:
        run(cfg)
    assert str(image) in str(raised.value) and str(mask) in str(raised.value)
    assert_nothing_written(cfg)


def test_a_long_list_of_failures_is_cut_short(tmp_path: Path) -> None:
    table = discover(write_colour_mvtec(tmp_path / "mvtec", train=24, test=2), "auto")
    for path in table["image_path"]:
        truncate(Path(path))
    with pytest.raises(ImageReadError, match=r"28 unusable input files") as raised:
        validate_tables([table], workers=2)
    assert str(raised.value).endswith("and 8 more")
    assert str(raised.value).count("not a readable image") == 20


def test_good_tables_pass_silently(tmp_path: Path) -> None:
    thesis = discover(write_thesis_fixture(tmp_path / "thesis", batches=2), "auto")
    mvtec = discover(write_colour_mvtec(tmp_path / "mvtec"), "auto")  # no object masks: empty cells
    validate_tables([thesis, mvtec, thesis])


def test_inspect_checks_the_new_batch_before_downloading_anything(tmp_path: Path) -> None:
    folder = write_colour_mvtec(tmp_path / "new")
    bad = folder / "test" / "stain" / "001.png"
    truncate(bad)
    out = tmp_path / "out"
    cfg = OmegaConf.create(
        {"run": "no-such-run", "data": {"root": str(folder), "layout": "auto"}, "mlflow": {"tracking_uri": "unused"}}
    )
    with pytest.raises(ImageReadError, match=rf"{bad}: not a readable image"):
        inspect_folder(cfg, out)
    assert not out.exists()
