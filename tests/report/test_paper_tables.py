"""`gazebench tables --paper NAME RUN_DIR...`: the studies' layouts, the paper's numbers in their places, the refusals."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from gazebench.api import paper_tables
from gazebench.cli import main
from gazebench.errors import UserError
from gazebench.report.papers import PAPERS, write_paper_tables
from gazebench.run.store import ROW_SCHEMA, RunStore

CI = re.compile(r"^-?\d+\.\d{3} \[-?\d+\.\d{3}, -?\d+\.\d{3}\]$")
SHAMSUL = ("lime", "kernelshap", "gradcam", "lrp")


def write_run(folder, model: str, methods, metrics, values, targets=("CHF", "pneumonia"), images=12):
    """A finished run's store: one shard per method, rows for every (image, metric), ``values(method, metric, i)``; a config.yaml."""
    store = RunStore(folder)
    store.scores.mkdir(parents=True)
    for index, method in enumerate(methods):
        rows = pd.DataFrame([
            {"dataset": "synth", "split": "test", "image_id": f"i{i}", "patient_id": f"p{i // 2}", "reader": "all", "target": targets[i % len(targets)],
             "label": 1, "pred": targets[i % len(targets)], "prob": 0.9, "correct": True, "model": model, "checkpoint": "0123456789ab", "method": method,
             "method_params": "{}", "metric": metric, "value": values(method, metric, i), "protocol": "p1"}
            for i in range(images) for metric in metrics
        ])  # fmt: skip
        store.write_shard(index, method, rows[list(ROW_SCHEMA)])
    config = {"model": {"name": model, "checkpoint": f"/models/{model}.pt", "checkpoint_sha256": "0123456789abcdef"}, "data": {"name": "synth", "split": "test", "images": images}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return folder


def localisation(method, metric, i):
    """Grad-CAM localises best; values differ per image so that the intervals are real intervals."""
    base = {"gradcam": 0.6, "lrp": 0.4, "lime": 0.3, "kernelshap": 0.2}[method]
    return base + 0.01 * i + (0.1 if metric == "hit_rate" else 0.0)


def test_both_studies_are_offered():
    assert set(PAPERS) == {"karargyris2021", "kim2022", "mimic2023", "shamsul2023", "watanabe2022"}


def test_shamsul2023_lays_out_iou_and_hit_rate_per_method_and_class_with_the_papers_finding(tmp_path):
    def with_maskless_normal(method, metric, i):  # the third class, Normal, has no mask: NaN IoU and hit rate
        return float("nan") if i % 3 == 2 else localisation(method, metric, i)

    run = write_run(tmp_path / "run", "densenet121", SHAMSUL, ("iou", "hit_rate", "nss"), with_maskless_normal, targets=("CHF", "pneumonia", "Normal"), images=18)
    text, written = write_paper_tables("shamsul2023", [run], tmp_path / "out", n_boot=200)
    md = (tmp_path / "out" / "shamsul2023_localisation.md").read_text()
    header = md.splitlines()[2]
    assert header == "| model | method | class | IoU (Otsu) [95% CI] | hit rate [95% CI] | n |"
    table = [line.split(" | ") for line in md.splitlines()[4:16]]
    assert [(cells[1], cells[2]) for cells in table] == [
        (method, target) for method in ("LIME", "SHAP (Kernel SHAP)", "Grad-CAM", "LRP") for target in ("CHF", "pneumonia", "all classes")
    ]
    assert all(CI.match(cells[3]) and CI.match(cells[4]) for cells in table)
    gradcam_chf = table[6]
    expected_mean = np.mean([localisation("gradcam", "iou", i) for i in range(0, 18, 3)])
    assert gradcam_chf[3].startswith(f"{expected_mean:.3f} [") and gradcam_chf[5].rstrip(" |") == "6"
    assert "Grad-CAM best quantitatively among Grad-CAM, LIME, SHAP and LRP; no per-cell values reported" in md
    assert "Here: the highest mean IoU over all classes is Grad-CAM's on model densenet121" in md
    assert "Left out: Normal (no image of the class has a localisation mask)." in md
    assert f"- {run}: model densenet121 (checkpoint /models/densenet121.pt, sha256 0123456789ab), data synth test (18 images)" in md
    csv = pd.read_csv(tmp_path / "out" / "shamsul2023_localisation.csv")
    assert set(csv.columns) >= {"model", "method", "metric", "target", "mean", "ci_low", "ci_high", "n"} and len(csv) == 4 * 3 * 2
    tex = (tmp_path / "out" / "shamsul2023_localisation.tex").read_text()
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex and "% made by gazebench from:" in tex
    assert "hit rate [95\\% CI]" in tex
    assert sorted(path.name for path in written) == sorted(f"shamsul2023_localisation{suffix}" for suffix in (".csv", ".md", ".tex"))
    assert text.startswith("## SHAMSUL")


@pytest.mark.parametrize(
    ("methods", "metrics", "message"),
    [
        (("lime", "kernelshap", "gradcam"), ("iou", "hit_rate"), r"^tables --paper shamsul2023 needs method lrp in one of the runs \(.* have gradcam, kernelshap, lime\); make it with: gazebench run --model densenet121 --methods shamsul2023"),
        (SHAMSUL, ("nss",), r"^tables --paper shamsul2023 needs metric iou, which needs localisation masks .*; make it with: gazebench run"),
    ],
)
def test_shamsul2023_refuses_a_missing_ingredient_in_one_line(tmp_path, methods, metrics, message):
    run = write_run(tmp_path / "run", "densenet121", methods, metrics, localisation)
    with pytest.raises(UserError, match=message):
        paper_tables("shamsul2023", [run])


def agreement(model):
    def values(method, metric, i):
        if metric == "kl":
            return (0.5 if model == "mimic_guided" else 2.0) + 0.01 * i
        return (1.5 if model == "mimic_guided" else 0.5) + 0.01 * i

    return values


def test_mimic2023_sets_our_relative_change_beside_the_papers(tmp_path):
    plain = write_run(tmp_path / "plain", "densenet121", ("gradcam", "saliency"), ("kl", "nss"), agreement("densenet121"))
    guided = write_run(tmp_path / "guided", "mimic_guided", ("gradcam",), ("kl", "nss"), agreement("mimic_guided"))
    numbers = paper_tables("mimic2023", [plain, guided], out=tmp_path / "out")["mimic2023_gaze_agreement"]
    kl_plain, kl_guided = 2.0 + 0.055, 0.5 + 0.055  # means over i = 0..11
    nss_plain, nss_guided = 0.5 + 0.055, 1.5 + 0.055
    row = numbers.iloc[0]
    assert list(numbers["method"]) == ["gradcam"]  # the only method both runs hold
    assert row["kl_change"] == pytest.approx((kl_guided - kl_plain) / kl_plain) and row["nss_change"] == pytest.approx((nss_guided - nss_plain) / nss_plain)
    assert row["kl_change_paper"] == -0.90 and row["nss_change_paper"] == 2.16 and row["n"] == 12
    md = (tmp_path / "out" / "mimic2023_gaze_agreement.md").read_text()
    lines = md.splitlines()
    assert lines[2] == (
        "| method | KL densenet121 [95% CI] | KL mimic_guided [95% CI] | KL change | KL change (paper) "
        "| NSS densenet121 [95% CI] | NSS mimic_guided [95% CI] | NSS change | NSS change (paper) | n |"
    )
    cells = lines[4].strip("| ").split(" | ")
    assert cells[0] == "gradcam" and CI.match(cells[1]) and CI.match(cells[2]) and CI.match(cells[5]) and CI.match(cells[6])
    assert cells[3] == f"{100 * (kl_guided - kl_plain) / kl_plain:+.0f}%" and cells[4] == "-90%"
    assert cells[7] == f"{100 * (nss_guided - nss_plain) / nss_plain:+.0f}%" and cells[8] == "+216%" and cells[9] == "12"


def test_mimic2023_refuses_without_the_guided_run(tmp_path):
    plain = write_run(tmp_path / "plain", "densenet121", ("gradcam",), ("kl", "nss"), agreement("densenet121"))
    with pytest.raises(UserError, match=r"^tables --paper mimic2023 needs a run of model mimic_guided; make it with: gazebench run --model mimic_guided --methods gradcam --out DIR$"):
        paper_tables("mimic2023", [plain])


def test_the_cli_writes_md_csv_tex_and_refuses_in_one_line_with_exit_2_writing_nothing(tmp_path):
    run = write_run(tmp_path / "run", "densenet121", SHAMSUL, ("iou", "hit_rate"), localisation)
    result = CliRunner().invoke(main, ["tables", "--paper", "shamsul2023", str(run), "--out", str(tmp_path / "tables")])
    assert result.exit_code == 0, result.output
    assert "| densenet121 | LRP | all classes |" in result.output and result.output.endswith(f"wrote 3 files to {tmp_path / 'tables'}\n")
    assert sorted(path.name for path in (tmp_path / "tables").iterdir()) == ["shamsul2023_localisation.csv", "shamsul2023_localisation.md", "shamsul2023_localisation.tex"]
    for paper, runs, words in (
        ("kim2099", [run], "unknown paper 'kim2099'; tables exist for: karargyris2021, kim2022, mimic2023, shamsul2023, watanabe2022"),
        ("mimic2023", [run], "needs a run of model mimic_guided"),
        ("shamsul2023", [tmp_path / "nowhere"], "holds no score rows"),
    ):
        refused = CliRunner().invoke(main, ["tables", "--paper", paper, *map(str, runs), "--out", str(tmp_path / "refused")])
        assert refused.exit_code == 2 and "Traceback" not in refused.output, refused.output
        assert refused.stderr.count("\n") == 1 and refused.stderr.startswith("gazebench: error: ") and words in refused.stderr, refused.stderr
        assert not (tmp_path / "refused").exists()
