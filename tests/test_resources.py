"""Package data lives in gazebench/resources/; the top-level folders people browse hold byte-identical copies."""

from __future__ import annotations

from pathlib import Path

import pytest

from gazebench.resources import KINDS, resource, resource_names

ROOT = Path(__file__).resolve().parents[1]
# human-facing folder -> {its file: (resource kind, resource name)}
COPIES = {
    "data_manifests": {name: ("manifests", name) for name in [*resource_names("manifests"), "README.md"]},
    "baselines": {**{name: ("recipes", name) for name in resource_names("recipes")}, "reported.yaml": ("reported", "reported.yaml")},
}


@pytest.mark.parametrize("folder", sorted(COPIES))
def test_human_copies_are_identical_to_the_package_data(folder):
    expected = COPIES[folder]
    present = {path.name for path in (ROOT / folder).iterdir() if path.is_file() and path.name != "README.md" or path.name in expected}
    assert present == set(expected), f"{folder}/ and gazebench/resources/ hold different files: {sorted(present ^ set(expected))}"
    for name, (kind, resource_name) in expected.items():
        assert (ROOT / folder / name).read_bytes() == resource(kind, resource_name).read_bytes(), (
            f"{folder}/{name} differs from gazebench/resources/{kind}/{resource_name}; copy the package file over it"
        )


def test_each_kind_has_its_own_folder_and_no_links():
    base = ROOT / "gazebench" / "resources"
    for kind in KINDS:
        assert (base / kind).is_dir() and resource_names(kind), kind
    assert not [path for path in ROOT.joinpath("gazebench").rglob("*") if path.is_symlink()]
    assert not (ROOT / "baselines" / "__init__.py").exists() and not (ROOT / "data_manifests" / "__init__.py").exists()


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown resource kind 'weights'"):
        resource("weights", "x.yaml")
