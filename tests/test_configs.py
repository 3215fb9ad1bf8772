"""Every shipped config composes, every `_target_` node builds, and typos fail at start naming the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers.tiny import CONF
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from polydefect.config import register_configs
from polydefect.pipeline.candidates import is_auto

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
CELLS = sorted(p.stem for p in (CONF / "cell").glob("*.yaml"))
TARGET_GROUPS = ("segmenter", "model", "augment")
TARGETS = [(group, p.stem) for group in TARGET_GROUPS for p in sorted((CONF / group).glob("*.yaml"))]


def compose_with(*overrides: str) -> DictConfig:
    """The job config, with `${hydra:...}` (e.g. the ablations' run names) resolved as in a real run."""
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    try:
        cfg.name = str(cfg.name)
    finally:
        HydraConfig.instance().cfg = None  # the next test must not see this run's choices
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(experiment: str) -> None:
    cfg = compose_with(f"+experiment={experiment}")
    assert cfg.name
    assert set(cfg.stages) <= {"data", "segment", "detect", "evaluate"}


@pytest.mark.parametrize("cell", CELLS)
def test_every_thesis_matrix_cell_composes_inside_the_thesis_experiment(cell: str) -> None:
    cfg = compose_with("+experiment=thesis", f"+cell={cell}")
    assert cfg.name != "thesis" and "$" not in cfg.name, "a cell must name its own runs"
    assert (cfg.segment.max_epochs, cfg.detect.max_epochs) == (12, 5), "the tables' epoch caps (budget=full)"
    if cell.startswith("table_4_1"):
        assert list(cfg.stages) == ["data", "segment"]
    if cell.startswith("table_1_1"):
        assert cfg.data.variant == "real"
        net = {"dae": "DenseAutoencoder", "cae": "ConvAutoencoder"}[cell.split("_")[3]]
        assert cfg.model.net._target_.endswith(net)


@pytest.mark.parametrize(
    ("overrides", "caps"),
    [
        (["+experiment=mixed"], (4, 1)),  # the main run: budget=quick
        (["+experiment=mixed", "budget=full"], (12, 5)),  # anomaly_default's rows
        (["+experiment=table_1_1"], (12, 5)),
        (["+experiment=table_4_1"], (12, 5)),
        (["+experiment=magnetic_tile"], (12, 5)),
    ],
)
def test_the_main_run_is_quick_and_every_table_experiment_trains_with_the_full_budget(overrides, caps) -> None:
    cfg = compose_with(*overrides)
    assert (cfg.segment.max_epochs, cfg.detect.max_epochs) == caps


def test_the_thesis_matrix_has_the_table_1_1_table_4_1_and_train_data_cells() -> None:
    assert len([c for c in CELLS if c.startswith("table_1_1")]) == 6
    assert len([c for c in CELLS if c.startswith("table_4_1")]) == 6
    assert {c for c in CELLS if c.startswith("anomaly")} == {"anomaly_real", "anomaly_synthetic", "anomaly_mixed"}


@pytest.mark.parametrize(("group", "choice"), TARGETS, ids=[f"{g}={c}" for g, c in TARGETS])
def test_every_config_instantiates(group: str, choice: str) -> None:
    cfg = compose_with(f"{group}={choice}")
    node = cfg[group]
    if not node:  # e.g. segmenter=none: no object to build, by design
        return
    nodes = [candidate.model for candidate in node.candidates.values()] if is_auto(node) else [node]
    for built in (instantiate(each, _convert_="all") for each in nodes):  # model=auto: each of its candidates
        assert type(built).__module__.split(".")[0] in {"polydefect", "albumentations"}


def test_a_misspelt_key_fails_naming_the_key() -> None:
    with pytest.raises(ConfigCompositionException) as error:
        compose_with("data.no_such_key=1")
    assert "no_such_key" in str(error.value) + str(error.value.__cause__)


def test_a_wrong_type_fails_naming_the_key() -> None:
    with pytest.raises(ConfigCompositionException) as error:
        compose_with("data.batch_size=many")
    assert "batch_size" in str(error.value) + str(error.value.__cause__)


@pytest.mark.parametrize(
    ("override", "choices"),
    [
        ("scoring.reduction=maxx", "[mean, max, topk_mean, peak_topk_mean, sum]"),
        ("scoring.error=cubed", "[squared, absolute]"),
        ("scoring.threshold.method=mean", "[max, median, quantile]"),
        ("scoring.threshold.fit_on=test", "[train, val]"),
        ("data.fingerprint=contents", "[stat, content]"),
    ],
)
def test_a_misspelt_choice_fails_at_start_naming_the_key_and_the_choices(override: str, choices: str) -> None:
    with pytest.raises(ConfigCompositionException) as error:
        compose_with(override)
    message = str(error.value) + str(error.value.__cause__)
    assert override.split("=")[0] in message and choices in message


def test_choices_reach_the_code_as_their_plain_strings() -> None:
    scoring = compose_with("+experiment=mixed", "scoring.threshold.fit_on=val").scoring
    assert scoring.reduction == "topk_mean" and f"{scoring.threshold.fit_on}" == "val"
    assert OmegaConf.to_container(scoring)["threshold"]["fit_on"] == "val"


def app(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "polydefect", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_the_app_prints_its_help(tmp_path: Path) -> None:
    result = app("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    groups = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line and "," in line)
    assert "mixed" in groups["experiment"].split(", ")
    assert {"cae", "dae"} <= set(groups["model"].split(", "))


def test_the_app_prints_the_mixed_experiments_job_config(tmp_path: Path) -> None:
    result = app("--cfg", "job", "+experiment=mixed", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    cfg = OmegaConf.create(result.stdout)
    assert cfg.name == "mixed"
    assert list(cfg.data.train_domains) == ["real", "synthetic"]
    assert not (tmp_path / "outputs").exists(), "--cfg must not start a run"


def test_mvtec_data_brings_its_preprocessing_and_the_autoencoders_take_whole_images_at_128_px() -> None:
    feature = compose_with("data=mvtec", "data.root=/data", "model=patchcore")
    autoencoder = compose_with("data=mvtec", "data.root=/data", "model=cae", "preprocess=mvtec_128")
    assert feature.preprocess.colour and not feature.preprocess.mask_background and not feature.preprocess.clahe.enabled
    assert list(feature.preprocess.size) == [256, 256] and feature.preprocess.tile.window == 256
    # the command line's preprocess wins over the data config's; everything else of data=mvtec stays
    assert list(autoencoder.preprocess.size) == [128, 128]
    assert (autoencoder.preprocess.tile.core, autoencoder.preprocess.tile.window) == (128, 128)
    same = {k: v for k, v in autoencoder.preprocess.items() if k not in ("size", "tile")}
    assert same == {k: v for k, v in feature.preprocess.items() if k not in ("size", "tile")}
    assert autoencoder.data == feature.data and autoencoder.scoring == feature.scoring
