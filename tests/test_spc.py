"""Batch SPC: nQI (thesis eq. 1.1) against hand-computed values, control limits, verdicts and charts."""

import json

import pandas as pd
import pytest

from polydefect.evaluation.plots import control_charts_figure, save_figure
from polydefect.scoring.spc import (
    ControlLimits,
    batch_verdict,
    fit_control_limits,
    nqi,
    reference_batches,
    totals_table,
)

# C per (batch, view): view "a" over batches 1-4 is 10, 2, 4, 6; view "b" is 1, 1, 3, 3
TOTALS = totals_table([1, 2, 3, 4, 1, 2, 3, 4], ["a"] * 4 + ["b"] * 4, [10.0, 2.0, 4.0, 6.0, 1.0, 1.0, 3.0, 3.0])


def test_nqi_over_all_batches_matches_equation_1_1_by_hand():
    limits = fit_control_limits(TOTALS)
    # view a: min 2, mean 5.5, population std sqrt((4.5^2 + 3.5^2 + 1.5^2 + 0.5^2) / 4) = sqrt(8.75)
    assert limits.minimum == {"a": 2.0, "b": 1.0}
    assert limits.std["a"] == pytest.approx(8.75**0.5)
    assert limits.std["b"] == pytest.approx(1.0)
    table = nqi(TOTALS, limits).set_index(["batch", "view"])
    assert table.loc[(1, "a"), "nqi"] == pytest.approx(8 / 8.75**0.5)
    assert table.loc[(2, "a"), "nqi"] == 0
    assert table.loc[(4, "b"), "nqi"] == pytest.approx(2.0)


def test_the_control_limit_is_the_reference_mean_nqi_plus_sigma():
    limits = fit_control_limits(TOTALS, reference_batches=[2, 3, 4], sigma=2.0)
    # view a on batches 2-4: min 2, mean 4, std sqrt(8/3); UCL = (4 - 2) / sqrt(8/3) + 2
    assert limits.ucl("a") == pytest.approx(2 / (8 / 3) ** 0.5 + 2)
    table = nqi(TOTALS, limits).set_index(["batch", "view"])
    # batch 1, view a: C = 10 > mean + 2 std = 4 + 2 * 1.633; view b: C = 1 is below its limit
    assert table.loc[(1, "a"), "out_of_control"]
    assert not table.loc[(1, "b"), "out_of_control"]
    assert not table.loc[[2, 3, 4], "out_of_control"].any()


def test_a_batch_is_out_of_control_when_enough_of_its_views_are():
    table = nqi(TOTALS, fit_control_limits(TOTALS, reference_batches=[2, 3, 4], sigma=2.0))
    verdict = batch_verdict(table).set_index("batch")
    assert verdict["out_of_control"].to_dict() == {1: True, 2: False, 3: False, 4: False}
    assert verdict.loc[1, "views_out"] == 1
    assert not batch_verdict(table, min_views=2)["out_of_control"].any()


def test_control_limits_survive_a_json_round_trip():
    limits = fit_control_limits(TOTALS, reference_batches=[2, 3, 4])
    assert ControlLimits.from_dict(json.loads(json.dumps(limits.to_dict()))) == limits


def test_the_reference_batches_are_the_real_training_batches_without_a_defective_image():
    scores = pd.DataFrame(
        {
            "domain": ["real"] * 5 + ["synthetic"],
            "role": ["train", "val", "train", "test", "test", "train"],
            "batch": [3, 4, 5, 1, 2, 7],
            "label": [0, 0, 1, 1, 0, 0],
        }
    )
    assert reference_batches(scores) == [3, 4]  # 5 holds a defect, 1-2 are tested, 7 is synthetic


def test_spc_refuses_duplicate_images_constant_views_and_unknown_views():
    with pytest.raises(ValueError, match="more than one image"):
        totals_table([1, 1], ["a", "a"], [1.0, 2.0])
    with pytest.raises(ValueError, match="view 'b'"):
        fit_control_limits(TOTALS, reference_batches=[1, 2])
    limits = fit_control_limits(TOTALS[TOTALS["view"] == "a"])
    with pytest.raises(KeyError, match="'b'"):
        nqi(TOTALS, limits)


def test_the_control_charts_are_written_as_a_png(tmp_path):
    limits = fit_control_limits(TOTALS, reference_batches=[2, 3, 4])
    path = save_figure(control_charts_figure(nqi(TOTALS, limits), limits), tmp_path / "spc" / "charts.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 5000
