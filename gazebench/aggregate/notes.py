"""What a reader of a run's numbers must see beside them: the warnings and skips of its run.log.

run.log is rebuilt from the run directory by every invocation (``gazebench.run.runlog``), so its
``warning:`` and ``skipped:`` lines describe the directory as a whole; the report repeats them
under the leaderboard and the command line prints them after it.
"""

from __future__ import annotations

from pathlib import Path

ATTENTION = ("warning:", "skipped:", "left out:")


def attention_lines(run_dir: str | Path) -> list[str]:
    """run.log's warning, skip and left-out-method lines, in order (empty when there are none, or no run.log)."""
    path = Path(run_dir) / "run.log"
    if not path.is_file():
        return []
    return [line for line in path.read_text().splitlines() if line.startswith(ATTENTION)]
