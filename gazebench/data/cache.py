"""The preprocessed cache that ``gazebench data prepare`` builds and runs reuse.

One file per item (``items/<item key>.pt``: the ``Sample`` on the scoring grid -- resized
image, gaze densities, fixations, masks, boxes), written atomically, so an interrupted prepare
resumes where it stopped and a second prepare does no work.  The folder is keyed by dataset
and preprocessing parameters (grid, gaze convention and sigma, label set) plus the identity of
the copy (its path and the size and modification time of its tables), so a change in any of
them builds a new cache instead of serving stale samples:
``$GAZEBENCH_HOME/cache/<dataset>/<key>/``.  Files are loaded with ``weights_only=True``.
An item whose image file does not decode is not cached but counted and named in the summary
(and ``prepared.yaml``); a run reading the cache falls back to the reader for it, which skips
and counts it again (or stops, with ``--strict``).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
import yaml
from torch.utils.data import DataLoader
from tqdm import tqdm

from gazebench import paths
from gazebench.atomic import write_atomic
from gazebench.data.base import GazeDataset
from gazebench.data.data_use import write_data_use_notice
from gazebench.data.images import UnreadableImage
from gazebench.data.loading import UNREADABLE_REASON, Unreadable, item_image_id, unreadable_lines
from gazebench.data.sample import ReaderGaze, Sample
from gazebench.data.splits import write_splits

CACHE_VERSION = "1"
MANIFEST_FILE = "prepared.yaml"


def cache_parameters(dataset: GazeDataset) -> dict:
    """Everything a cached sample depends on."""
    return {
        "cache_version": CACHE_VERSION,
        "dataset": dataset.name,
        "manifest_version": dataset.manifest.version,
        "layout": dataset.manifest.layout,
        "root": str(Path(dataset.root).resolve()),
        "images_root": str(Path(dataset.images_root).resolve()),
        "grid": dataset.grid,
        "gaze": dataset.convention.describe() if dataset.convention else None,
        "labels": getattr(dataset, "label_set", None),
        "uncertain": getattr(dataset, "uncertain", None),
        "tables": _table_stamps(dataset),
    }


def _table_stamps(dataset: GazeDataset) -> dict[str, list[int]]:
    """(size, mtime) of each release table with a fixed path: an edited copy gets a new key."""
    stamps = {}
    for spec in dataset.manifest.tables.values():
        for relative in (spec.path, f"{spec.path}.gz"):  # PhysioNet serves some tables gzipped
            path = Path(dataset.root) / relative
            if "{" not in relative and path.is_file():
                stat = path.stat()
                stamps[relative] = [stat.st_size, stat.st_mtime_ns]
    return stamps


def cache_dir(dataset: GazeDataset) -> Path:
    parameters = cache_parameters(dataset)
    digest = hashlib.sha256(json.dumps(parameters, sort_keys=True).encode()).hexdigest()[:12]
    gaze = dataset.convention.describe() if dataset.convention else "nogaze"
    return paths.home() / "cache" / dataset.name / f"grid{dataset.grid}-{gaze}-{digest}"


# ---------------------------------------------------------------------------- one item on disk


def sample_to_record(sample: Sample) -> dict:
    record = {f.name: getattr(sample, f.name) for f in fields(Sample)}
    record["readers"] = {name: {"gaze": g.gaze, "fixations": g.fixations} for name, g in sample.readers.items()}
    return record


def record_to_sample(record: dict) -> Sample:
    record = dict(record)
    record["readers"] = {name: ReaderGaze(**g) for name, g in record["readers"].items()}
    return Sample(**record)


class SampleCache:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.items = self.folder / "items"

    def path(self, key: str) -> Path:
        return self.items / f"{key}.pt"

    def has(self, key: str) -> bool:
        return self.path(key).is_file()

    def load(self, key: str) -> Sample:
        return record_to_sample(torch.load(self.path(key), weights_only=True))

    def save(self, key: str, sample: Sample) -> None:
        buffer = io.BytesIO()
        torch.save(sample_to_record(sample), buffer)
        write_atomic(self.path(key), buffer.getvalue())


class CachedDataset(torch.utils.data.Dataset):
    """A reader whose items come from the cache when prepared (computed by the reader otherwise)."""

    def __init__(self, dataset: GazeDataset, cache: SampleCache):
        self.dataset, self.cache = dataset, cache

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Sample:
        key = self.dataset.item_key(index)
        return self.cache.load(key) if self.cache.has(key) else self.dataset[index]

    def __getattr__(self, name: str):
        return getattr(self.dataset, name)


def with_cache(dataset: GazeDataset) -> GazeDataset | CachedDataset:
    """``dataset`` served from its prepared cache when ``data prepare`` built one."""
    folder = cache_dir(dataset)
    return CachedDataset(dataset, SampleCache(folder)) if (folder / "items").is_dir() else dataset


# ---------------------------------------------------------------------------- data prepare


@dataclass
class PrepareReport:
    folder: Path
    items: int
    built: int
    reused: int
    seconds: float
    skips: dict
    unreadable: list[Unreadable] = field(default_factory=list)  # items not cached: their image does not decode

    def summary(self) -> str:
        lines = [
            f"cache: {self.folder}",
            f"items: {self.items} ({self.built} built, {self.reused} already cached) in {self.seconds:.1f} s",
        ]
        lines += [f"skipped: {count} {reason}" for reason, count in self.skips.items() if count]
        if self.unreadable:
            lines.append(f"skipped: {len(self.unreadable)} {UNREADABLE_REASON}; not cached, replace them and prepare again:")
            lines += [f"  {line}" for line in unreadable_lines(self.unreadable)]
        return "\n".join(lines)


class _Keyed(torch.utils.data.Dataset):
    """Items ``indices`` of ``dataset`` as (key, sample or the ``Unreadable`` record) pairs, for the worker processes.

    An unreadable image is returned, not raised, so that one bad file does not end the prepare.
    """

    def __init__(self, dataset: GazeDataset, indices: list[int]):
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> tuple[str, Sample | Unreadable]:
        index = self.indices[position]
        try:
            return self.dataset.item_key(index), self.dataset[index]
        except UnreadableImage as error:
            return self.dataset.item_key(index), Unreadable(index, item_image_id(self.dataset, index), str(error))


def _single(item):
    return item


def prepare(dataset: GazeDataset, workers: int = 2, progress: bool = True) -> PrepareReport:
    """Build the cache of every item of ``dataset`` that is not cached yet (``workers`` processes)."""
    started = time.perf_counter()
    folder = cache_dir(dataset)
    cache = SampleCache(folder)
    cache.items.mkdir(parents=True, exist_ok=True)
    if dataset.manifest.credentialed:
        write_data_use_notice(folder, dataset.manifest)
    todo = [i for i in range(len(dataset)) if not cache.has(dataset.item_key(i))]
    loader = DataLoader(_Keyed(dataset, todo), batch_size=None, num_workers=workers if len(todo) > 1 else 0, collate_fn=_single)
    unreadable = []
    for key, sample in tqdm(loader, total=len(todo), desc=f"preparing {dataset.name}", unit="item", disable=not progress):
        if isinstance(sample, Unreadable):
            unreadable.append(sample)
        else:
            cache.save(key, sample)
    write_splits(dataset.table, folder / "splits.csv")
    built = len(todo) - len(unreadable)
    report = PrepareReport(folder, len(dataset), built, len(dataset) - len(todo), time.perf_counter() - started, dict(dataset.skips), unreadable)
    record = {"parameters": cache_parameters(dataset), "items": report.items, "skips": {k: int(v) for k, v in report.skips.items() if v}}
    if unreadable:
        record["unreadable"] = [item.reason for item in unreadable]
    write_atomic(folder / MANIFEST_FILE, yaml.safe_dump(record, sort_keys=False))
    return report
