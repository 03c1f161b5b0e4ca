"""The report's figures: drawn from aggregated tables, axes that say the metric's direction, floors and
ceiling as labelled lines, one significance cell per pair, PNG and PDF bytes, written into RUN_DIR/figures/."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.figure import Figure
from PIL import Image

from gazebench.aggregate.leaderboard import rank
from gazebench.aggregate.regions import analyse_regions
from gazebench.aggregate.sanity import summarise
from gazebench.api import run_benchmark, wrap_model
from gazebench.errors import UserError
from gazebench.report.figure_panels import (
    draw_metric_distributions,
    draw_region_distribution,
    draw_significance,
    method_order,
    p_text,
    significance_matrix,
)
from gazebench.report.figures import PNG_DPI, pdf_bytes, png_bytes, run_figures
from tests.fixtures.tiny_models import TinyCNN

CLASSES = ["Normal", "CHF", "pneumonia"]
OFFSETS = {"gradcam": 0.9, "saliency": 0.2, "centre_bias": 0.5, "uniform": 0.1, "edges": 0.3, "inter_observer": 1.2}


def score_rows() -> pd.DataFrame:
    """nss (higher is better) and kl (lower is better) rows of two methods and the references, merged and single-reader gaze.

    The inter-observer ceiling exists only against a single reader; the constant uniform floor has no nss.
    """
    rng = np.random.default_rng(0)
    rows = []
    for reader in ("all", "r1"):
        for method, offset in OFFSETS.items():
            if method == "inter_observer" and reader == "all":
                continue
            for metric in ("nss", "kl"):
                undefined = method == "uniform" and metric == "nss"
                rows += [{"image_id": f"i{i}", "patient_id": f"p{i}", "reader": reader, "target": "CHF", "model": "m", "method": method, "metric": metric,
                          "value": np.nan if undefined else offset + rng.normal(0, 0.05)} for i in range(12)]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def ranked():
    rows = score_rows()
    leaderboard, comparisons = rank(rows, seed=0)
    return rows, leaderboard, comparisons


def visible_axes(figure: Figure) -> list:
    return [ax for ax in figure.axes if ax.get_visible()]


def test_metric_distributions_say_the_direction_and_draw_floors_and_ceiling_at_their_means(ranked):
    rows, leaderboard, _ = ranked
    figure = draw_metric_distributions(rows, leaderboard)
    axes = visible_axes(figure)
    assert [ax.get_title() for ax in axes] == ["kl, merged gaze", "kl, single reader gaze", "nss, merged gaze", "nss, single reader gaze"]
    for ax in axes:
        metric, gaze = ax.get_title().split(", ")[0], ax.get_title().split(", ")[1].removesuffix(" gaze")
        direction = "(↓ lower is better)" if metric == "kl" else "(↑ higher is better)"
        assert ax.get_ylabel() == f"{metric} per image\n{direction}"
        block = leaderboard[(leaderboard.metric == metric) & (leaderboard.gaze == gaze) & (leaderboard.role != "method")].dropna(subset=["mean"])
        lines = {line.get_label(): line.get_ydata()[0] for line in ax.get_lines() if line.get_label().endswith(", mean")}
        assert lines == pytest.approx({f"{row.method} ({row.role}), mean": row.mean for row in block.itertuples()})
    merged_nss, single_nss = axes[2], axes[3]
    assert "inter_observer (ceiling), mean" in [line.get_label() for line in single_nss.get_lines()]
    assert not [line for line in merged_nss.get_lines() if line.get_label().startswith(("inter_observer", "uniform"))]  # no ceiling there; uniform has no nss


def test_every_panel_lists_the_methods_by_mean_rank_then_the_references():
    rows = score_rows()
    rows.loc[rows.method == "saliency", "value"] += np.where(rows.loc[rows.method == "saliency", "metric"] == "nss", 2.0, -1.0)  # best in both metrics
    leaderboard, _ = rank(rows, seed=0)
    assert method_order(leaderboard) == ["saliency", "gradcam", "centre_bias", "uniform", "edges", "inter_observer"]
    leaderboard, _ = rank(score_rows(), seed=0)  # gradcam best for nss, saliency for kl: a tie, broken by name
    assert method_order(leaderboard)[:2] == ["gradcam", "saliency"]


def test_metric_distribution_boxes_are_the_quartiles_of_each_methods_values(ranked):
    rows, leaderboard, _ = ranked
    figure = draw_metric_distributions(rows, leaderboard)
    methods = [name for name in method_order(leaderboard) if name in ("gradcam", "saliency")]
    ax = visible_axes(figure)[0]  # kl, merged gaze
    (boxes,) = [child for child in ax.get_children() if isinstance(child, PolyCollection)]
    for x, (method, path) in enumerate(zip(methods, boxes.get_paths()), start=1):
        values = rows[(rows.method == method) & (rows.metric == "kl") & (rows.reader == "all")].value
        low, high = path.vertices[:, 1].min(), path.vertices[:, 1].max()
        assert (low, high) == pytest.approx(tuple(np.percentile(values, [25, 75])))
        assert (path.vertices[:, 0].min() + path.vertices[:, 0].max()) / 2 == pytest.approx(x)
    medians = [child for child in ax.get_children() if isinstance(child, LineCollection)][0].get_segments()[0::5]
    assert [segment[0][1] for segment in medians] == pytest.approx([rows[(rows.method == m) & (rows.metric == "kl") & (rows.reader == "all")].value.median() for m in methods])
    bottom = visible_axes(figure)[-1]
    assert [label.get_text() for label in bottom.get_xticklabels()] == methods


def test_significance_matrix_marks_the_better_method_in_each_metrics_direction(ranked):
    _, leaderboard, comparisons = ranked
    names = ["gradcam", "saliency"]
    for metric, gradcam_better in (("nss", True), ("kl", False)):
        family = comparisons[(comparisons.kind == "methods") & (comparisons.metric == metric) & (comparisons.gaze == "merged")]
        verdicts, p_holm = significance_matrix(family, names, metric)
        assert verdicts[0, 1] == (1 if gradcam_better else -1) and verdicts[1, 0] == -verdicts[0, 1]
        pair = family[family.a.isin(names) & family.b.isin(names)]
        assert p_holm[0, 1] == p_holm[1, 0] == pytest.approx(pair.p_holm.iloc[0])
        assert np.isnan(verdicts[0, 0])


def test_significance_figure_writes_the_holm_p_of_each_significant_pair_once(ranked):
    _, leaderboard, comparisons = ranked
    figure = draw_significance(comparisons, leaderboard)
    axes = visible_axes(figure)
    assert [ax.get_title() for ax in axes] == ["kl, merged gaze (↓ lower is better)", "kl, single reader gaze (↓ lower is better)",
                                               "nss, merged gaze (↑ higher is better)", "nss, single reader gaze (↑ higher is better)"]
    for ax in axes:
        metric, gaze = ax.get_title().split(", ")[0], ax.get_title().split(", ")[1].split(" gaze")[0]
        family = comparisons[(comparisons.kind == "methods") & (comparisons.metric == metric) & (comparisons.gaze == gaze) & comparisons.significant]
        assert len(family) > 0
        assert sorted(text.get_text() for text in ax.texts) == sorted(p_text(p) for p in family.p_holm)
    assert [label.get_text() for label in axes[0].get_yticklabels()] == method_order(leaderboard)


def region_shares() -> pd.DataFrame:
    """Shares of two regions: the gaze always on the right lung; gradcam on the left lung for CHF, on the right for Normal."""
    rng = np.random.default_rng(1)
    rows = []
    for image in range(8):
        target = "CHF" if image < 4 else "Normal"
        for method in ("gaze", "gradcam"):
            left = 0.8 if method == "gradcam" and target == "CHF" else 0.2
            left += rng.normal(0, 0.01) + (0.05 if image % 2 else -0.05)
            rows.append({"image_id": f"i{image}", "patient_id": f"p{image}", "target": target, "correct": True, "model": "m", "method": method,
                         "left_lung": left, "right_lung": 1 - left})
    return pd.DataFrame(rows)


def test_region_figure_stacks_each_methods_most_salient_regions_to_100_percent_beside_the_gaze():
    analysis = analyse_regions(region_shares(), ["left_lung", "right_lung"])
    figure = draw_region_distribution(analysis.class_distribution, analysis.region_names)
    axes = visible_axes(figure)
    assert [ax.get_title() for ax in axes] == ["class CHF", "class Normal"]
    assert [label.get_text() for label in axes[0].get_yticklabels()] == ["gaze (radiologists)", "gradcam"]
    for ax, target in zip(axes, ("CHF", "Normal")):
        assert "%" in ax.get_xlabel()
        widths = {}
        for patch in ax.patches:
            widths[round(patch.get_y() + patch.get_height() / 2)] = widths.get(round(patch.get_y() + patch.get_height() / 2), 0.0) + patch.get_width()
        assert widths == pytest.approx({0: 100.0, 1: 100.0})
        cells = analysis.class_distribution[(analysis.class_distribution.target == target) & (analysis.class_distribution.method == "gradcam")]
        left_share = [patch.get_width() for patch in ax.patches if round(patch.get_y() + patch.get_height() / 2) == 1][0]  # first region drawn: left_lung
        assert left_share == pytest.approx(100 * cells[cells.region == "left_lung"].fraction.iloc[0])
    assert [text.get_text() for text in figure.legends[0].get_texts()] == ["left_lung", "right_lung"]


def test_region_figure_of_two_models_has_a_bar_per_model_and_method_and_the_gaze_once():
    second = region_shares().assign(model="m2")
    chf = second.target == "CHF"
    second.loc[second.method == "gradcam", "left_lung"] = np.where(chf, 0.1, 0.9)[second.method == "gradcam"] + 0.01 * np.arange(int((second.method == "gradcam").sum()))
    second["right_lung"] = 1 - second["left_lung"]  # m2's gradcam: CHF on the right lung, Normal on the left
    analysis = analyse_regions(pd.concat([region_shares(), second], ignore_index=True), ["left_lung", "right_lung"])
    axes = visible_axes(draw_region_distribution(analysis.class_distribution, analysis.region_names))
    assert [label.get_text() for label in axes[0].get_yticklabels()] == ["gaze (radiologists)", "m: gradcam", "m2: gradcam"]
    chf = axes[0]
    widths = {}
    for patch in chf.patches:
        widths.setdefault(round(patch.get_y() + patch.get_height() / 2), []).append(patch.get_width())
    assert {bar: sum(parts) for bar, parts in widths.items()} == pytest.approx({0: 100.0, 1: 100.0, 2: 100.0})  # never two models summed in one bar
    assert widths[1][0] == pytest.approx(100.0) and widths[2][0] == pytest.approx(0.0)  # CHF: m on the left lung, m2 on the right


def test_png_and_pdf_bytes_are_real_files_of_the_figures_size_and_repeatable(ranked):
    _, leaderboard, comparisons = ranked
    figure = draw_significance(comparisons, leaderboard)
    png = png_bytes(figure)
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size == tuple(round(side * PNG_DPI) for side in figure.get_size_inches())
    pdf = pdf_bytes(figure)
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    again = draw_significance(comparisons, leaderboard)
    assert png_bytes(again) == png and pdf_bytes(again) == pdf  # no date inside: the same tables give the same files


@pytest.fixture(scope="module")
def api_run(tiny_synth, tmp_path_factory):
    """A small run of a tiny CNN (saliency and gradcam; nss and kl) written by the API, with its figures and report."""
    import torch

    torch.manual_seed(0)
    adapter = wrap_model(TinyCNN(), CLASSES, "conv2", input_size=32, name="tiny")
    out = tmp_path_factory.mktemp("figures") / "run"
    run_benchmark(adapter, root=tiny_synth, split="all", methods="saliency,gradcam", metrics="nss,kl", out=out, limit=6, batch_size=6)
    return out


def test_a_run_writes_each_figure_as_png_and_pdf_into_its_figures_folder(api_run):
    entries = run_figures(api_run)
    # the synthetic data have anatomical regions; the run kept the maps of its first images
    assert [entry.stem for entry in entries] == ["metric_distributions", "comparisons", "regions", "examples", "overlays"]
    assert all(entry.title and entry.caption and isinstance(entry.figure, Figure) for entry in entries)
    written = sorted(path.name for path in (api_run / "figures").iterdir())
    assert written == sorted(f"{entry.stem}.{suffix}" for entry in entries for suffix in ("png", "pdf"))
    for entry in entries:
        assert Image.open(api_run / "figures" / f"{entry.stem}.png").format == "PNG"
        assert (api_run / "figures" / f"{entry.stem}.pdf").read_bytes().startswith(b"%PDF-")


def test_a_sanity_summary_in_the_run_adds_the_randomisation_figure(api_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(api_run, run)
    values = pd.DataFrame([{"method": method, "step": step, "image_id": f"i{i}", "patient_id": f"p{i}", "target": "CHF", "measure": measure, "value": 1.0 - 0.3 * step + 0.01 * i}
                           for method in ("saliency", "gradcam") for step in range(3) for i in range(4) for measure in ("spearman", "ssim")])
    (run / "sanity").mkdir()
    summarise(values, [["head"], ["features.1", "features.0"]], seed=0).to_csv(run / "sanity" / "sanity.csv", index=False)
    entries = run_figures(run)
    assert [entry.stem for entry in entries][-1] == "sanity"
    sanity = entries[-1].figure
    assert [ax.get_ylabel().splitlines()[0] for ax in sanity.axes] == ["Spearman rank correlation", "SSIM"]
    assert entries[-1].pdf.startswith(b"%PDF-")


def test_figures_of_a_folder_that_is_not_a_run_are_refused_in_one_line(tmp_path):
    with pytest.raises(UserError, match=r"^.* is not a gazebench run directory \(no scores/\*\.parquet, no sanity\.csv\); give the --out of `gazebench run` or `gazebench sanity`$"):
        run_figures(tmp_path)
