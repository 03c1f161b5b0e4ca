"""Data manifests: what each dataset's release looks like on disk, read from ``data_manifests/``.

One YAML file per dataset (``egd``, ``reflacx``, ``mimic``, ``synth``) holds the schema
knowledge -- files and folders, required columns and their types, id formats, official counts,
how to obtain the data, its licence, its label policy and its default gaze convention -- so
that readers and ``gazebench data check`` share one description instead of scattering it.

Column types: ``str``; ``int`` and ``float`` (numbers; blank = missing; ``nan``, ``inf`` and
numbers beyond float32's range do not parse: gazebench computes in float32); ``bool``
(``True/False/true/false/1/0``); ``label`` (CheXpert-style 1 / 0 / -1 / blank).  A table may
list ``one_of``: alternative names for the same columns (REFLACX's ``x_position`` or
``average_x_position``); the first alternative's names are the canonical ones readers see.

Tables are read as the release may ship them: UTF-8 with or without a byte-order mark, LF or
CRLF line ends, ``.csv`` or ``.csv.gz``.  A file that cannot be read as CSV at all (other bytes
than UTF-8, an unterminated quote, a damaged gzip) is a one-line ``UserError`` naming it; rows
with more fields than the header are dropped and counted (``long_rows``), shorter ones padded
with blanks.
"""

from __future__ import annotations

import csv
import gzip
import re
import warnings
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import yaml

from gazebench.data.gaze import GazeConvention
from gazebench.errors import UserError
from gazebench.resources import resource, resource_names

COLUMN_TYPES = ("str", "int", "float", "bool", "label")
BOOL_VALUES = {"true": True, "false": False, "1": True, "0": False, "1.0": True, "0.0": False}
LARGEST_NUMBER = float(np.finfo(np.float32).max)  # numbers beyond it (and nan, inf) do not parse
# what reading a damaged CSV (or .csv.gz) can raise
CSV_ERRORS = (pd.errors.ParserError, pd.errors.EmptyDataError, csv.Error, UnicodeDecodeError, OSError, EOFError, zlib.error)


@dataclass(frozen=True)
class TableSpec:
    """One CSV of a release: where it is, which columns it must have, and their types."""

    name: str
    path: str  # relative to --root; may hold ``{id}`` for per-item files
    required: bool
    columns: dict[str, str]  # required column -> type
    optional_columns: dict[str, str] = field(default_factory=dict)  # typed when present
    one_of: tuple[tuple[str, ...], ...] = ()  # alternative spellings of the same columns
    one_of_types: tuple[str, ...] = ()  # types of the ``one_of`` columns, in order
    key: str | None = None  # column that identifies a row's item (image or reading)
    description: str = ""

    def typed_columns(self) -> dict[str, str]:
        """Every column this table's readers type: required, optional and the canonical ``one_of``."""
        canonical = dict(zip(self.one_of[0], self.one_of_types)) if self.one_of else {}
        return {**self.columns, **self.optional_columns, **canonical}


@dataclass(frozen=True)
class Manifest:
    name: str
    title: str
    version: str
    layout: str  # which reader reads it: egd, reflacx or mimic
    credentialed: bool
    source: str
    access: str
    licence: str
    citation: str
    gaze: GazeConvention | None
    ids: dict[str, str]  # id column -> regular expression
    counts: dict[str, int]  # official release counts, where known
    tables: dict[str, TableSpec]
    folders: dict[str, dict]
    labels: dict
    images: dict
    raw: dict

    def table(self, name: str) -> TableSpec:
        return self.tables[name]

    def id_pattern(self, column: str) -> re.Pattern | None:
        pattern = self.ids.get(column)
        return re.compile(pattern) if pattern else None

    def obtain_hint(self) -> str:
        """One sentence telling a user where the data comes from."""
        return f"{self.title} {self.version}: {self.source}"


def manifest_names() -> list[str]:
    return [name[: -len(".yaml")] for name in resource_names("manifests")]


@lru_cache(maxsize=None)
def load_manifest(name: str) -> Manifest:
    """The parsed ``resources/manifests/<name>.yaml``; an unknown name lists the known ones."""
    entry = resource("manifests", f"{name}.yaml")
    if not entry.is_file():
        raise UserError(f"no data manifest for dataset {name!r}; known: {', '.join(manifest_names())}")
    raw = yaml.safe_load(entry.read_text(encoding="utf-8"))
    if raw.get("inherits"):
        raw = {**load_manifest(raw["inherits"]).raw, **raw}
    return parse_manifest(raw)


