"""The region analysis (aggregate/regions.py) and its Markdown (report/regions.py), by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from gazebench.aggregate.regions import analyse_regions
from gazebench.report.regions import format_markdown

REGIONS = ["a", "b"]


def share_rows(method, shares, images=("i1", "i2", "i3"), targets=("CHF", "CHF", "Normal"), model="m"):
    """One row per image for one method: region shares a and b given as [(a, b), ...]."""
    return pd.DataFrame({
        "image_id": list(images[: len(shares)]), "patient_id": [f"p{image}" for image in images[: len(shares)]],
        "target": list(targets[: len(shares)]), "correct": [True, False, True][: len(shares)],
        "model": model, "method": method, "a": [a for a, _ in shares], "b": [b for _, b in shares],
    })


GRADCAM = [(0.1, 0.5), (0.2, 0.5), (0.3, 0.2)]  # z_a = -1, 0, 1; z_b = .577, .577, -1.155 -> b, b, a
GAZE = [(0.6, 0.1), (0.2, 0.3), (0.1, 0.3)]  # z_a = 1.134, -.378, -.756; z_b = -1.155, .577, .577 -> a, b, b


def hand_table():
    return pd.concat([share_rows("gaze", GAZE), share_rows("gradcam", GRADCAM)], ignore_index=True)


def test_z_scores_and_most_salient_region_by_hand():
    per_map = analyse_regions(hand_table(), REGIONS).per_map
    for method, shares in (("gaze", GAZE), ("gradcam", GRADCAM)):
        rows = per_map[per_map["method"] == method]
        values = np.array(shares)
        expected = (values - values.mean(axis=0)) / values.std(axis=0, ddof=1)
        np.testing.assert_allclose(rows[["z_a", "z_b"]].to_numpy(), expected, rtol=1e-12, atol=1e-12)
    assert per_map["most_salient"].tolist() == ["a", "b", "b", "b", "b", "a"]
    assert per_map["correct"].tolist() == [True, False, True] * 2  # key columns carried through


def test_agreement_with_gaze_and_chance_by_hand():
    agreement = analyse_regions(hand_table(), REGIONS).agreement
    assert agreement[["method", "target"]].values.tolist() == [["gradcam", "all"], ["gradcam", "CHF"], ["gradcam", "Normal"]]
    np.testing.assert_allclose(agreement["agreement"], [1 / 3, 1 / 2, 0.0])
    # all: maps b 2/3, a 1/3; gaze the same -> 4/9 + 1/9; CHF: maps all b, gaze half b -> 1/2;
    # Normal: the map says a, the gaze b -> 0
    np.testing.assert_allclose(agreement["chance"], [5 / 9, 1 / 2, 0.0])
    assert agreement["n_compared"].tolist() == [3, 2, 1] and agreement["n_undefined"].tolist() == [0, 0, 0]


def test_class_distribution_by_hand():
    distribution = analyse_regions(hand_table(), REGIONS).class_distribution
    gradcam = distribution[distribution["method"] == "gradcam"].set_index(["target", "region"])
    assert gradcam["count"].to_dict() == {("CHF", "a"): 0, ("CHF", "b"): 2, ("Normal", "a"): 1, ("Normal", "b"): 0}
    assert gradcam["fraction"].to_dict() == {("CHF", "a"): 0.0, ("CHF", "b"): 1.0, ("Normal", "a"): 1.0, ("Normal", "b"): 0.0}
    gaze = distribution[distribution["method"] == "gaze"].set_index(["target", "region"])
    assert gaze.loc[("CHF", "a"), "fraction"] == 0.5 and gaze.loc[("CHF", "a"), "n_defined"] == 2


def test_degenerate_groups_give_nan_and_are_counted_not_dropped():
    table = pd.concat([
        hand_table(),
        share_rows("single", [(0.4, 0.1)]),  # one row: no z-score
        share_rows("flat_a", [(0.3, 0.1), (0.3, 0.5), (0.3, 0.2)]),  # std of a is 0: decided by b alone
        share_rows("nan_row", [(np.nan, np.nan), (0.1, 0.2), (0.3, 0.1)]),  # an all-zero map: NaN shares
        share_rows("no_gaze", [(0.1, 0.2), (0.3, 0.1)], images=("x1", "x2")),  # images without gaze rows
    ], ignore_index=True)
    analysis = analyse_regions(table, REGIONS)
    per_map = analysis.per_map.set_index(["method", "image_id"])
    assert len(analysis.per_map) == len(table)
    assert per_map.loc[("single", "i1"), ["z_a", "z_b"]].isna().all() and pd.isna(per_map.loc[("single", "i1"), "most_salient"])
    assert per_map.loc["flat_a", "z_a"].isna().all() and per_map.loc["flat_a", "most_salient"].tolist() == ["b", "b", "b"]
    assert pd.isna(per_map.loc[("nan_row", "i1"), "most_salient"])
    agreement = analysis.agreement.set_index(["method", "target"])
    assert agreement.loc[("single", "all"), "n_undefined"] == 1 and math.isnan(agreement.loc[("single", "all"), "agreement"])
    assert agreement.loc[("nan_row", "all"), ["n_compared", "n_undefined", "n"]].tolist() == [2, 1, 3]
    assert agreement.loc[("no_gaze", "all"), ["n_compared", "n_undefined"]].tolist() == [0, 2]
    distribution = analysis.class_distribution.set_index(["method", "target", "region"])
    assert distribution.loc[("single", "CHF", "a"), ["count", "n_defined", "n_undefined"]].tolist() == [0, 0, 1]
    assert math.isnan(distribution.loc[("single", "CHF", "a"), "fraction"])
    assert distribution.loc[("nan_row", "CHF", "a"), "n_undefined"] == 1


def test_a_region_with_zero_spread_is_left_out_of_the_choice():
    flat = share_rows("flat_a", [(0.3, 0.1), (0.3, 0.5), (0.3, 0.2)])
    per_map = analyse_regions(pd.concat([hand_table(), flat], ignore_index=True), REGIONS).per_map
    rows = per_map[per_map["method"] == "flat_a"]
    assert rows["z_a"].isna().all()
    assert rows["most_salient"].tolist() == ["b", "b", "b"]  # every z_b is finite, z_a never wins


def test_ddof_scales_the_z_scores():
    sample = analyse_regions(hand_table(), REGIONS).per_map["z_a"]
    population = analyse_regions(hand_table(), REGIONS, ddof=0).per_map["z_a"]
    np.testing.assert_allclose(population, sample * np.sqrt(3 / 2), rtol=1e-12)
    single = pd.concat([hand_table(), share_rows("single", [(0.4, 0.1)])], ignore_index=True)
    per_map = analyse_regions(single, REGIONS, ddof=0).per_map
    assert per_map.loc[per_map["method"] == "single", ["z_a", "z_b", "most_salient"]].isna().all(axis=None)  # < 2 rows, whatever ddof


def test_missing_columns_and_duplicate_gaze_rows_are_errors():
    with pytest.raises(ValueError, match=r"lack the columns \['correct', 'c'\]"):
        analyse_regions(hand_table().drop(columns="correct"), ["a", "b", "c"])
    doubled = pd.concat([hand_table(), share_rows("gaze", GAZE[:1])], ignore_index=True)
    with pytest.raises(ValueError, match="several gaze rows"):
        analyse_regions(doubled, REGIONS)


def test_empty_table_gives_empty_tables():
    analysis = analyse_regions(hand_table().iloc[:0], REGIONS)
    assert analysis.per_map.empty and analysis.agreement.empty and analysis.class_distribution.empty
    assert "agreement with gaze" in format_markdown(analysis)


def test_markdown_puts_agreement_first_and_gaze_first_in_the_distribution():
    text = format_markdown(analyse_regions(hand_table(), REGIONS))
    assert text.index("agreement with gaze") < text.index("per class")
    assert "| m | gradcam | all | 33.3% | 55.6% | 3 | 0 |" in text
    assert "| model | method | target | a | b | n | n undefined |" in text
    assert text.index("| m | gaze | CHF | 50.0% | 50.0% | 2 | 0 |") < text.index("| m | gradcam | CHF | 0.0% | 100.0% | 2 | 0 |")


def test_many_rows_stay_vectorised():
    """120k rows (5000 images x 3 targets x 8 groups) in a few seconds at most, not minutes."""
    import time

    rng = np.random.default_rng(0)
    n = 5000 * 3
    frames = [
        pd.DataFrame({"image_id": np.repeat(np.arange(5000), 3).astype(str), "patient_id": "p", "target": np.tile(["x", "y", "z"], 5000),
                      "correct": True, "model": "m", "method": method, "a": rng.random(n), "b": rng.random(n)})
        for method in ["gaze", *map(str, range(7))]
    ]
    start = time.perf_counter()
    analysis = analyse_regions(pd.concat(frames, ignore_index=True), REGIONS)
    assert time.perf_counter() - start < 20
    assert analysis.agreement["n_compared"].max() == n and len(analysis.per_map) == 8 * n


def test_tied_z_scores_go_to_the_first_region_in_the_given_order():
    tied = share_rows("tied", [(0.1, 0.1), (0.5, 0.5), (0.3, 0.3)])
    table = pd.concat([hand_table(), tied], ignore_index=True)
    assert analyse_regions(table, ["a", "b"]).per_map.query("method == 'tied'")["most_salient"].tolist() == ["a", "a", "a"]
    assert analyse_regions(table, ["b", "a"]).per_map.query("method == 'tied'")["most_salient"].tolist() == ["b", "b", "b"]
