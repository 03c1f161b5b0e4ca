"""Paired patient bootstrap, Holm, comparisons and the correct/incorrect breakdown."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from gazebench.aggregate.breakdown import breakdown
from gazebench.aggregate.comparisons import COMPARISON_COLUMNS, comparisons
from gazebench.aggregate.statistics import holm, paired_bootstrap
from gazebench.bootstrap import bootstrap_ci
from gazebench.report.breakdown import format_breakdown_markdown


def slow_paired_bootstrap(a, b, groups, n_boot, seed, ci, rule):
    """Obvious version: drop non-finite pairs, then one replicate at a time (patients in sorted-id order)."""
    kept = [(x, y, g) for x, y, g in zip(a, b, groups) if math.isfinite(x) and math.isfinite(y)]
    patients = sorted({g for _, _, g in kept})
    draws = np.random.default_rng(seed).integers(0, len(patients), size=(n_boot, len(patients)))
    replicates = []
    for draw in draws:
        drawn = [(x, y) for index in draw for x, y, g in kept if g == patients[index]]
        replicates.append(np.mean([x for x, _ in drawn]) - np.mean([y for _, y in drawn]))
    replicates = np.array(replicates)
    diff = np.mean([x for x, _, _ in kept]) - np.mean([y for _, y, _ in kept])
    tail = (1 - ci) / 2
    low, high = np.quantile(replicates, [tail, 1 - tail])
    if rule == "percentile":
        smaller_tail = min(np.sum(replicates <= 0), np.sum(replicates >= 0))
        p = min(1.0, 2 * (1 + smaller_tail) / (n_boot + 1))
    else:
        p = 2 * scipy.stats.t.sf(abs(diff) / np.std(replicates, ddof=1), df=len(patients) - 1)
    return diff, low, high, p, len(kept), len(a) - len(kept)


def paired_values(seed=0, n_patients=15, shift=0.1):
    """Patients with 1-3 images; b = a - shift + noise; a few non-finite values in a and b."""
    rng = np.random.default_rng(seed)
    groups = np.array([f"p{p:02d}" for p in range(n_patients) for _ in range(1 + p % 3)])
    a = rng.normal(0.5, 0.3, len(groups))
    b = a - shift + rng.normal(0, 0.1, len(groups))
    a[3], b[7], b[8] = np.nan, np.inf, np.nan
    return a, b, groups


@pytest.mark.parametrize("rule", ["t", "percentile"])
def test_paired_bootstrap_matches_a_plain_loop(rule):
    a, b, groups = paired_values()
    order = np.random.default_rng(1).permutation(len(a))  # row order must not matter
    result = paired_bootstrap(a[order], b[order], groups[order], n_boot=150, seed=4, ci=0.9, p_value=rule)
    expected = slow_paired_bootstrap(a, b, groups, n_boot=150, seed=4, ci=0.9, rule=rule)
    assert tuple(result) == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert result.n == len(a) - 3 and result.dropped == 3


def test_identical_methods_are_not_significantly_different():
    a, _, groups = paired_values()
    for rule in ("t", "percentile"):
        result = paired_bootstrap(a, a.copy(), groups, p_value=rule)
        assert result.diff == 0 and result.ci_low == 0 and result.ci_high == 0 and result.p_value == 1.0


def test_a_clearly_better_method_is_significant():
    a, b, groups = paired_values(shift=0.5)
    result = paired_bootstrap(a, b, groups, seed=0)
    assert result.diff == pytest.approx(0.5, abs=0.05)
    assert result.ci_low > 0.4 and result.p_value < 1e-10
    percentile = paired_bootstrap(a, b, groups, n_boot=999, seed=0, p_value="percentile")
    assert percentile.p_value == pytest.approx(2 / 1000)  # the smallest value the percentile rule can give


def test_paired_design_detects_a_small_consistent_difference_that_cell_intervals_miss():
    # patients differ a lot (sd 1); a beats b by 0.1 on every image with little noise (sd 0.05)
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(40), 2)
    base = np.repeat(rng.normal(0, 1, 40), 2) + rng.normal(0, 0.2, 80)
    a, b = base + 0.1, base + rng.normal(0, 0.05, 80)
    low_a, high_a = bootstrap_ci(a, groups, seed=0)
    low_b, high_b = bootstrap_ci(b, groups, seed=0)
    assert low_a < high_b and low_b < high_a  # the per-cell intervals overlap widely
    result = paired_bootstrap(a, b, groups, seed=0)
    assert result.ci_low > 0.05 and result.p_value < 1e-6


def test_t_p_value_agrees_with_a_paired_t_test_on_one_image_per_patient():
    rng = np.random.default_rng(5)
    a = rng.normal(0, 1, 200)
    b = a - 0.15 + rng.normal(0, 0.8, 200)
    result = paired_bootstrap(a, b, np.arange(200), n_boot=4000, seed=0)
    t_test = scipy.stats.ttest_rel(a, b)
    assert result.p_value == pytest.approx(t_test.pvalue, rel=0.25)
    assert 0.001 < result.p_value < 0.1


def test_paired_bootstrap_degenerate_inputs_give_nan():
    empty = paired_bootstrap([np.nan, 1.0], [1.0, np.nan], ["a", "b"])
    assert all(math.isnan(value) for value in empty[:4]) and empty.n == 0 and empty.dropped == 2
    one_patient = paired_bootstrap([1.0, 2.0], [0.5, 0.5], ["a", "a"])
    assert one_patient.diff == pytest.approx(1.0) and math.isnan(one_patient.ci_low) and math.isnan(one_patient.p_value)
    with pytest.raises(ValueError, match="p_value must be one of"):
        paired_bootstrap([1.0, 2.0], [0.0, 0.0], ["a", "b"], p_value="exact")


def test_holm_on_a_hand_example():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> monotone: 0.06
    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    with_nan = holm([0.01, np.nan, 0.02])  # NaN stays NaN and does not count
    assert with_nan[0] == pytest.approx(0.02) and math.isnan(with_nan[1]) and with_nan[2] == pytest.approx(0.02)
    assert holm([]).shape == (0,)


def test_holm_matches_statsmodels():
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    p = np.random.default_rng(0).uniform(0, 0.1, 30) ** 2
    assert holm(p) == pytest.approx(multitest.multipletests(p, method="holm")[1], rel=1e-12)


def score_rows(n_patients=16, models=("densenet",), nan_method=None):
    """Rows of 4 methods x 2 metrics, merged gaze and two readers; 'twin' copies 'gradcam'."""
    rng = np.random.default_rng(0)
    images = [(f"p{p:02d}", f"p{p:02d}_i{i}") for p in range(n_patients) for i in range(1 + p % 2)]
    rows = []
    for m, model in enumerate(models):
        for reader in ("all", "r1", "r2"):
            base = rng.normal(0, 0.3, len(images))
            for method, offset in (("gradcam", 0.6), ("saliency", 0.2), ("centre_bias", 0.35)):
                for metric in ("nss", "kl"):
                    noise = rng.normal(0, 0.1, len(images))
                    for (patient, image), b, e in zip(images, base, noise):
                        rows.append({"image_id": image, "patient_id": patient, "reader": reader, "target": "CHF", "correct": bool(e > -0.05),
                                         "model": model, "method": method, "metric": metric, "value": offset + 0.2 * m + b + e})
    rows = pd.DataFrame(rows)
    twin = rows[rows.method == "gradcam"].assign(method="twin")
    rows = pd.concat([rows, twin], ignore_index=True)
    if nan_method:
        rows.loc[(rows.method == nan_method) & rows.patient_id.isin(["p00", "p03"]), "value"] = np.nan
    return rows


def test_comparisons_equal_paired_bootstrap_on_the_matched_rows():
    rows = score_rows(nan_method="saliency")  # saliency lacks two patients: other draws for its pairs
    table = comparisons(rows, n_boot=200, seed=2, ci=0.9)
    assert list(table.columns) == COMPARISON_COLUMNS
    methods = table[table.kind == "methods"]
    assert len(methods) == 6 * 2 * 2  # 4 methods: 6 pairs, 2 metrics, 2 gaze scopes
    for row in methods.itertuples():
        scope = rows[(rows.reader == "all") == (row.gaze == "merged")]
        scope = scope[scope.metric == row.metric]
        pair = scope[scope.method == row.a].merge(scope[scope.method == row.b], on=["image_id", "target", "reader", "patient_id"])
        expected = paired_bootstrap(pair.value_x, pair.value_y, pair.patient_id, n_boot=200, seed=2, ci=0.9)
        assert (row.diff, row.ci_low, row.ci_high, row.p, row.n, row.dropped) == pytest.approx(tuple(expected), rel=1e-12, abs=1e-12)


def test_comparisons_rank_pairs_and_apply_holm_within_each_family():
    rows = score_rows()
    table = comparisons(rows, n_boot=300, seed=0)
    nss = table[(table.metric == "nss") & (table.gaze == "merged")]
    assert nss.a.iloc[0] in {"gradcam", "twin"} and nss.b.iloc[-1] == "saliency"  # best first
    assert (nss["diff"] >= 0).all()  # 0 only for gradcam vs its twin
    kl = table[(table.metric == "kl") & (table.gaze == "merged")]
    assert (kl["diff"] <= 0).all() and kl.b.iloc[-1] in {"gradcam", "twin"}  # lower is better
    for _, family in table.groupby(["kind", "model", "metric", "gaze"]):
        assert family.p_holm.to_numpy() == pytest.approx(holm(family.p.to_numpy()))
    assert (table.significant == (table.p_holm < 0.05)).all()
    twin = table[(table.a + "/" + table.b).isin(["gradcam/twin", "twin/gradcam"])]
    assert len(twin) == 4 and (twin["diff"] == 0).all() and (twin.p == 1).all() and not twin.significant.any()
    clear = table[(table.a.isin(["gradcam", "twin"]) & (table.b == "saliency")) | ((table.a == "saliency") & table.b.isin(["gradcam", "twin"]))]
    assert clear.significant.all()


def test_comparisons_between_models_leave_out_model_independent_methods():
    rows = score_rows(models=("densenet", "unet"))
    table = comparisons(rows, n_boot=100, model_independent={"centre_bias"})
    models = table[table.kind == "models"]
    assert set(models.method) == {"gradcam", "saliency", "twin"} and models.model.isna().all()
    assert len(models) == 3 * 2 * 2
    # unet's values are 0.2 higher on every row: better on nss, worse on kl (lower is better)
    assert (models[models.metric == "nss"].a == "unet").all() and (models[models.metric == "kl"].a == "densenet").all()
    assert models.significant.all()
    assert set(table[table.kind == "methods"].model) == {"densenet", "unet"}


def test_comparisons_are_seeded():
    rows = score_rows()
    pd.testing.assert_frame_equal(comparisons(rows, n_boot=100, seed=3), comparisons(rows, n_boot=100, seed=3))
    assert not comparisons(rows, n_boot=100, seed=3).equals(comparisons(rows, n_boot=100, seed=4))


def test_comparisons_refuse_duplicate_rows():
    rows = score_rows()
    with pytest.raises(ValueError, match="several rows for one unit"):
        comparisons(pd.concat([rows, rows.iloc[:1]]), n_boot=10)


def test_breakdown_equals_groupby_means():
    rows = score_rows(nan_method="saliency")
    table = breakdown(rows, n_boot=100, seed=1)
    assert list(table.columns) == ["model", "method", "metric", "gaze", "target", "correct", "mean", "ci_low", "ci_high", "n"]
    rows = rows.assign(gaze=np.where(rows.reader == "all", "merged", "single reader"))
    keys = ["model", "method", "metric", "gaze", "target", "correct"]
    grouped = rows.groupby(keys).value.agg(["mean", "count"]).reset_index()
    merged = table.merge(grouped, on=keys, suffixes=("", "_pandas"))
    assert len(merged) == len(table) == len(grouped)
    assert merged["mean"].to_numpy() == pytest.approx(merged["mean_pandas"].to_numpy(), rel=1e-12)
    assert (merged["n"] == merged["count"]).all()
    first = table.iloc[0]
    cell = rows[(rows[keys[:-1]] == first[keys[:-1]]).all(axis=1) & (rows.correct == first.correct)]
    assert (first.ci_low, first.ci_high) == pytest.approx(bootstrap_ci(cell.value, cell.patient_id, 100, 1))
    assert table.groupby(keys[:-1], sort=False).correct.first().all()  # correct predictions first


def test_breakdown_without_single_readers_has_no_gaze_column_and_formats_like_kim():
    rows = score_rows()
    table = breakdown(rows[rows.reader == "all"], n_boot=50)
    assert "gaze" not in table.columns
    text = format_breakdown_markdown(table)
    assert text.splitlines()[0] == "| model | method | metric | target | correct prediction | incorrect prediction |"
    first_correct = table[(table.method == "centre_bias") & (table.metric == "kl") & table.correct].iloc[0]
    expected = f"{first_correct['mean']:.4f} [{first_correct.ci_low:.4f}, {first_correct.ci_high:.4f}] (n={first_correct.n})"
    assert f"| densenet | centre_bias | kl | CHF | {expected} |" in text
    assert sum(line.startswith("| densenet") for line in text.splitlines()) == 4 * 2
    with pytest.raises(ValueError, match="correct"):
        breakdown(rows.drop(columns="correct"))
