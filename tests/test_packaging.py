"""The installed package must hold every subpackage and its package data (gazebench/resources/)."""

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from gazebench.data.manifest import manifest_names
from gazebench.resources import KINDS

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "gazebench").rglob("__init__.py")}
    assert folders <= listed, f"add {sorted(folders - listed)} to [tool.setuptools] packages in pyproject.toml"
    assert "gazebench.resources" in listed


def test_each_dataset_has_a_manifest():
    from gazebench.registry import DATASETS

    assert set(DATASETS.names()) <= set(manifest_names())


def test_the_wheel_carries_every_resource_file(tmp_path):
    """Built as pip installs it (isolated build), from a copy of the sources: a build in the checkout would leave build/ behind."""
    source = tmp_path / "source"
    shutil.copytree(ROOT / "gazebench", source / "gazebench", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), str(source)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("gazebench-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    resources = ROOT / "gazebench" / "resources"
    expected = {f"gazebench/resources/{path.relative_to(resources).as_posix()}" for kind in KINDS for path in (resources / kind).iterdir()}
    assert expected and expected <= names, sorted(expected - names)
    assert not [name for name in names if name.startswith(("baselines/", "data_manifests/", "gazebench/baselines", "gazebench/data_manifests"))]
