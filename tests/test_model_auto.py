"""`model=auto` trains each candidate, keeps the one with the best validation signal (no test label read), scores
the test images with it alone, and leaves a run that `polydefect.inspect` rebuilds as the chosen detector."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from helpers.planted import planted_run_config, write_planted_mvtec
from helpers.tiny import compose_app, store_uri
from mlflow.tracking import MlflowClient
from omegaconf import open_dict

from polydefect.inspect import download_pipeline
from polydefect.pipeline.candidates import candidate_config, candidate_names, is_object_centric
from polydefect.pipeline.detect import Fitted
from polydefect.pipeline.run import run
from polydefect.stage_keys import StageKey

COARSE, FINE = 32, 128  # the feature memory's input side: at 32 px a planted defect is a fraction of a cell


def auto_config(root: Path, data: Path, *overrides: str):
    """model=auto between a coarse square feature memory and a fine aspect-kept one."""
    return planted_run_config(
        root,
        data,
        root / "cache",
        root / "out",
        "model.choose_from=[patchcore,patchcore_aspect]",
        f"model.candidates.patchcore.model.input_size={COARSE}",
        f"model.candidates.patchcore_aspect.model.input_size={FINE}",
        "model.candidates.patchcore_aspect.preprocess.short_side=64",
        "name=auto",
        *overrides,
    )


@pytest.mark.usefixtures("one_thread")
def test_auto_keeps_the_candidate_with_the_better_validation_signal_and_inspect_rebuilds_it(tmp_path: Path) -> None:
    data = write_planted_mvtec(tmp_path / "planted")
    metrics = run(auto_config(tmp_path, data))
    client = MlflowClient(store_uri(tmp_path))
    parent = client.get_run(metrics["run_id"])
    signals = {name: parent.data.metrics[f"select/{name}/val_signal"] for name in ("patchcore", "patchcore_aspect")}
    assert signals["patchcore_aspect"] > signals["patchcore"], signals
    assert parent.data.tags["select.chosen"] == "patchcore_aspect"
    assert metrics["val/synthetic_image_auroc"] == signals["patchcore_aspect"]  # the chosen one's signal
    assert metrics["test/global/image_auroc"] >= 0.9  # the chosen detector finds the planted defects
    assert parent.data.params["select.chosen.model.input_size"] == str(FINE)
    assert parent.data.params["select.chosen.preprocess.size"] == "[64, 64]"  # the size rule on 64 px images
    candidates = client.search_runs([parent.info.experiment_id], "tags.stage LIKE 'select/%'")
    assert sorted(r.data.tags["stage"] for r in candidates) == ["select/patchcore", "select/patchcore_aspect"]
    assert all(r.info.status == "FINISHED" for r in candidates)
    # both candidates were fitted; only the chosen one scored the test images
    assert len(list((tmp_path / "cache" / "fit").glob("*/model.safetensors"))) == 2
    assert len(list((tmp_path / "cache" / "detect").glob("*/scores.csv"))) == 1
    # each fit keeps its validation maps, so the detect stage of the chosen one, reloading it, scores the
    # validation images (which fit the threshold) each against the others, as the validation signal did
    scores = pd.read_csv(next((tmp_path / "cache" / "detect").glob("*/scores.csv")))
    assert set(scores["role"]) == {"val", "test"}  # fit_on=val, one view: no training image's score is read
    val_ids = set(scores.query("role == 'val'").row_id)
    for weights in (tmp_path / "cache" / "fit").glob("*/model.safetensors"):
        assert set(Fitted(weights.parent, StageKey({})).normaliser().index) == val_ids
    pipeline = download_pipeline(metrics["run_id"], store_uri(tmp_path), tmp_path / "inspect")
    assert pipeline.cfg.model.input_size == FINE and pipeline.cfg.model.keep_aspect
    assert "candidates" not in pipeline.cfg.model


def select_stages(store: Path, run_id: str) -> list[str]:
    client = MlflowClient(store_uri(store))
    experiment = client.get_run(run_id).info.experiment_id
    return sorted(r.data.tags["stage"] for r in client.search_runs([experiment], "tags.stage LIKE 'select/%'"))


@pytest.mark.usefixtures("one_thread")
def test_the_object_centric_candidate_is_tried_only_where_the_images_have_object_masks(tmp_path: Path) -> None:
    data = write_planted_mvtec(tmp_path / "planted")
    overrides = (
        "model.choose_from=[patchcore,patchcore_object]",
        f"model.candidates.patchcore_object.model.input_size={FINE}",
        "model.candidates.patchcore_object.model.rotations=[0,180]",
    )
    plain = run(auto_config(tmp_path / "plain", data, *overrides))
    assert select_stages(tmp_path / "plain", plain["run_id"]) == ["select/patchcore"]  # no masks: skipped
    # the part finder (GrabCut, data=mvtec's default segmenter) finds each part on its holder, so the part-alone
    # candidate is fitted, validated and may be chosen
    found = run(auto_config(tmp_path / "found", data, *overrides, "segmenter=grabcut"))
    assert select_stages(tmp_path / "found", found["run_id"]) == ["select/patchcore", "select/patchcore_object"]
    parent = MlflowClient(store_uri(tmp_path / "found")).get_run(found["run_id"])
    assert parent.data.tags["select.chosen"] == "patchcore_object"  # the part alone at 128 px beats 32 px frames
    assert found["test/global/image_auroc"] >= 0.8  # and finds the planted defects


def direct_config(root: Path, data: Path, cache: Path, output: Path):
    """`model=patchcore` as auto's `patchcore` candidate is configured, in its own output folder."""
    return planted_run_config(root, data, cache, output, "model=patchcore", f"model.input_size={COARSE}", "name=direct")


