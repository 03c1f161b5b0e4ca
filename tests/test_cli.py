"""The CLI's promises: what it lists, and one-line errors with exit status 2 and nothing written."""

import subprocess
import sys

import pytest
from click.testing import CliRunner

from gazebench.cli import main
from gazebench.registry import MODELS


def invoke(*args):
    return CliRunner().invoke(main, list(args))


def test_list_shows_every_registered_name():
    result = invoke("list")
    assert result.exit_code == 0
    for name in ("saliency", "gradcam", "deeplift", "conductance", "gradshap", "smoothgrad", "ssim", "kl", "nss", "cc", "unet_gaze", "synth", "egd"):
        assert name in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "nope"], "unknown model 'nope'; choose one of: " + ", ".join(MODELS.names())),
        (["--model", "unet_gaze", "--methods", "saliency,nope"], "unknown method 'nope'; choose one of: conductance, deeplift, eigencam, gradcam"),
        (["--model", "unet_gaze", "--metrics", "nope"], "unknown metric 'nope'; choose one of: auc_judd, auc_shuffled, cc, cc_cb, hit_rate, info_gain, iou, kl, kl_cb, nss, nss_cb, sim, sim_cb, ssim"),
        (["--model", "unet_gaze", "--data", "nope"], "unknown dataset 'nope'; choose one of: egd, mimic, reflacx, synth"),
        (["--model", "unet_gaze", "--split", "validate"], "Invalid value for '--split': 'validate' is not one of 'train', 'dev', 'test', 'all'."),
    ],
)
def test_unknown_names_fail_with_the_choices(tmp_path, args, message):
    out = tmp_path / "run"
    result = invoke("run", *args, "--out", str(out))
    assert result.exit_code == 2
    assert result.output.strip() == f"gazebench: error: {message}" or message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_missing_data_directory(tmp_path):
    out = tmp_path / "run"
    result = invoke("run", "--model", "unet_gaze", "--data", "egd", "--root", str(tmp_path / "nowhere"), "--out", str(out))
    assert result.exit_code == 2
    assert "does not exist" in result.output and "--root" in result.output
    assert not out.exists()


def test_unreadable_checkpoint(tmp_path, tiny_synth):
    garbage = tmp_path / "model.pt"
    garbage.write_bytes(b"not a checkpoint")
    out = tmp_path / "run"
    result = invoke("run", "--model", "unet_gaze", "--data", "synth", "--root", str(tiny_synth), "--split", "all", "--checkpoint", str(garbage), "--out", str(out))
    assert result.exit_code == 2
    assert f"cannot read checkpoint {garbage}" in result.output
    assert not out.exists()


def test_real_data_without_checkpoint_names_the_train_command(tmp_path, tiny_synth):
    result = invoke("run", "--model", "unet_gaze", "--data", "egd", "--root", str(tiny_synth), "--split", "all", "--out", str(tmp_path / "run"))
    assert result.exit_code == 2
    assert "gazebench train --model unet_gaze --data egd" in result.output


def test_console_error_has_no_traceback(tmp_path):
    process = subprocess.run([sys.executable, "-m", "gazebench.cli", "run", "--model", "nope"], capture_output=True, text=True)
    assert process.returncode == 2
    assert "Traceback" not in process.stderr
    assert process.stderr.strip().startswith("gazebench: error: unknown model 'nope'")


def test_data_synth_writes_the_egd_layout(tmp_path):
    result = invoke("data", "synth", "--out", str(tmp_path / "synth"), "--n", "4", "--seed", "1")
    assert result.exit_code == 0, result.output
    assert {"master_sheet.csv", "fixations.csv", "bounding_boxes.csv", "audio_segmentation_transcripts", "files"} <= {p.name for p in (tmp_path / "synth").iterdir()}
    again = invoke("data", "synth", "--out", str(tmp_path / "synth"), "--n", "4")
    assert again.exit_code == 2 and "already exists and is not empty" in again.output


def test_data_check_prints_the_report_and_exits_2_when_the_copy_is_unusable(tmp_path):
    from tests.fixtures import egd_layout

    egd_layout.write_egd(tmp_path / "egd")
    good = CliRunner().invoke(main, ["data", "check", "--dataset", "egd", "--root", str(tmp_path / "egd")])
    assert good.exit_code == 0, good.output
    assert "fixations off the displayed image (-1, dropped)" in good.output and good.output.rstrip().endswith("usable: yes")
    (tmp_path / "egd" / "fixations.csv").unlink()
    bad = CliRunner().invoke(main, ["data", "check", "--dataset", "egd", "--root", str(tmp_path / "egd")])
    assert bad.exit_code == 2
    assert "fixations.csv" in bad.output and "usable: no" in bad.output
    assert bad.output.rstrip().splitlines()[-1].startswith("gazebench: error: egd at")
