"""kill -9 at any point, then the same command: the same rows and leaderboard as a run never killed.

Each kill is the process's own SIGKILL (tests/run/kill_at.py), at a chosen point: inside an
attribution, between two shards, half-way through a shard's write, half-way through the
leaderboard's write; one more is a SIGKILL sent from outside at whatever moment the run has
reached.  Determinism (the same command twice into two directories gives byte-identical sorted
rows and leaderboard files) is what makes the comparison exact.
"""

import io
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

KILL_AT = Path(__file__).with_name("kill_at.py")
REPOSITORY = Path(__file__).resolve().parents[2]
OUTPUTS = ["leaderboard.csv", "leaderboard.md", "leaderboard.tex", "comparisons.csv", "breakdown.csv", "regions.csv"]


def command(out, tiny_synth, checkpoint):
    return ["run", "--model", "unet_gaze", "--data", "synth", "--root", str(tiny_synth), "--split", "all", "--checkpoint", str(checkpoint),
            "--methods", "saliency,gradcam", "--batch-size", "2", "--limit", "6", "--out", str(out)]


def gazebench(args, **kwargs):
    return subprocess.run([sys.executable, "-m", "gazebench.cli", *args], check=False, cwd=REPOSITORY, capture_output=True, text=True, **kwargs)


def sorted_rows(out: Path) -> bytes:
    """The run's score rows, in a canonical order, as Parquet bytes."""
    rows = pd.read_parquet(out / "scores")
    rows = rows.sort_values(list(rows.columns.drop("value"))).reset_index(drop=True)
    buffer = io.BytesIO()
    rows.to_parquet(buffer, index=False)
    return buffer.getvalue()


def log_body(out: Path) -> list[str]:
    return (out / "run.log").read_text().splitlines()[1:]  # the first line names the directory


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_synth, random_checkpoint):
    out = tmp_path_factory.mktemp("kill") / "uninterrupted"
    result = gazebench(command(out, tiny_synth, random_checkpoint))
    assert result.returncode == 0, result.stderr
    return out


def test_same_command_twice_gives_byte_identical_rows_and_leaderboards(uninterrupted, tmp_path, tiny_synth, random_checkpoint):
    again = tmp_path / "again"
    assert gazebench(command(again, tiny_synth, random_checkpoint)).returncode == 0
    assert sorted_rows(again) == sorted_rows(uninterrupted)
    for name in OUTPUTS:
        assert (again / name).read_bytes() == (uninterrupted / name).read_bytes(), name
    assert log_body(again) == log_body(uninterrupted)


@pytest.mark.parametrize("point, count", [("attribution", 3), ("shard", 5), ("torn-shard", 2), ("leaderboard", 1)])
def test_killed_then_rerun_equals_the_uninterrupted_run(point, count, uninterrupted, tmp_path, tiny_synth, random_checkpoint):
    out = tmp_path / "killed"
    killed = subprocess.run([sys.executable, str(KILL_AT), point, str(count), "--", *command(out, tiny_synth, random_checkpoint)], check=False, cwd=REPOSITORY, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    if point in ("torn-shard", "leaderboard"):
        assert list(out.rglob(".*.tmp")), "the kill should have left a half-written temporary file"
    resumed = gazebench(command(out, tiny_synth, random_checkpoint))
    assert resumed.returncode == 0, resumed.stderr
    assert sorted_rows(out) == sorted_rows(uninterrupted)
    for name in OUTPUTS:
        assert (out / name).read_bytes() == (uninterrupted / name).read_bytes(), name
    assert log_body(out) == log_body(uninterrupted)
    assert not list(out.rglob("*.tmp")), "partial writes must be cleaned up, never read"


def test_sigkill_from_outside_mid_run_then_rerun(uninterrupted, tmp_path, tiny_synth, random_checkpoint):
    out = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "gazebench.cli", *command(out, tiny_synth, random_checkpoint)], cwd=REPOSITORY, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list((out / "scores").glob("*.parquet"))) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    shards = len(list((out / "scores").glob("*.parquet")))
    assert 3 <= shards < 12, f"the kill should land mid-run ({shards} of 12 shards)"
    assert gazebench(command(out, tiny_synth, random_checkpoint)).returncode == 0
    assert sorted_rows(out) == sorted_rows(uninterrupted)
    assert (out / "leaderboard.csv").read_bytes() == (uninterrupted / "leaderboard.csv").read_bytes()
    assert log_body(out) == log_body(uninterrupted)


def test_a_second_run_on_the_same_directory_is_refused(tmp_path, tiny_synth, random_checkpoint):
    from gazebench.outputs import exclusive

    out = tmp_path / "busy"
    with exclusive(out):  # another process holding the run's lock
        refused = gazebench(command(out, tiny_synth, random_checkpoint))
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [f"gazebench: error: another gazebench process is writing to {out}; wait for it to finish or choose another --out"]
    assert not (out / "config.yaml").exists()


def test_a_killed_holder_does_not_leave_the_directory_locked(tmp_path, tiny_synth, random_checkpoint):
    out = tmp_path / "was-busy"
    holder = f"import os, signal; from gazebench.outputs import exclusive\nwith exclusive(__import__('pathlib').Path({str(out)!r})):\n    os.kill(os.getpid(), signal.SIGKILL)"
    assert subprocess.run([sys.executable, "-c", holder], check=False, cwd=REPOSITORY).returncode == -signal.SIGKILL
    assert (out / ".lock").is_file()
    assert gazebench(command(out, tiny_synth, random_checkpoint)).returncode == 0
    assert (out / "leaderboard.csv").is_file()


def test_lock_is_the_kernels_not_a_pid_file(tmp_path):
    """Two holders in one process are refused too (flock is per open file description)."""
    from gazebench.errors import UserError
    from gazebench.outputs import exclusive

    with exclusive(tmp_path / "x"), pytest.raises(UserError, match="another gazebench process"), exclusive(tmp_path / "x"):
        pass
    assert not (tmp_path / "x").exists(), "a folder the lock created and nothing else used is removed"
