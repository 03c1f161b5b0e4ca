"""The run directory: config.yaml, Parquet score and region-share shards, run.log; resumable and atomic.

The run loop ends here: it writes what it computed, and ``gazebench.aggregate`` reads it back.
Each (batch, method) pair is one shard, written to a temporary file and renamed, so a shard
on disk is always complete; running again with the same directory keeps finished shards and
computes the missing ones.  A directory holding a run with a different configuration is
refused rather than mixed.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import yaml

from gazebench.atomic import write_atomic
from gazebench.errors import UserError

# one row per (image, target, method, metric): the columns of every score shard, in order
ROW_SCHEMA = (
    "dataset", "split", "image_id", "patient_id", "reader", "target", "label", "pred", "prob", "correct",
    "model", "checkpoint", "method", "method_params", "metric", "value", "protocol",
)
# the key columns of every region-share shard (one row per map), then one float column per region
REGION_KEYS = ("image_id", "patient_id", "target", "correct", "model", "method")
GAZE_METHOD = "gaze"  # the ``method`` of the region-share rows that hold the gaze density's shares
# config keys that may differ when resuming: which methods run, and where
RESUMABLE_DIFFERENCES = ("methods", "device", "out")


class RunStore:
    def __init__(self, out: Path):
        self.out = Path(out)
        self.scores = self.out / "scores"
        self.regions = self.out / "regions"  # region shares per (batch, method), for the region analysis

    def open(self, config: dict) -> None:
        """Create the run directory, or check that an existing one holds the same run."""
        config_path = self.out / "config.yaml"
        if config_path.is_file():
            previous = yaml.safe_load(config_path.read_text())
            differing = sorted(k for k in set(config) | set(previous) if k not in RESUMABLE_DIFFERENCES and config.get(k) != previous.get(k))
            if differing:
                raise UserError(f"{self.out} holds a run with a different {', '.join(differing)}; choose another --out or delete it")
            config = {**config, "methods": {**previous.get("methods", {}), **config["methods"]}}
        elif self.out.exists() and any(self.out.iterdir()):
            raise UserError(f"{self.out} exists and is not a gazebench run directory; choose another --out")
        self.scores.mkdir(parents=True, exist_ok=True)
        write_atomic(config_path, yaml.safe_dump(config, sort_keys=False))

    def shard_path(self, batch_index: int, method: str) -> Path:
        return self.scores / f"batch{batch_index:05d}-{method}.parquet"

    def has(self, batch_index: int, method: str) -> bool:
        return self.shard_path(batch_index, method).is_file()

    def write_shard(self, batch_index: int, method: str, rows: pd.DataFrame) -> None:
        write_atomic(self.shard_path(batch_index, method), rows.to_parquet(index=False))

    def read_scores(self) -> pd.DataFrame:
        return _read_shards(self.scores)

    def region_shard_path(self, batch_index: int, method: str) -> Path:
        return self.regions / f"batch{batch_index:05d}-{method}.parquet"

    def write_region_shard(self, batch_index: int, method: str, rows: pd.DataFrame) -> None:
        """Written before the method's score shard, so a finished score shard implies its region shard."""
        write_atomic(self.region_shard_path(batch_index, method), rows.to_parquet(index=False))

    def read_region_shares(self) -> pd.DataFrame:
        return _read_shards(self.regions)

    def read_config(self) -> dict | None:
        """config.yaml as a dict, or None when the directory holds no run."""
        path = self.out / "config.yaml"
        return yaml.safe_load(path.read_text()) if path.is_file() else None

    def log(self, message: str) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        with open(self.out / "run.log", "a") as stream:
            stream.write(f"{stamp} {message}\n")


def _read_shards(folder: Path) -> pd.DataFrame:
    shards = sorted(folder.glob("*.parquet"))
    if not shards:
        return pd.DataFrame()
    return pd.concat([pd.read_parquet(shard) for shard in shards], ignore_index=True)
