"""The datasets gazebench knows: name -> reader and manifest (``data_manifests/<name>.yaml``)."""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path

from gazebench import paths
from gazebench.data import DEFAULT_SYNTH_N, DEFAULT_SYNTH_SEED
from gazebench.data.base import GazeDataset
from gazebench.data.gaze import GazeConvention
from gazebench.data.manifest import Manifest, load_manifest
from gazebench.errors import UserError
from gazebench.registry import DATASETS


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    reader: str  # "module:Class" of the reader, imported on first use
    needs_root: bool

    @property
    def manifest(self) -> Manifest:
        return load_manifest(self.name)

    def reader_class(self) -> type[GazeDataset]:
        module, _, attribute = self.reader.partition(":")
        return getattr(importlib.import_module(module), attribute)


for _info in (
    DatasetInfo("synth", "embedded synthetic dataset in the EGD layout (generated on first use)", "gazebench.data.egd:EGDDataset", needs_root=False),
    DatasetInfo("egd", "EGD eye-gaze data for MIMIC-CXR (egd-cxr 1.0.0, PhysioNet credentialed)", "gazebench.data.egd:EGDDataset", needs_root=True),
    DatasetInfo("reflacx", "REFLACX eye-tracking readings of MIMIC-CXR (1.0.0, PhysioNet credentialed)", "gazebench.data.reflacx:ReflacxDataset", needs_root=True),
    DatasetInfo("mimic", "MIMIC-CXR-JPG labels and images, no gaze (2.x, PhysioNet credentialed)", "gazebench.data.mimic:MimicDataset", needs_root=True),
):
    DATASETS.register(_info.name)(_info)


def ensure_synth(n: int = DEFAULT_SYNTH_N, seed: int = DEFAULT_SYNTH_SEED, progress: bool = True) -> Path:
    """The embedded dataset's folder, generated into $GAZEBENCH_HOME once and then reused."""
    from gazebench.data import synth

    folder = paths.synth_dataset_dir(synth.GENERATOR_VERSION, n, seed)
    if not (folder / "master_sheet.csv").is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        print(f"generating the embedded dataset ({n} images) into {folder} (once)")
        synth.generate(folder, n=n, seed=seed, progress=progress)
    return folder


def synth_key(n: int = DEFAULT_SYNTH_N, seed: int = DEFAULT_SYNTH_SEED) -> str:
    from gazebench.data import synth

    return f"synth-{synth.GENERATOR_VERSION}-n{n}-s{seed}"


def gaze_convention(name: str, sigma: float | None = None) -> GazeConvention | None:
    """Dataset ``name``'s published gaze convention, with ``sigma`` replaced when given."""
    convention = DATASETS.get(name).manifest.gaze
    if convention is None or sigma is None:
        return convention
    if sigma <= 0:
        raise UserError(f"--gaze-sigma must be positive, got {sigma:g}")
    return GazeConvention(convention.name, float(sigma), convention.duration_weighted)


def open_dataset(
    name: str,
    root: Path | None,
    split: str,
    grid: int,
    images_root: Path | None = None,
    require_gaze: bool = True,
    gaze_sigma: float | None = None,
    labels: str | None = None,
    use_cache: bool = True,
) -> GazeDataset:
    """Open split ``split`` of dataset ``name`` (the embedded one when ``name`` is synth and no root).

    ``labels`` picks the reader's label set (EGD: ``classes`` or ``chexpert``; MIMIC: ``chexpert``
    or ``negbio``); items come from the ``data prepare`` cache when there is one.
    """
    from gazebench.data.cache import with_cache

    info = DATASETS.get(name)
    if info.needs_root and root is None:
        raise UserError(f"--data {name} needs --root: the folder of your local copy of {info.manifest.obtain_hint()}")
    if name == "synth" and root is None:
        root = ensure_synth()
    reader = info.reader_class()
    options = {} if labels is None else {"labels": labels}
    if options and "labels" not in inspect.signature(reader).parameters:
        raise UserError(f"--labels is not an option of {name}: its labels are fixed by its release")
    dataset = reader(
        Path(root),
        split=split,
        grid=grid,
        convention=gaze_convention(name, gaze_sigma),
        images_root=images_root,
        require_gaze=require_gaze,
        name=name,
        **options,
    )
    return with_cache(dataset) if use_cache else dataset
