"""`gazebench tables` for the studies that need predictions: kim2022, karargyris2021, watanabe2022.

Runs are written straight into the store's layout (score, prediction and region-share shards,
config.yaml), with numbers chosen so that every cell can be checked.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from gazebench.aggregate.classification import auroc_table
from gazebench.api import paper_tables
from gazebench.errors import UserError
from gazebench.report.papers import paper_tables as build_tables
from gazebench.report.papers import write_paper_tables
from gazebench.run.store import PREDICTION_SCHEMA, RunStore
from tests.report.test_paper_tables import CI, write_run

CLASSES = ("Normal", "CHF", "pneumonia")
KIM = ("saliency", "gradcam", "deeplift", "conductance", "gradshap", "smoothgrad")
IMAGES = 24


def predictions(model: str, skill: float, images: int = IMAGES, seed: int = 0) -> pd.DataFrame:
    """Single-label predictions: image i has class i % 3; the true class's probability is raised by ``skill``."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(images):
        scores = rng.random(len(CLASSES))
        scores[i % 3] += skill
        probs = scores / scores.sum()
        for c, name in enumerate(CLASSES):
            rows.append({"dataset": "synth", "split": "test", "image_id": f"i{i}", "patient_id": f"p{i // 2}", "model": model, "checkpoint": "0123456789ab",
                         "class": name, "label": float(c == i % 3), "prob": float(probs[c])})  # fmt: skip
    return pd.DataFrame(rows)[list(PREDICTION_SCHEMA)]


def write_predictions(run, frame: pd.DataFrame):
    store = RunStore(run)
    store.predictions.mkdir(parents=True, exist_ok=True)
    store.write_predictions(0, frame)
    return run


def ssim_values(model):
    """Correct predictions (even images) score higher; DenseNet-Aug is 0.1 above DenseNet."""

    def values(method, metric, i):
        return 0.3 + (0.1 if model == "densenet_aug" else 0.0) + (0.05 if i % 2 == 0 else 0.0) + 0.01 * KIM.index(method)

    return values


def kim_run(folder, model, skill, regions=True):
    run = write_run(folder, model, KIM, ("ssim", "nss"), ssim_values(model), targets=CLASSES, images=IMAGES)
    rows = RunStore(run).read_shard(0, KIM[0])
    correct = np.arange(IMAGES) % 2 == 0
    for index, method in enumerate(KIM):  # correct: even images
        shard = RunStore(run).read_shard(index, method)
        shard["correct"] = correct[shard["image_id"].str[1:].astype(int)]
        RunStore(run).write_shard(index, method, shard)
    write_predictions(run, predictions(model, skill))
    if regions:
        store = RunStore(run)
        store.regions.mkdir(parents=True, exist_ok=True)
        keys = rows.drop_duplicates("image_id")[["image_id", "patient_id", "target"]].reset_index(drop=True)
        for index, method in enumerate(("gaze", *KIM)):
            left = np.where(np.arange(IMAGES) % 3 == 1, 0.7, 0.2) + 0.001 * np.arange(IMAGES)  # CHF images: left lung
            share = keys.assign(correct=True, model=model, method=method, left_lung=left, right_lung=1 - left)
            store.write_region_shard(index, method, share)
    return run


def test_auroc_table_matches_sklearn_and_its_mean_interval_holds_the_mean():
    frame = predictions("m", 0.6, images=60, seed=3)
    table = auroc_table(frame, n_boot=300, seed=1).set_index("class")
    wide = frame.pivot(index="image_id", columns="class", values=["prob", "label"])
    for name in CLASSES:
        assert table.loc[name, "auroc"] == pytest.approx(roc_auc_score(wide["label"][name], wide["prob"][name]))
        assert table.loc[name, "ci_low"] <= table.loc[name, "auroc"] <= table.loc[name, "ci_high"]
        assert table.loc[name, "n"] == 60 and table.loc[name, "n_positive"] == 20
    assert table.loc["mean", "auroc"] == pytest.approx(np.mean([table.loc[name, "auroc"] for name in CLASSES]))
    assert table.loc["mean", "ci_low"] < table.loc["mean", "auroc"] < table.loc["mean", "ci_high"] and table.loc["mean", "n"] == 60


def test_auroc_table_leaves_uncertain_labels_out():
    frame = predictions("m", 0.6, images=30)
    uncertain = (frame["class"] == "CHF") & frame["image_id"].isin(["i0", "i3"])
    frame.loc[uncertain, "label"] = np.nan
    table = auroc_table(frame, n_boot=0).set_index("class")
    kept = frame[(frame["class"] == "CHF") & ~uncertain]
    assert table.loc["CHF", "n"] == 28 and table.loc["CHF", "auroc"] == pytest.approx(roc_auc_score(kept["label"], kept["prob"]))


