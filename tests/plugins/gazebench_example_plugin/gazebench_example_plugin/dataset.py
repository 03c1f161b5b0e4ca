"""``local_egd``: gaze data in the EGD release's layout, described by this package's own manifest."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

import yaml

from gazebench.data.base import check_root
from gazebench.data.datasets import DatasetInfo
from gazebench.data.egd import EGDDataset
from gazebench.data.manifest import Manifest, load_manifest, parse_manifest

NAME = "local_egd"


@cache
def local_manifest() -> Manifest:
    """local_egd.yaml, shipped in this package, on top of gazebench's egd manifest (``inherits``)."""
    raw = yaml.safe_load((resources.files(__package__) / "local_egd.yaml").read_text(encoding="utf-8"))
    return parse_manifest({**load_manifest(raw.pop("inherits")).raw, **raw})


class LocalEGDDataset(EGDDataset):
    """gazebench's EGD reader, then this dataset's name and manifest (same tables, its own source and gaze sigma)."""

    def __init__(self, root, split="test", grid=224, convention=None, images_root=None, require_gaze=True, name=NAME, labels="classes"):
        manifest = local_manifest()
        check_root(root, manifest)  # a missing folder is reported with this dataset's description
        super().__init__(root, split, grid, convention or manifest.gaze, images_root, require_gaze, name="egd", labels=labels)
        self.name, self.manifest = name, manifest


@dataclass(frozen=True)
class LocalDatasetInfo(DatasetInfo):
    @property
    def manifest(self) -> Manifest:
        return local_manifest()


LOCAL_EGD = LocalDatasetInfo(NAME, "a local gaze collection in the EGD layout (example plugin)", "gazebench_example_plugin.dataset:LocalEGDDataset", needs_root=True)
