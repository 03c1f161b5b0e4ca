"""The datasets gazebench knows, each with its default gaze convention in one place."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from gazebench import paths
from gazebench.data import DEFAULT_SYNTH_N, DEFAULT_SYNTH_SEED
from gazebench.data.egd import EGDDataset
from gazebench.data.gaze import EGD_CONVENTION, GazeConvention
from gazebench.errors import UserError
from gazebench.registry import DATASETS



@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    gaze: Callable[[], GazeConvention]  # the dataset's default convention and sigma
    needs_root: bool


def synth_gaze() -> GazeConvention:
    """EGD's convention with the sigma scaled to the synthetic images' size."""
    from gazebench.data import synth

    return GazeConvention("egd", sigma=synth.GAZE_SIGMA_PX, duration_weighted=False)


DATASETS.register("synth")(DatasetInfo("synth", "embedded synthetic dataset in the EGD layout (generated on first use)", synth_gaze, needs_root=False))
DATASETS.register("egd")(DatasetInfo("egd", "EGD eye-gaze data for MIMIC-CXR (egd-cxr 1.0.0, PhysioNet credentialed)", lambda: EGD_CONVENTION, needs_root=True))


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


def open_dataset(
    name: str,
    root: Path | None,
    split: str,
    grid: int,
    images_root: Path | None = None,
    require_gaze: bool = True,
    gaze: GazeConvention | None = None,
) -> EGDDataset:
    """Open split ``split`` of dataset ``name`` (the embedded one when ``name`` is synth)."""
    info = DATASETS.get(name)
    if info.needs_root and root is None:
        raise UserError(f"--data {name} needs --root: the folder of your local copy of the dataset")
    if name == "synth" and root is None:
        root = ensure_synth()
    return EGDDataset(Path(root), split=split, grid=grid, convention=gaze or info.gaze(), images_root=images_root, require_gaze=require_gaze, name=name)