def test_kim2022_writes_auroc_ssim_and_region_tables_in_the_posters_layout(tmp_path):
    plain = kim_run(tmp_path / "densenet", "densenet121", 0.8)
    aug = kim_run(tmp_path / "aug", "densenet_aug", 0.3)
    _, written = write_paper_tables("kim2022", [plain, aug], tmp_path / "out", n_boot=200)
    assert sorted(path.name for path in written) == sorted(f"kim2022_{name}{suffix}" for name in ("auroc", "ssim", "regions") for suffix in (".md", ".csv", ".tex"))

    auroc_md = (tmp_path / "out" / "kim2022_auroc.md").read_text().splitlines()
    assert auroc_md[2] == "| class | DenseNet AUROC [95% CI] | DenseNet (paper) | DenseNet-Aug AUROC [95% CI] | n (positives) |"
    rows = {line.split(" | ")[0].strip("| "): line.strip("| ").split(" | ") for line in auroc_md[4:11]}
    assert list(rows) == [*CLASSES, "Edema", "Pleural Effusion", "No Finding", "mean"]
    expected = auroc_table(predictions("densenet121", 0.8), n_boot=200).set_index("class")
    assert rows["CHF"][1] == f"{expected.loc['CHF', 'auroc']:.3f} [{expected.loc['CHF', 'ci_low']:.3f}, {expected.loc['CHF', 'ci_high']:.3f}]"
    assert CI.match(rows["CHF"][3]) and rows["CHF"][2] == "-" and rows["CHF"][4] == "24 (8)"
    assert rows["Edema"][1:4] == ["not in these data", "0.835", "not in these data"]  # the poster's number in its place
    assert rows["Pleural Effusion"][2] == "0.888" and rows["No Finding"][2] == "0.793" and CI.match(rows["mean"][1])

    ssim_md = (tmp_path / "out" / "kim2022_ssim.md").read_text().splitlines()
    assert ssim_md[2] == "| model | method | " + " | ".join(f"{c} (n=8) {o}" for c in ("CHF", "Normal", "pneumonia") for o in ("correct", "incorrect")) + " |"
    body = [line.strip("| ").split(" | ") for line in ssim_md[4:18]]
    assert [row[:2] for row in body] == [[model, method] for model in ("DenseNet", "DenseNet-Aug") for method in ("SL", "GC", "DL", "LC", "GS", "NT", "n")]
    chf_correct = [i for i in range(IMAGES) if i % 3 == 1 and i % 2 == 0]
    assert body[1][2].startswith(f"{0.3 + 0.05 + 0.01:.3f} [") and all(CI.match(cell) or cell.startswith("0.") for cell in body[1][2:])  # GC, CHF, correct
    assert body[7][2].startswith(f"{0.4 + 0.05 + 0.0:.3f}")  # DenseNet-Aug SL
    assert body[6][2:] == [str(len(chf_correct)), str(8 - len(chf_correct))] * 3  # n per (class, outcome)
    assert "Lung Opacity 98" in "\n".join(ssim_md) and "0.27 and 0.49" in "\n".join(ssim_md)

    regions_md = (tmp_path / "out" / "kim2022_regions.md").read_text().splitlines()
    assert regions_md[2] == "| model | map | class | left_lung | right_lung | n |"
    regions = [line.strip("| ").split(" | ") for line in regions_md[4:]][: 2 * 7 * 3]
    assert [row[1] for row in regions[:21:3]] == ["gaze", "SL", "GC", "DL", "LC", "GS", "NT"]
    chf_gaze = next(row for row in regions if row[:3] == ["DenseNet", "gaze", "CHF"])
    assert chf_gaze[3:] == ["100%", "0%", "8"]  # CHF images have their mass in the left lung


def test_kim2022_refuses_a_run_lacking_a_method_or_the_other_model(tmp_path):
    plain = kim_run(tmp_path / "densenet", "densenet121", 0.8)
    with pytest.raises(UserError, match=r"^tables --paper kim2022 needs a run of model densenet_aug .*; make it with: gazebench run --model densenet_aug --methods kim2022 --out DIR$"):
        paper_tables("kim2022", [plain])
    short = write_run(tmp_path / "short", "densenet_aug", KIM[:4], ("ssim",), ssim_values("densenet_aug"), targets=CLASSES)
    with pytest.raises(UserError, match=r"^tables --paper kim2022 needs methods gradshap, smoothgrad in .*short; make it with: gazebench run --model densenet_aug --methods kim2022 --out .*short \(a run grows"):
        paper_tables("kim2022", [plain, short])


