"""The README's numbers come from the main command: reports/readme_numbers.py writes them, and they must not drift."""

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from gazebench.cli import main as gazebench
from reports import readme_numbers

CONTROL = {"own": 1.2, "others": 1.0, "n": 3, "higher": 2 / 3, "p": 0.125}


def fake_run(folder):
    """A finished run directory in the main command's layout, with marks chosen to exercise every sentence."""
    rows = [  # method, metric, mean, role, vs_best, vs_centre_bias
        ("a", "auc_shuffled", 0.56, "method", "best", "better"), ("b", "auc_shuffled", 0.52, "method", "ns", "ns"),
        ("c", "auc_shuffled", 0.45, "method", "worse", "worse"), ("centre_bias", "auc_shuffled", 0.50, "floor", "worse", "-"),
        ("b", "hit_rate", 0.9, "method", "best", "better"), ("a", "hit_rate", 0.8, "method", "ns", "better"),
        ("c", "hit_rate", 0.4, "method", "worse", "ns"), ("centre_bias", "hit_rate", 0.5, "floor", "worse", "-"),
        ("a", "iou", 0.30, "method", "best", "worse"), ("b", "iou", 0.25, "method", "ns", "worse"),
        ("c", "iou", 0.10, "method", "worse", "worse"), ("centre_bias", "iou", 0.35, "floor", "better", "-"),
        ("uniform", "iou", float("nan"), "floor", "-", "-"),
    ]
    rows += [(method, metric, 0.5, "method", "ns", "better" if (method, metric) == ("c", "nss") else "worse") for metric in ("cc", "nss", "auc_judd") for method in "abc"]
    rows += [("centre_bias", metric, 0.6, "floor", "better", "-") for metric in ("cc", "nss", "auc_judd")]
    board = pd.DataFrame(rows, columns=["method", "metric", "mean", "role", "vs_best", "vs_centre_bias"])
    folder.mkdir()
    board.to_csv(folder / "leaderboard.csv", index=False)
    table = ["| metric | method | mean |", "|---|---|---|"] + [f"| {r.metric} ↑ | {r.method} | {r.mean:.4f} |" for r in board.itertuples()]
    (folder / "leaderboard.md").write_text("\n".join(table) + "\n\nnotes\n")
    pd.DataFrame({"model": "m", "method": ["a", "b", "c", "a"], "target": ["all", "all", "all", "CHF"], "agreement": [0.5, 0.3, 0.2, 0.9],
                  "chance": [0.25, 0.25, 0.25, 0.3]}).to_csv(folder / "regions_agreement.csv", index=False)
    report = {"seed": 0, "best_epoch": 3, "test_auroc": {"Normal": 0.9, "CHF": 1.0}, "test_auroc_ci95": {"Normal": [0.8, 0.95], "CHF": [1.0, 1.0]}, "test_mean_auroc": 0.95}
    (folder / "model.report.yaml").write_text(yaml.safe_dump(report, sort_keys=False))
    config = {"data": {"split": "test", "images": 3}, "model": {"name": "unet_gaze", "checkpoint": str(folder / "model.pt")}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return folder


def readme_with_blocks(path, body="stale 0.123\n"):
    blocks = "\n".join(f"<!-- generated: {name} -->\n{body}<!-- /generated -->\n" for name in readme_numbers.BLOCKS)
    path.write_text(f"# title\n\nhand-written\n\n{blocks}\nthe end\n")
    return path


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(readme_numbers, "model_control", lambda config: CONTROL)  # needs a real model: the slow test runs it
    return fake_run(tmp_path / "run")


def test_the_readme_marks_every_generated_block_once():
    text = readme_numbers.README.read_text()
    for name in readme_numbers.BLOCKS:
        assert text.count(f"<!-- generated: {name} -->") == 1, name
    assert text.count("<!-- /generated -->") == len(readme_numbers.BLOCKS)


def test_findings_follow_the_marks_of_the_run(run_dir):
    text = " ".join(readme_numbers.generated_blocks(run_dir)["what-it-says"].split())
    assert "`a` beats the centre-bias floor significantly; `b` is `ns` against it; `c` is significantly worse (the highest, `a`, 0.560; centre bias 0.500)" in text
    assert "on `nss`, `c` beats the centre-bias map significantly" in text
    assert "`b` and `a` 0.80-0.90, significantly better than centre bias; `c` 0.40, `ns` against it" in text
    assert "highest for `a` (0.30) and `b` (0.25) (not significantly different from each other), against 0.10 for the others" in text
    assert "agrees with the gaze's for 20.0%-50.0% of its maps (the highest, `a`, 50.0%, against 25.0% expected by chance)" in text


def test_the_model_paragraph_and_the_excerpt_quote_the_report_and_the_printed_leaderboard(run_dir):
    blocks = readme_numbers.generated_blocks(run_dir)
    model = " ".join(blocks["model-auroc"].split())
    assert "selects epoch 3 on dev and reaches a one-vs-rest AUROC of 0.900 [0.800, 0.950] for Normal and 1.000 [1.000, 1.000] for CHF on the 3 test images (mean 0.950)" in model
    assert "mean NSS 1.20 vs. 1.00 over the 3 images with a defined value, higher for 67% of them, Wilcoxon signed-rank p = 0.12" in model
    excerpt = blocks["leaderboard-excerpt"]
    assert "6 metrics for 3 methods and 2 floors" in " ".join(excerpt.split())
    assert "| iou ↑ | uniform |" in excerpt and "| cc ↑ |" not in excerpt and "notes" not in excerpt


def test_check_prints_the_difference_and_fails_then_a_rewrite_makes_it_pass(run_dir, tmp_path, capsys):
    readme = readme_with_blocks(tmp_path / "README.md")
    before = readme.read_text()
    assert readme_numbers.main([str(run_dir), "--readme", str(readme), "--check"]) == 1
    out = capsys.readouterr().out
    assert "-stale 0.123" in out and "+What it says: on the shuffled AUC" in out and "python reports/readme_numbers.py" in out
    assert readme.read_text() == before  # --check writes nothing
    assert readme_numbers.main([str(run_dir), "--readme", str(readme)]) == 0
    assert "stale" not in readme.read_text() and readme.read_text().startswith("# title\n\nhand-written\n") and readme.read_text().endswith("\nthe end\n")
    assert readme_numbers.main([str(run_dir), "--readme", str(readme), "--check"]) == 0


@pytest.mark.parametrize("breakage, message", [
    ("marker", "README.md has 0 `<!-- generated: what-it-says -->` blocks, not 1"),
    ("run file", "has no leaderboard.csv: pass the directory of a finished `gazebench run --model unet_gaze --methods all`"),
    ("other run", "is a run of unet_gaze on the dev split: the README quotes `gazebench run --model unet_gaze --methods all`"),
])
def test_a_missing_marker_or_a_wrong_run_exits_2_with_one_line(run_dir, tmp_path, capsys, breakage, message):
    readme = readme_with_blocks(tmp_path / "README.md")
    if breakage == "marker":
        readme.write_text(readme.read_text().replace("<!-- generated: what-it-says -->\n", ""))
    elif breakage == "run file":
        (run_dir / "leaderboard.csv").unlink()
    else:
        (run_dir / "config.yaml").write_text((run_dir / "config.yaml").read_text().replace("split: test", "split: dev"))
    assert readme_numbers.main([str(run_dir), "--readme", str(readme), "--check"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.slow
def test_the_readme_quotes_what_the_main_command_produces(trained_unet_gaze_home, tmp_path, monkeypatch, capsys):
    """`gazebench run --model unet_gaze --methods all` on the trained embedded model (about 1.5 min on 2 CPU cores)."""
    monkeypatch.setenv("GAZEBENCH_HOME", str(trained_unet_gaze_home))
    out = tmp_path / "unet_gaze-synth-test-seed0"
    result = CliRunner().invoke(gazebench, ["run", "--model", "unet_gaze", "--methods", "all", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert readme_numbers.main([str(out), "--check"]) == 0, capsys.readouterr().out