def scores_of(cache: Path, role: str) -> pd.Series:
    (table,) = [pd.read_csv(path) for path in (cache / "detect").glob("*/scores.csv")]
    return table[table["role"] == role].set_index("row_id")["score"].sort_index()


@pytest.mark.usefixtures("one_thread")
def test_a_run_of_the_chosen_model_reuses_the_fit_that_auto_made_and_scores_as_a_fresh_one(tmp_path: Path) -> None:
    data = write_planted_mvtec(tmp_path / "planted", train=20, good=6, per_kind=1)
    run(auto_config(tmp_path, data, "model.choose_from=[patchcore]"))
    fits = sorted((tmp_path / "cache" / "fit").glob("*/model.safetensors"))
    run(direct_config(tmp_path, data, tmp_path / "cache", tmp_path / "direct"))
    assert sorted((tmp_path / "cache" / "fit").glob("*/model.safetensors")) == fits  # no second training
    # a fresh cache: fitted and scored in one process, against auto's detector reloaded from its fit stage;
    # the validation images (which fit the threshold) are scored leave-one-out both ways
    run(direct_config(tmp_path, data, tmp_path / "fresh", tmp_path / "fresh_out"))
    for role in ("val", "test"):
        pd.testing.assert_series_equal(scores_of(tmp_path / "cache", role), scores_of(tmp_path / "fresh", role))


def test_the_default_candidates_are_the_memory_and_the_ensemble_square_and_aspect_kept_and_the_part_alone() -> None:
    cfg = compose_app("data=mvtec", "data.root=.")
    names = ["ensemble", "patchcore", "ensemble_aspect", "patchcore_aspect", "patchcore_object"]
    assert candidate_names(cfg.model) == names
    assert [name for name in names if is_object_centric(cfg.model, name)] == ["patchcore_object"]
    part = candidate_config(cfg, "patchcore_object")
    assert (part.preprocess.crop_margin, part.preprocess.mask_background) == (0.15, True)
    assert list(part.model.rotations) == [0, 90, 180, 270]
    assert part.model.input_size == 320  # small defects on a part that fills the crop
    assert (part.model.net.aggregation, part.model.sigma) == (1, 1.0)  # each patch's own features, a sharp map
    assert part.scoring.reduction == "peak_topk_mean"  # its map's peaks above their local level
    assert part.model.net.backbone == cfg.model.candidates.patchcore.model.net.backbone  # merged, not replaced
    peaks = compose_app("data=mvtec", "data.root=.", "+model.candidates.patchcore.scoring.reduction=peak_topk_mean")
    patched = candidate_config(peaks, "patchcore").scoring
    assert (patched.reduction, patched.k) == ("peak_topk_mean", cfg.scoring.k)  # a scoring patch, merged
    square, aspect = candidate_config(cfg, "ensemble"), candidate_config(cfg, "ensemble_aspect")
    assert square.model == compose_app("data=mvtec", "data.root=.", "model=ensemble").model
    assert square.preprocess == cfg.preprocess
    assert all(member.keep_aspect for member in aspect.model.members.values())
    assert (aspect.preprocess.size, aspect.preprocess.short_side) == (None, 256)  # the data stage sizes it
    assert aspect.preprocess.colour == cfg.preprocess.colour  # the patch is merged over the run's inputs


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.choose_from=[patchcore,nearest]", r"model\.choose_from: \['nearest'\] not in model\.candidates"),
        ("model.choose_from=[]", r"model\.choose_from: name at least one"),
        ("model.metric=test_auroc", r"model\.metric: 'test_auroc' is not a validation signal"),
        ("detect.validation.enabled=false", r"detect\.validation\.enabled must be true"),
    ],
)
def test_a_bad_choice_setting_is_refused_naming_the_key(tmp_path: Path, override: str, message: str) -> None:
    data = write_planted_mvtec(tmp_path / "planted", train=8, good=2, per_kind=1)
    with pytest.raises(ValueError, match=message):
        run(auto_config(tmp_path, data, override))
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "out").exists()  # refused before any run


@pytest.mark.usefixtures("one_thread")
def test_a_candidate_fitted_after_another_is_the_fit_of_a_run_of_it_alone(tmp_path: Path) -> None:
    # the ensemble's segmenters start from random heads and see shuffled batches: what the global random state
    # holds when its fit starts decides its weights, and the patchcore fit before it consumes that state
    data = write_planted_mvtec(tmp_path / "planted", train=16, good=3, per_kind=1)
    alone = planted_run_config(tmp_path / "alone", data, tmp_path / "alone" / "cache", tmp_path / "alone" / "out")
    with open_dict(alone):
        alone.model = candidate_config(alone, "ensemble").model
    run(alone)
    run(auto_config(tmp_path / "auto", data, "model.choose_from=[patchcore,ensemble]"))
    (fit,) = [path for path in (tmp_path / "alone" / "cache" / "fit").glob("*/model.safetensors")]
    same = tmp_path / "auto" / "cache" / "fit" / fit.parent.name / "model.safetensors"
    assert same.is_file()  # the same key: the same settings, data and code
    assert fit.read_bytes() == same.read_bytes()