def parse_manifest(raw: dict) -> Manifest:
    gaze = raw.get("gaze")
    return Manifest(
        name=raw["name"],
        title=raw["title"],
        version=str(raw.get("version", "")),
        layout=raw.get("layout", raw["name"]),
        credentialed=bool(raw["credentialed"]),
        source=raw.get("source", ""),
        access=" ".join(str(raw.get("access", "")).split()),
        licence=raw.get("licence", ""),
        citation=" ".join(str(raw.get("citation", "")).split()),
        gaze=GazeConvention(gaze["convention"], float(gaze["sigma"]), bool(gaze["duration_weighted"])) if gaze else None,
        ids=dict(raw.get("ids") or {}),
        counts=dict(raw.get("counts") or {}),
        tables={name: _table_spec(name, spec) for name, spec in (raw.get("tables") or {}).items()},
        folders=dict(raw.get("folders") or {}),
        labels=dict(raw.get("labels") or {}),
        images=dict(raw.get("images") or {}),
        raw=raw,
    )


def _table_spec(name: str, spec: dict) -> TableSpec:
    columns = dict(spec.get("columns") or {})
    optional = dict(spec.get("optional_columns") or {})
    one_of = spec.get("one_of") or {}
    for kind in [*columns.values(), *optional.values(), *one_of.get("types", [])]:
        if kind not in COLUMN_TYPES:
            raise ValueError(f"manifest table {name}: unknown column type {kind!r}; use one of {COLUMN_TYPES}")
    return TableSpec(
        name=name,
        path=spec["path"],
        required=bool(spec.get("required", True)),
        columns=columns,
        optional_columns=optional,
        one_of=tuple(tuple(names) for names in one_of.get("alternatives", [])),
        one_of_types=tuple(one_of.get("types", [])),
        key=spec.get("key"),
        description=" ".join(str(spec.get("description", "")).split()),
    )


def table_path(root: Path, spec: TableSpec, **fields: str) -> Path:
    return Path(root) / spec.path.format(**fields)


def cannot_parse(path: Path, error: object) -> UserError:
    """The one-line error for a file that is not readable CSV."""
    reason = " ".join(str(error).split()) or type(error).__name__
    return UserError(f"cannot parse {path} as CSV ({reason}); replace the file with the release's copy")


def read_header(path: Path) -> list[str]:
    """Column names of a CSV (an unreadable file is the user's to fix)."""
    try:
        return list(pd.read_csv(path, nrows=0).columns)
    except CSV_ERRORS as error:
        raise cannot_parse(path, error) from None


def resolve_alternatives(spec: TableSpec, header: list[str]) -> dict[str, str] | None:
    """Renaming from the ``one_of`` alternative present in ``header`` to the canonical names.

    ``{}`` when the table has no alternatives; ``None`` when none of them is complete.
    """
    if not spec.one_of:
        return {}
    for names in spec.one_of:
        if all(name in header for name in names):
            return dict(zip(names, spec.one_of[0]))
    return None


def missing_columns(spec: TableSpec, header: list[str]) -> list[str]:
    """Required columns absent from ``header`` (an incomplete ``one_of`` counts as one entry)."""
    missing = [column for column in spec.columns if column not in header]
    if resolve_alternatives(spec, header) is None:
        missing.append(" or ".join("/".join(names) for names in spec.one_of))
    return missing


def read_table(root: Path, spec: TableSpec, **fields: str) -> pd.DataFrame:
    """Read one table of a release, checked and typed by its manifest entry.

    A missing file or column is a ``UserError`` naming the file and the columns expected.
    Values that do not parse as their column's type become missing (NaN / None) and are
    counted per column in ``frame.attrs["unparsable"]``, for the reader to drop and report.
    """
    path = table_path(root, spec, **fields)
    if not path.is_file():
        raise UserError(f"missing file {path}; is --root the folder of the dataset release?")
    header = read_header(path)
    missing = missing_columns(spec, header)
    if missing:
        raise UserError(f"{path} lacks the column(s) {', '.join(missing)}; expected at least: {', '.join(spec.columns)}")
    frame, long_rows = read_text(path)
    frame = frame.rename(columns=resolve_alternatives(spec, header))
    unparsable: dict[str, int] = {}
    for column, kind in spec.typed_columns().items():
        if column in frame.columns:
            frame[column], bad = convert_column(frame[column], kind)
            if bad:
                unparsable[column] = bad
    frame.attrs["unparsable"] = unparsable
    frame.attrs["long_rows"] = long_rows
    frame.attrs["path"] = str(path)
    return frame


def long_rows_reason(path: str | Path) -> str:
    """The skip reason of rows with more fields than the header, for file ``path``."""
    return f"{PurePosixPath(path).name} rows with more fields than its header (dropped)"


