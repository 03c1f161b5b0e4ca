"""The installed package must hold every subpackage and the data manifests."""

import tomllib
from pathlib import Path

from gazebench.data.manifest import manifest_names

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "gazebench").rglob("__init__.py")}
    assert folders <= listed, f"add {sorted(folders - listed)} to [tool.setuptools] packages in pyproject.toml"
    assert "gazebench.data_manifests" in listed


def test_each_dataset_has_a_manifest():
    from gazebench.registry import DATASETS

    assert set(DATASETS.names()) <= set(manifest_names())
