"""Atomic writes: complete content or the old one, and the permissions of an ordinary new file."""

import os
import stat

from gazebench.atomic import write_atomic


def test_written_files_are_readable_by_others_as_the_umask_allows(tmp_path):
    previous = os.umask(0o022)
    try:
        write_atomic(tmp_path / "report.html", "<html></html>")
        assert stat.S_IMODE((tmp_path / "report.html").stat().st_mode) == 0o644  # not mkstemp's 0600
        os.umask(0o077)
        write_atomic(tmp_path / "private.csv", b"a,b\n")
        assert stat.S_IMODE((tmp_path / "private.csv").stat().st_mode) == 0o600
    finally:
        os.umask(previous)
    assert (tmp_path / "report.html").read_text() == "<html></html>" and not list(tmp_path.glob(".*.tmp"))
