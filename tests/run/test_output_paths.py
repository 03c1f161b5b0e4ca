"""Output paths are checked before any work, and a failed write is one line that says what was kept.

The read-only and full-disk cases use a real file system (a small tmpfs, mounted read-only or
filled up) where the test may mount one (root, and mounting allowed); permission bits alone
prove nothing for root.  The same failure injected into the writer runs everywhere.
"""

import contextlib
import errno
import os
import subprocess

import pytest
from click.testing import CliRunner

from gazebench.cli import main
from gazebench.protocol import REFERENCE_MAPS


def run_args(out, root, checkpoint, *extra):
    return ["run", "--model", "unet_gaze", "--data", "synth", "--root", str(root), "--split", "all", "--checkpoint", str(checkpoint),
            "--methods", "saliency", "--metrics", "nss,cc", "--batch-size", "2", "--limit", "4", "--out", str(out), *extra]


def invoke(args):
    return CliRunner().invoke(main, args)


def one_error_line(result) -> str:
    """The one error line (progress bars before it are fine), exit status 2, no traceback."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.replace("\r", "\n").splitlines() if "gazebench: error: " in line]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0][lines[0].index("gazebench: error: ") :]


@contextlib.contextmanager
def tmpfs(folder, size: str, read_only: bool = False):
    """A real, small file system at ``folder`` (skips the test where mounting is not allowed)."""
    folder.mkdir()
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], check=False, capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a test file system here ({mounted.stderr.strip() or 'mount failed'}); needs root where mounting is allowed")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_out_that_is_a_file_is_refused_and_left_alone(tmp_path, tiny_synth, random_checkpoint):
    out = tmp_path / "results.txt"
    out.write_text("mine")
    line = one_error_line(invoke(run_args(out, tiny_synth, random_checkpoint)))
    assert f"--out {out} is an existing file, not a folder" in line
    assert out.read_text() == "mine"


def test_out_below_a_file_is_refused(tmp_path, tiny_synth, random_checkpoint):
    (tmp_path / "file").write_text("x")
    line = one_error_line(invoke(run_args(tmp_path / "file" / "run", tiny_synth, random_checkpoint)))
    assert "is a file, not a folder" in line


def test_read_only_out_is_refused_before_the_data_are_opened(tmp_path, random_checkpoint):
    with tmpfs(tmp_path / "ro", "1m", read_only=True) as folder:
        # the data folder does not exist: the output is checked first, so its error is the one reported
        line = one_error_line(invoke(run_args(folder / "run", tmp_path / "no-such-data", random_checkpoint)))
    assert f"--out {folder / 'run'} cannot be written (read-only file system in {folder})" in line


def test_full_disk_is_one_line_and_the_same_command_resumes_once_there_is_space(tmp_path, tiny_synth, random_checkpoint):
    with tmpfs(tmp_path / "small", "200k") as folder:
        out = folder / "run"
        line = one_error_line(invoke(run_args(out, tiny_synth, random_checkpoint)))
        assert f"cannot write to {out}: no space left on device" in line
        assert "the same command resumes" in line
        assert not list(out.rglob("*.tmp")), "no half-written file is left"
        subprocess.run(["mount", "-o", "remount,size=64m", str(folder)], check=True)
        resumed = invoke(run_args(out, tiny_synth, random_checkpoint))
        assert resumed.exit_code == 0, resumed.output
        assert (out / "leaderboard.csv").is_file()


def test_a_write_failing_mid_run_keeps_the_finished_shards(monkeypatch, tmp_path, tiny_synth, random_checkpoint):
    from gazebench.run import store

    out = tmp_path / "run"
    original, writes = store.write_atomic, {"shards": 0}

    def failing_third_shard(path, data):
        if path.parent.name == "scores":
            writes["shards"] += 1
            if writes["shards"] == 3:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        original(path, data)

    monkeypatch.setattr(store, "write_atomic", failing_third_shard)
    line = one_error_line(invoke(run_args(out, tiny_synth, random_checkpoint)))
    assert line == f"gazebench: error: cannot write to {out}: no space left on device; the finished shards are kept in {out}; free space or fix the folder, then the same command resumes"
    kept = {shard: shard.stat().st_mtime_ns for shard in (out / "scores").glob("*.parquet")}
    assert len(kept) == 2
    monkeypatch.setattr(store, "write_atomic", original)
    assert invoke(run_args(out, tiny_synth, random_checkpoint)).exit_code == 0
    assert all(shard.stat().st_mtime_ns == stamp for shard, stamp in kept.items()), "finished shards are reused, not recomputed"
    assert len(list((out / "scores").glob("*.parquet"))) == 2 * (1 + len(REFERENCE_MAPS))  # 2 batches x (saliency + the reference maps)