def test_a_run_without_stored_predictions_is_refused_naming_the_command_that_adds_them(tmp_path):
    plain = write_run(tmp_path / "base", "effnet_baseline", ("gradcam",), ("nss",), lambda *_: 1.0, targets=CLASSES)
    unet = write_predictions(write_run(tmp_path / "unet", "unet_gaze", ("gradcam",), ("nss",), lambda *_: 1.0, targets=CLASSES), predictions("unet_gaze", 0.5))
    with pytest.raises(UserError, match=r"^tables --paper karargyris2021 needs the predictions of .*base \(it was made before runs stored them\); make it with: the `gazebench run --model effnet_baseline"):
        paper_tables("karargyris2021", [plain, unet])


def test_karargyris2021_sets_the_papers_aurocs_beside_ours(tmp_path):
    base = write_predictions(write_run(tmp_path / "base", "effnet_baseline", ("gradcam",), ("nss",), lambda *_: 1.0, targets=CLASSES), predictions("effnet_baseline", 0.4))
    unet = write_predictions(write_run(tmp_path / "unet", "unet_gaze", ("gradcam",), ("nss",), lambda *_: 1.0, targets=CLASSES), predictions("unet_gaze", 0.9, seed=1))
    write_paper_tables("karargyris2021", [unet, base], tmp_path / "out", n_boot=100)
    numbers = build_tables("karargyris2021", [unet, base], n_boot=100)[0][0].data.set_index("class")
    assert list(numbers.index) == [*CLASSES, "mean"]
    assert numbers.loc["pneumonia", "baseline (EfficientNet) paper"] == 0.800 and numbers.loc["pneumonia", "U-Net + gaze paper"] == 0.789
    assert numbers.loc["mean", "U-Net + gaze paper"] == 0.861
    ours = auroc_table(predictions("unet_gaze", 0.9, seed=1), n_boot=0).set_index("class")
    assert numbers.loc["CHF", "U-Net + gaze auroc"] == pytest.approx(ours.loc["CHF", "auroc"])
    md = (tmp_path / "out" / "karargyris2021_auroc.md").read_text().splitlines()
    assert md[2] == "| class | baseline (EfficientNet) AUROC [95% CI] | baseline (EfficientNet) (paper) | U-Net + gaze AUROC [95% CI] | U-Net + gaze (paper) | n (positives) |"
    normal = md[4].strip("| ").split(" | ")
    assert normal[0] == "Normal" and CI.match(normal[1]) and normal[2] == "0.898" and CI.match(normal[3]) and normal[4] == "0.906" and normal[5] == "24 (8)"


def test_watanabe2022_compares_each_generator_run_with_the_baseline_and_scores_their_own_heatmaps(tmp_path):
    def heatmap(model):
        return lambda method, metric, i: (0.6 if model == "heatmap_generator" else 0.3) + 0.01 * i

    runs = [
        write_predictions(write_run(tmp_path / name, model, ("model_heatmap", "gradcam"), ("cc", "kl"), heatmap(model), targets=CLASSES), predictions(model, skill, seed=seed))
        for name, model, skill, seed in (("set1", "heatmap_generator", 0.9, 1), ("set3", "heatmap_generator", 0.7, 2), ("unet", "unet_gaze", 0.5, 3))
    ]
    write_paper_tables("watanabe2022", runs, tmp_path / "out", n_boot=100)
    tables = {table.name: table.data for table in build_tables("watanabe2022", runs, n_boot=100)[0]}
    md = (tmp_path / "out" / "watanabe2022_auroc.md").read_text().splitlines()
    assert md[2] == (
        "| class | heatmap_generator (set1) AUROC [95% CI] | heatmap_generator (set1) (paper) | heatmap_generator (set3) AUROC [95% CI] "
        "| unet_gaze baseline AUROC [95% CI] | n (positives) |"
    )
    cells = {line.strip("| ").split(" | ")[0]: line.strip("| ").split(" | ") for line in md[4:8]}
    assert list(cells) == [*CLASSES, "mean"]
    assert cells["mean"][2] == "0.913 [0.860, 0.966]" and cells["CHF"][2] == "0.962 [0.933, 0.989]" and cells["Normal"][2] == "-"
    agreement = tables["watanabe2022_heatmap_agreement"].set_index(["model", "metric"])
    assert agreement.loc[("heatmap_generator (set1)", "cc"), "mean"] == pytest.approx(0.6 + 0.01 * 5.5)  # images 0..11
    text = (tmp_path / "out" / "watanabe2022_heatmap_agreement.md").read_text()
    assert "| model | cc (higher is better) [95% CI] | kl (lower is better) [95% CI] | n |" in text and "| unet_gaze baseline |" in text
    with pytest.raises(UserError, match=r"^tables --paper watanabe2022 needs a run of model heatmap_generator \(one per experiment set\)"):
        paper_tables("watanabe2022", runs[2:])
