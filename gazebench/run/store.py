"""The run directory: config.yaml, Parquet score, region-share and prediction shards, run.log; resumable and atomic.

The run loop ends here: it writes what it computed, and ``gazebench.aggregate`` reads it back.
Each (batch, method) pair is one shard, written to a temporary file and renamed, so a shard
on disk is always complete; running again with the same directory keeps finished shards and
computes what is missing: shards not written yet, and metrics a shard does not hold yet (a run
grows when methods or metrics are added).  A directory holding a run with other settings is
refused rather than mixed.  What a batch could not score (unreadable images, images without a
class to explain) and what a method warned about are kept as small JSON notes beside the shards,
so that ``run.log`` describes the directory as a whole, whatever the history of invocations.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from gazebench.atomic import write_atomic
from gazebench.errors import UserError
from gazebench.outputs import LOCK_NAME

# one row per (image, target, method, metric): the columns of every score shard, in order
ROW_SCHEMA = (
    "dataset", "split", "image_id", "patient_id", "reader", "target", "label", "pred", "prob", "correct",
    "model", "checkpoint", "method", "method_params", "metric", "value", "protocol",
)
# one row per (image, model output): every scored image's predicted probability and true label, for AUROC tables
PREDICTION_SCHEMA = ("dataset", "split", "image_id", "patient_id", "model", "checkpoint", "class", "label", "prob")
# the key columns of every region-share shard (one row per map), then one float column per region
REGION_KEYS = ("image_id", "patient_id", "target", "correct", "model", "method")
# the maps of the run's first images are kept (uint8, min-max per map) for the figures that show maps
EXAMPLE_IMAGES = 32
SHARD_METRICS = b"gazebench_metrics"  # Parquet metadata key: the metrics a score shard was scored with
GAZE_METHOD = "gaze"  # the ``method`` of the region-share rows that hold the gaze density's shares
# config keys that may differ when resuming: where and in what chunks it runs; methods and metrics may be added
RESUMABLE_DIFFERENCES = ("device", "out", "max_batch_elements")
GROWABLE = ("methods", "metrics")  # name -> settings; a new name is added, a changed setting refused


class RunStore:
    def __init__(self, out: Path):
        self.out = Path(out)
        self.scores = self.out / "scores"
        self.regions = self.out / "regions"  # region shares per (batch, method), for the region analysis
        self.predictions = self.out / "predictions"  # per batch: every image's probability of every class, and its labels
        self.maps = self.out / "maps"  # the first EXAMPLE_IMAGES images: radiograph and gaze on the grid, and every method's maps

    def open(self, config: dict) -> dict:
        """Create the run directory, or check that an existing one holds the same run; returns the stored config.

        Methods and metrics may be added to an existing run (the stored config lists the union);
        any other difference, or a method or metric whose settings changed, is refused.
        """
        config_path = self.out / "config.yaml"
        if config_path.is_file():
            previous = yaml.safe_load(config_path.read_text())
            fixed = [k for k in set(config) | set(previous) if k not in RESUMABLE_DIFFERENCES + GROWABLE]
            differing = sorted(k for k in fixed if config.get(k) != previous.get(k))
            for key in GROWABLE:
                old, new = previous.get(key) or {}, config.get(key) or {}
                differing += [f"{key[:-1]} {name}" for name in sorted(set(old) & set(new)) if old[name] != new[name]]
            if differing:
                raise UserError(f"{self.out} holds a run with other settings ({', '.join(differing)}); choose another --out, or delete it to start again")
            config = {**config, **{key: {**(previous.get(key) or {}), **(config.get(key) or {})} for key in GROWABLE}}
        elif self.out.exists() and any(entry.name != LOCK_NAME for entry in self.out.iterdir()):
            raise UserError(f"{self.out} exists and is not a gazebench run directory; choose another --out")
        self.scores.mkdir(parents=True, exist_ok=True)
        self.remove_partial_writes()
        write_atomic(config_path, yaml.safe_dump(config, sort_keys=False))
        return config

    def remove_partial_writes(self) -> None:
        """Delete the temporary files a killed run left (``write_atomic``'s ``.NAME.*.tmp``); the caller holds the run's lock."""
        for folder in (self.out, self.scores, self.regions, self.predictions, self.maps, self.out / "notes"):
            for leftover in folder.glob(".*.tmp") if folder.is_dir() else []:
                leftover.unlink(missing_ok=True)

    def shard_path(self, batch_index: int, method: str) -> Path:
        return self.scores / f"batch{batch_index:05d}-{method}.parquet"

    def has(self, batch_index: int, method: str) -> bool:
        return self.shard_path(batch_index, method).is_file()

    def shard_metrics(self, batch_index: int, method: str) -> set[str]:
        """The metrics a finished shard was scored with (empty when there is no shard), from its metadata."""
        path = self.shard_path(batch_index, method)
        if not path.is_file():
            return set()
        metadata = pq.read_schema(path).metadata or {}
        if SHARD_METRICS in metadata:
            return set(json.loads(metadata[SHARD_METRICS]))
        return set(pd.read_parquet(path, columns=["metric"]).metric)  # a shard written before the metadata

    def read_shard(self, batch_index: int, method: str) -> pd.DataFrame:
        return pd.read_parquet(self.shard_path(batch_index, method))

    def write_shard(self, batch_index: int, method: str, rows: pd.DataFrame, metrics: set[str] | None = None) -> None:
        """One (batch, method) shard; ``metrics`` (kept in its Parquet metadata; default: those in the rows)
        says what it was scored with, so that a shard without rows (no image to explain) still counts as done."""
        metrics = set(rows.metric) if metrics is None else metrics
        table = pa.Table.from_pandas(rows, preserve_index=False)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), SHARD_METRICS: json.dumps(sorted(metrics))})
        buffer = pa.BufferOutputStream()
        pq.write_table(table, buffer)
        write_atomic(self.shard_path(batch_index, method), buffer.getvalue().to_pybytes())

    def read_scores(self) -> pd.DataFrame:
        return _read_shards(self.scores)

    def region_shard_path(self, batch_index: int, method: str) -> Path:
        return self.regions / f"batch{batch_index:05d}-{method}.parquet"

    def write_region_shard(self, batch_index: int, method: str, rows: pd.DataFrame) -> None:
        """Written before the method's score shard, so a finished score shard implies its region shard."""
        write_atomic(self.region_shard_path(batch_index, method), rows.to_parquet(index=False))

    def read_region_shares(self) -> pd.DataFrame:
        return _read_shards(self.regions)

    def prediction_path(self, batch_index: int) -> Path:
        return self.predictions / f"batch{batch_index:05d}.parquet"

    def has_predictions(self, batch_index: int) -> bool:
        return self.prediction_path(batch_index).is_file()

    def write_predictions(self, batch_index: int, rows: pd.DataFrame) -> None:
        """One batch's predictions (PREDICTION_SCHEMA); a batch whose images were all unreadable has an empty shard."""
        write_atomic(self.prediction_path(batch_index), rows.to_parquet(index=False))

    def read_predictions(self) -> pd.DataFrame:
        return _read_shards(self.predictions)

    def maps_path(self, batch_index: int, name: str, is_input: bool = False) -> Path:
        """``batchNNNNN-<method>.npz`` (a method's maps) or ``batchNNNNN.<input>.npz`` (``radiograph``, ``gaze``)."""
        return self.maps / (f"batch{batch_index:05d}.{name}.npz" if is_input else f"batch{batch_index:05d}-{name}.npz")

    def write_maps(self, batch_index: int, name: str, image_ids: list[str], maps: np.ndarray, targets: list[str] | None = None, is_input: bool = False) -> None:
        """Maps [N, G, G] of ``image_ids`` (and the classes they explain), as uint8 scaled to each map's min-max.

        A method's maps are written before its score shard, so a finished run has the maps of its first images.
        """
        maps = np.nan_to_num(np.asarray(maps, dtype=np.float64))
        low, high = maps.min(axis=(1, 2)), maps.max(axis=(1, 2))
        span = np.where(high > low, high - low, 1.0)
        quantised = np.rint((maps - low[:, None, None]) / span[:, None, None] * 255).astype(np.uint8)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, image_ids=np.asarray(image_ids, dtype=str), targets=np.asarray(targets or [""] * len(image_ids), dtype=str), maps=quantised, low=low, high=high)
        write_atomic(self.maps_path(batch_index, name, is_input), buffer.getvalue())

    def has_maps(self, batch_index: int, name: str, is_input: bool = False) -> bool:
        return self.maps_path(batch_index, name, is_input).is_file()

    def read_maps(self) -> tuple[dict[str, list[dict]], dict[str, list[dict]]]:
        """(method -> contents of its map files, input -> contents): ``image_ids``, ``targets``, ``maps`` (float, back in [low, high])."""
        methods: dict[str, list[dict]] = {}
        inputs: dict[str, list[dict]] = {}
        for path in sorted(self.maps.glob("*.npz")) if self.maps.is_dir() else []:
            stem = path.name[: -len(".npz")]
            is_input = "-" not in stem
            name = stem.split(".", 1)[1] if is_input else stem.split("-", 1)[1]
            with np.load(path, allow_pickle=False) as stored:
                maps = stored["low"][:, None, None] + stored["maps"].astype(np.float64) / 255 * (stored["high"] - stored["low"])[:, None, None]
                (inputs if is_input else methods).setdefault(name, []).append({"image_ids": stored["image_ids"].tolist(), "targets": stored["targets"].tolist(), "maps": maps})
        return methods, inputs

    def read_config(self) -> dict | None:
        """config.yaml as a dict, or None when the directory holds no run."""
        path = self.out / "config.yaml"
        return yaml.safe_load(path.read_text()) if path.is_file() else None

    # notes: what the data and the methods said, kept so that run.log can be rebuilt from the directory
    def note_path(self, batch_index: int | None, method: str | None = None) -> Path:
        name = "data" if batch_index is None else f"batch{batch_index:05d}" + (f"-{method}" if method else "")
        return self.out / "notes" / f"{name}.json"

    def write_note(self, batch_index: int | None, note: dict, method: str | None = None) -> None:
        write_atomic(self.note_path(batch_index, method), json.dumps(note, sort_keys=True, indent=1))

    def read_notes(self) -> list[dict]:
        """Every note of the run, in file-name order (data first, then each batch and its methods)."""
        return [json.loads(path.read_text()) | {"file": path.stem} for path in sorted((self.out / "notes").glob("*.json"))]

    def skip_counts(self) -> Counter[str]:
        """Reason -> number of items the run could not score, over the whole directory."""
        counts: Counter[str] = Counter()
        for note in self.read_notes():
            counts.update({reason: int(count) for reason, count in note.get("skipped", {}).items()})
        return counts

    def write_log(self, lines: list[str]) -> None:
        """run.log, rewritten whole (never appended): it describes the directory, not one invocation."""
        write_atomic(self.out / "run.log", "".join(f"{line}\n" for line in lines))


def _read_shards(folder: Path) -> pd.DataFrame:
    shards = sorted(folder.glob("*.parquet"))
    if not shards:
        return pd.DataFrame()
    return pd.concat([pd.read_parquet(shard) for shard in shards], ignore_index=True)