def read_text(path: Path) -> tuple[pd.DataFrame, int]:
    """Every cell of a CSV as text (blank = missing), and how many rows had more fields than the header (dropped).

    pandas reads a well-formed file; a ragged one (which pandas refuses, or silently reads with
    the first fields as an index) is read again with the csv module, row by row.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], index_col=False), 0
    except (pd.errors.ParserError, pd.errors.ParserWarning):
        pass  # ragged rows, or an unterminated quote: the csv module tells them apart
    except CSV_ERRORS as error:
        raise cannot_parse(path, error) from None
    header, rows = _csv_rows(path)
    kept, dropped = fit_rows(header, rows)
    frame = pd.DataFrame(kept, columns=header, dtype=object)
    return frame.mask(frame == ""), dropped


def fit_rows(header: list[str], rows: list[list[str]]) -> tuple[list[list[str]], int]:
    """(rows fitted to the header's length, number of rows dropped).

    Shorter rows are padded with blanks; trailing empty fields (a trailing comma) are cut, as
    pandas does; rows with more non-empty fields than the header are dropped.
    """
    width = len(header)
    kept = [row[:width] + [""] * (width - len(row)) for row in rows if not any(row[width:])]
    return kept, len(rows) - len(kept)


def convert_column(values: pd.Series, kind: str) -> tuple[pd.Series, int]:
    """(typed values, number of non-blank cells that did not parse as ``kind``)."""
    present = values.notna() & (values.astype(str).str.strip() != "")
    if kind == "str":
        return values.where(present, None).astype(object), 0
    if kind == "bool":
        parsed = values.astype(str).str.strip().str.lower().map(BOOL_VALUES)
        return parsed.astype(object).where(parsed.notna(), None), int((present & parsed.isna()).sum())
    numbers = pd.to_numeric(values, errors="coerce")
    bad = present & ~(numbers.abs() <= LARGEST_NUMBER)  # unparsable, nan, inf or beyond float32
    numbers = numbers.where(~bad)
    if kind == "label":
        bad |= present & numbers.notna() & ~numbers.isin([1, 0, -1])
        numbers = numbers.where(~bad)
    return numbers.astype(float), int(bad.sum())


def read_item_tables(root: Path, spec: TableSpec, item_ids, id_column: str = "item_id") -> tuple[pd.DataFrame, set[str], dict[str, int], int]:
    """Per-item table ``spec`` (path with ``{id}``, e.g. REFLACX's per-reading files) of every item that has one, stacked.

    The checks and conversions of ``manifest.read_table`` (a missing column is a ``UserError``
    naming the file; ``one_of`` spellings renamed to the canonical names; values typed by the
    manifest, unparsable ones missing), but typed once over all items: reading thousands of
    tiny files one ``read_table`` at a time costs minutes.  Returns (frame with an ``id_column``
    column, ids of the items that have the file, unparsable count per column, rows with more
    fields than the header, dropped).
    """
    groups: dict[tuple[str, ...], tuple[list[list[str]], list[str]]] = {}
    found, long_rows = set(), 0
    for item_id in item_ids:
        path = table_path(root, spec, id=item_id)
        if not path.is_file():
            continue
        header, rows = _csv_rows(path)
        missing = missing_columns(spec, header)
        if missing:
            raise UserError(f"{path} lacks the column(s) {', '.join(missing)}; expected at least: {', '.join(spec.columns)}")
        renaming = resolve_alternatives(spec, header)
        canonical = tuple(renaming.get(column, column) for column in header)
        kept, dropped = fit_rows(header, rows)
        long_rows += dropped
        stacked_rows, stacked_ids = groups.setdefault(canonical, ([], []))
        stacked_rows.extend(kept)
        stacked_ids.extend([item_id] * len(kept))
        found.add(item_id)
    frames = [pd.DataFrame(rows, columns=list(header), dtype=object).assign(**{id_column: ids}) for header, (rows, ids) in groups.items()]
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*spec.typed_columns(), id_column])
    unparsable = {}
    for column, kind in spec.typed_columns().items():
        if column in frame.columns:
            frame[column], bad = convert_column(frame[column], kind)
            if bad:
                unparsable[column] = bad
    return frame, found, unparsable, long_rows


def _csv_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header (repeated names made unique as pandas does: ``a``, ``a.1``) and rows of a CSV as text.

    The csv module: far faster than pandas per small file.  ``strict``: an unterminated quote
    is an error, not the rest of the file read as one field.
    """
    opener = gzip.open if Path(path).suffix == ".gz" else open
    try:
        with opener(path, "rt", newline="", encoding="utf-8-sig") as file:
            rows = [row for row in csv.reader(file, strict=True) if row]
    except CSV_ERRORS as error:
        raise cannot_parse(path, error) from None
    if not rows:
        raise cannot_parse(path, "the file is empty")
    return unique_names(rows[0]), rows[1:]


def unique_names(header: list[str]) -> list[str]:
    """Column names with repeats renamed ``name.1``, ``name.2`` ... (the first one keeps its name, as in pandas)."""
    seen: dict[str, int] = {}
    names = []
    for name in header:
        repeat = seen.get(name, 0)
        seen[name] = repeat + 1
        names.append(f"{name}.{repeat}" if repeat else name)
    return names
