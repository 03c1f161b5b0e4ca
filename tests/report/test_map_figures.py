"""The figures that show maps: maps sit on the anatomy (same grid, orientation and letterbox as the radiograph), scales labelled."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gazebench.aggregate.examples import Examples, Pick, pick_examples
from gazebench.errors import UserError
from gazebench.report.map_figures import draw_example_grid
from gazebench.run.store import RunStore

GRID = 224


def letterboxed_radiograph() -> np.ndarray:
    """A wide image letterboxed onto the grid: black bands above and below, content in rows 40..183."""
    image = np.zeros((GRID, GRID))
    image[40:184] = np.linspace(0.2, 0.9, GRID)[None, :]
    return image


def peaked(row: int, column: int) -> np.ndarray:
    rows, columns = np.mgrid[:GRID, :GRID]
    return np.exp(-((rows - row) ** 2 + (columns - column) ** 2) / 200.0) * 7.0  # any scale: figures divide by the maximum


@pytest.fixture
def examples() -> Examples:
    maps = {("gradcam", "img1", "CHF"): peaked(60, 30), ("saliency", "img1", "CHF"): peaked(170, 100)}
    return Examples({"img1": letterboxed_radiograph()}, {"img1": peaked(150, 200) / 1000}, maps, ["gradcam", "saliency"])


def displayed(ax, index: int = -1) -> np.ndarray:
    return np.asarray(ax.images[index].get_array())


@pytest.mark.parametrize("overlay", [False, True])
def test_every_panel_is_drawn_on_the_radiographs_grid_in_its_orientation(examples, overlay):
    pick = Pick("best", "img1", "CHF", "ssim", 0.5)
    figure = draw_example_grid(examples, [pick], overlay=overlay)
    axes = [ax for ax in figure.axes if ax.images]
    titles = [ax.get_title() for ax in axes]
    assert titles == ["radiograph", "gradcam", "saliency", "gaze"]
    np.testing.assert_array_equal(displayed(axes[0]), letterboxed_radiograph())
    for ax in axes:
        for image in ax.images:
            assert image.get_extent() == [-0.5, GRID - 0.5, GRID - 0.5, -0.5] and image.origin == "upper"  # row 0 at the top, as the radiograph
    for ax, peak in zip(axes[1:], [(60, 30), (170, 100), (150, 200)]):
        shown = displayed(ax)
        strength = shown[..., 3] if overlay else shown  # an overlay's opacity follows the map
        assert np.unravel_index(np.argmax(strength), strength.shape) == peak
        if overlay:
            np.testing.assert_array_equal(displayed(ax, 0), letterboxed_radiograph())  # under the map: the same radiograph
            assert strength[0:20].max() < 0.05  # nothing drawn over the letterbox band, where the map is ~0
        else:
            assert shown.max() == pytest.approx(1.0)  # divided by its maximum, as the colour bar says
    colour_bar = [ax for ax in figure.axes if "its maximum" in ax.get_ylabel()]
    assert len(colour_bar) == 1 and "map / its maximum" in colour_bar[0].get_ylabel()
    assert "best: ssim 0.50" in figure.axes[0].get_ylabel() and "class CHF" in figure.axes[0].get_ylabel()


def test_a_method_without_a_kept_map_says_so(examples):
    examples.maps.pop(("saliency", "img1", "CHF"))
    figure = draw_example_grid(examples, [Pick("best", "img1", "CHF", "ssim", 0.5)])
    saliency = next(ax for ax in figure.axes if ax.get_title() == "saliency")
    assert not saliency.images and saliency.texts[0].get_text() == "not kept"


def test_best_median_and_worst_are_ranked_by_the_mean_over_methods_among_kept_images():
    rows = pd.DataFrame(
        [{"image_id": f"i{i}", "target": "CHF", "reader": "all", "method": method, "metric": "ssim", "value": i / 10 + (0.05 if method == "gradcam" else 0.0)}
         for i in range(5) for method in ("gradcam", "saliency", "uniform")]
        + [{"image_id": "i9", "target": "CHF", "reader": "all", "method": "gradcam", "metric": "ssim", "value": 9.0}]  # not kept: never picked
    )  # fmt: skip
    kept = Examples({}, {}, {("gradcam", f"i{i}", "CHF"): np.zeros((2, 2)) for i in range(5)}, ["gradcam"])
    picks = pick_examples(rows, kept)
    assert [(pick.label, pick.image_id) for pick in picks] == [("best", "i4"), ("median", "i2"), ("worst", "i0")]
    assert picks[0].score == pytest.approx(0.425) and picks[0].metric == "ssim"
    kl = rows.assign(metric="kl")  # lower is better: the order turns round
    assert [pick.image_id for pick in pick_examples(kl, kept)] == ["i0", "i2", "i4"]


def test_stored_maps_come_back_within_the_quantisation_step(tmp_path):
    store = RunStore(tmp_path)
    store.maps.mkdir(parents=True)
    maps = np.random.default_rng(0).normal(size=(3, 16, 16))
    store.write_maps(0, "gradcam", ["a", "b", "c"], maps, ["CHF", "Normal", "CHF"])
    methods, inputs = store.read_maps()
    back = methods["gradcam"][0]
    assert back["image_ids"] == ["a", "b", "c"] and back["targets"] == ["CHF", "Normal", "CHF"] and not inputs
    step = (maps.max(axis=(1, 2)) - maps.min(axis=(1, 2))) / 255
    assert (np.abs(back["maps"] - maps).max(axis=(1, 2)) <= step / 2 + 1e-12).all()


def test_chosen_images_replace_the_automatic_picks_and_an_image_without_kept_maps_is_refused():
    rows = pd.DataFrame([{"image_id": f"i{i}", "target": "CHF", "reader": "all", "method": "gradcam", "metric": "nss", "value": float(i)} for i in range(3)])
    kept = Examples({}, {}, {("gradcam", f"i{i}", "CHF"): np.zeros((2, 2)) for i in range(3)}, ["gradcam"])
    picks = pick_examples(rows, kept, image_ids=["i2", "i0"])
    assert [(pick.label, pick.image_id, pick.score) for pick in picks] == [("chosen", "i2", 2.0), ("chosen", "i0", 0.0)]
    with pytest.raises(UserError, match=r"^image i9 has no kept maps: a run keeps the maps of its first 32 images \(3 here: i0, i1, i2\); choose one of them$"):
        pick_examples(rows, kept, image_ids=["i9"])
