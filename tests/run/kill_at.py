"""Run the gazebench CLI and SIGKILL it at a chosen point (tests/run/test_kill_and_resume.py).

    python tests/run/kill_at.py POINT N -- run --model ... --out DIR

POINT is ``attribution`` (inside the N-th method call, before its maps exist), ``shard`` (after
the N-th score shard is complete: between shards), ``torn-shard`` (half-way through writing the
N-th score shard's temporary file) or ``leaderboard`` (half-way through writing leaderboard.csv).
The kill is the process's own ``SIGKILL``: no handler, no cleanup, as ``kill -9`` would do.
"""

import os
import signal
import sys
import tempfile
from pathlib import Path


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def torn_write(path: Path, data) -> None:
    """What write_atomic leaves when killed mid-write: a half-written temporary file, no rename."""
    data = data.encode() if isinstance(data, str) else data
    handle, _ = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.write(handle, data[: len(data) // 2])
    os.fsync(handle)
    die()


def main() -> None:
    point, count, args = sys.argv[1], int(sys.argv[2]), sys.argv[4:]
    calls = {"n": 0}

    def counted() -> bool:
        calls["n"] += 1
        return calls["n"] == count

    if point == "attribution":
        from gazebench.methods import base

        original_call = base.Method.__call__

        def call(self, *args, **kwargs):
            if counted():
                die()
            return original_call(self, *args, **kwargs)

        base.Method.__call__ = call
    elif point in ("shard", "torn-shard"):
        from gazebench.run import store

        original_write = store.write_atomic

        def write(path, data):
            is_score_shard = path.parent.name == "scores"
            if is_score_shard and point == "torn-shard" and counted():
                torn_write(path, data)
            original_write(path, data)
            if is_score_shard and point == "shard" and counted():
                die()

        store.write_atomic = write
    elif point == "leaderboard":
        from gazebench.report import run_outputs

        original_write = run_outputs.write_atomic

        def write(path, data):
            if path.name == "leaderboard.csv":
                torn_write(path, data)
            original_write(path, data)

        run_outputs.write_atomic = write
    else:
        raise SystemExit(f"unknown kill point {point}")
    from gazebench.cli import main as cli

    cli(args)


if __name__ == "__main__":
    main()
