"""Leaderboard aggregation: patient bootstrap, NaN handling, sorting, formatting."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from gazebench.leaderboard import bootstrap_ci, build_leaderboard, format_markdown


def slow_bootstrap_ci(values, groups, n_boot, seed, ci):
    """Obvious version: one replicate at a time, same draws (patients in sorted-id order)."""
    patients = sorted(set(groups))
    draws = np.random.default_rng(seed).integers(0, len(patients), size=(n_boot, len(patients)))
    replicates = []
    for draw in draws:
        resampled = [value for index in draw for value, group in zip(values, groups) if group == patients[index]]
        replicates.append(np.mean(resampled))
    tail = (1 - ci) / 2
    return tuple(np.quantile(replicates, [tail, 1 - tail]))


def score_rows(seed=0, n_patients=12):
    """Rows for 3 methods x 2 metrics; patients hold 1-3 images each."""
    rng = np.random.default_rng(seed)
    images = [(f"p{p}", f"p{p}_i{i}") for p in range(n_patients) for i in range(1 + p % 3)]
    rows = []
    for method, offset in (("gradcam", 0.5), ("saliency", 0.2), ("deeplift", 0.35)):
        for metric in ("nss", "kl"):
            for patient, image in images:
                rows.append(dict(image_id=image, patient_id=patient, method=method, metric=metric,
                                 value=offset + rng.normal(0, 0.1)))
    return pd.DataFrame(rows)


def test_bootstrap_matches_slow_loop_with_unequal_patient_sizes():
    rows = score_rows()
    cell = rows[(rows.method == "gradcam") & (rows.metric == "nss")]
    values, groups = cell["value"].tolist(), cell["patient_id"].tolist()
    expected = slow_bootstrap_ci(values, groups, n_boot=200, seed=3, ci=0.9)
    assert bootstrap_ci(values, groups, n_boot=200, seed=3, ci=0.9) == pytest.approx(expected, rel=1e-12)


def test_bootstrap_does_not_depend_on_row_order():
    rows = score_rows()
    cell = rows[(rows.method == "saliency") & (rows.metric == "kl")]
    shuffled = cell.sample(frac=1.0, random_state=1)
    assert bootstrap_ci(cell.value, cell.patient_id) == pytest.approx(bootstrap_ci(shuffled.value, shuffled.patient_id))


def test_bootstrap_is_seeded():
    values = np.random.default_rng(0).normal(size=40)
    groups = np.arange(40) // 2
    assert bootstrap_ci(values, groups, seed=5) == bootstrap_ci(values, groups, seed=5)
    assert bootstrap_ci(values, groups, seed=5) != bootstrap_ci(values, groups, seed=6)


def test_bootstrap_moves_a_patients_images_together():
    # 10 patients with 2 identical-valued images each: resampling patients is exactly resampling
    # 10 single values; resampling images independently would give a narrower (wrong) interval.
    patient_values = np.random.default_rng(1).normal(size=10)
    values = np.repeat(patient_values, 2)
    patients = np.repeat(np.arange(10), 2)
    by_patient = bootstrap_ci(values, patients, seed=0)
    assert by_patient == pytest.approx(bootstrap_ci(patient_values, np.arange(10), seed=0))
    by_image = bootstrap_ci(values, np.arange(20), seed=0)
    assert (by_image[1] - by_image[0]) < 0.85 * (by_patient[1] - by_patient[0])


def test_bootstrap_interval_has_the_normal_width_statistically():
    values = np.random.default_rng(2).normal(size=400)
    low, high = bootstrap_ci(values, np.arange(400), n_boot=2000, seed=0)
    half_width = 1.96 * values.std(ddof=1) / math.sqrt(len(values))
    assert (high - low) / 2 == pytest.approx(half_width, rel=0.1)
    assert low < values.mean() < high


def test_bootstrap_drops_nonfinite_and_handles_empty():
    values = np.array([1.0, 2.0, np.nan, np.inf, 3.0])
    groups = np.array(["a", "b", "c", "c", "d"])
    assert bootstrap_ci(values, groups, seed=0) == bootstrap_ci(values[[0, 1, 4]], groups[[0, 1, 4]], seed=0)
    assert all(math.isnan(bound) for bound in bootstrap_ci([np.nan], ["a"]))


def test_leaderboard_cells_means_and_cis():
    rows = score_rows()
    board = build_leaderboard(rows, n_boot=300, seed=4)
    assert list(board.columns) == ["method", "metric", "mean", "ci_low", "ci_high", "n"]
    assert len(board) == 6
    for record in board.itertuples():
        cell = rows[(rows.method == record.method) & (rows.metric == record.metric)]
        assert record.mean == pytest.approx(cell.value.mean())
        assert record.n == len(cell) == 24
        assert (record.ci_low, record.ci_high) == pytest.approx(bootstrap_ci(cell.value, cell.patient_id, 300, 4))
        assert record.ci_low < record.mean < record.ci_high


def test_leaderboard_is_reproducible():
    rows = score_rows()
    pd.testing.assert_frame_equal(build_leaderboard(rows, seed=7), build_leaderboard(rows, seed=7))
    assert not build_leaderboard(rows, seed=7).equals(build_leaderboard(rows, seed=8))


def test_nan_values_are_excluded_and_n_counts_finite_values():
    rows = score_rows()
    broken = rows.index[(rows.method == "gradcam") & (rows.metric == "nss")][:5]
    rows.loc[broken, "value"] = np.nan
    rows.loc[rows.index[(rows.method == "saliency") & (rows.metric == "nss")], "value"] = np.nan
    board = build_leaderboard(rows, n_boot=100).set_index(["method", "metric"])
    kept = rows[(rows.method == "gradcam") & (rows.metric == "nss")].dropna()
    assert board.loc[("gradcam", "nss"), "n"] == 19
    assert board.loc[("gradcam", "nss"), "mean"] == pytest.approx(kept.value.mean())
    empty = board.loc[("saliency", "nss")]
    assert empty["n"] == 0 and empty[["mean", "ci_low", "ci_high"]].isna().all()


def test_sorted_by_metric_then_direction():
    rows = score_rows()
    unknown = rows[rows.metric == "nss"].assign(metric="zz_custom")
    board = build_leaderboard(pd.concat([rows, unknown]), n_boot=50)
    assert board.metric.tolist() == ["kl"] * 3 + ["nss"] * 3 + ["zz_custom"] * 3
    kl, nss, custom = (board[board.metric == name]["mean"].tolist() for name in ("kl", "nss", "zz_custom"))
    assert kl == sorted(kl)  # lower is better
    assert nss == sorted(nss, reverse=True) and custom == sorted(custom, reverse=True)
    assert board[board.metric == "nss"].method.tolist() == ["gradcam", "deeplift", "saliency"]


def test_model_column_only_with_several_models():
    rows = score_rows()
    assert "model" not in build_leaderboard(rows.assign(model="densenet"), n_boot=20).columns
    several = pd.concat([rows.assign(model="densenet"), rows.assign(model="unet", value=rows.value + 1)])
    board = build_leaderboard(several, n_boot=20)
    assert list(board.columns[:3]) == ["model", "method", "metric"] and len(board) == 12
    assert board[board.metric == "nss"].model.iloc[0] == "unet"


def test_markdown_lists_every_cell_with_direction():
    board = build_leaderboard(score_rows(), n_boot=50)
    text = format_markdown(board)
    assert text.splitlines()[0] == "| metric | method | mean | 95% CI | n |"
    for method in ("gradcam", "saliency", "deeplift"):
        assert method in text
    assert "nss ↑" in text and "kl ↓" in text
    first = board.iloc[0]
    assert f"[{first.ci_low:.4f}, {first.ci_high:.4f}]" in text
    assert len(text.strip().splitlines()) == 2 + len(board)
