"""Package data, one folder per kind, read through ``resource(kind, name)``.

- ``manifests/``: one YAML per dataset (files, columns, counts, licence, how to obtain it) and
  their README;
- ``recipes/``: one YAML of training recipes per model (``paper``, ``embedded``, ...);
- ``label_maps/``: the default maps from a dataset's classes to a model's outputs;
- ``reported/``: the numbers the seed studies report, machine-readable;
- ``studies/``: what ``gazebench reproduce NAME`` runs for each study: an experiment file (models,
  methods, metrics) plus the study's table set (``paper``) and figures.

The repository's top-level ``data_manifests/`` and ``baselines/`` hold the same files for people
to browse; ``tests/test_resources.py`` keeps them byte-identical to these.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable

KINDS = ("manifests", "recipes", "label_maps", "reported", "studies")


def resource(kind: str, name: str) -> Traversable:
    """The package file ``<kind>/<name>`` (it may not exist: check ``is_file()``)."""
    if kind not in KINDS:
        raise ValueError(f"unknown resource kind {kind!r}; choose one of: {', '.join(KINDS)}")
    return resources.files(__name__).joinpath(kind, name)


def resource_names(kind: str, suffix: str = ".yaml") -> list[str]:
    """The file names of one kind ending in ``suffix``, sorted."""
    folder = resources.files(__name__).joinpath(kind)
    return sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(suffix))
