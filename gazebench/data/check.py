"""``gazebench data check``: validate a local copy of a dataset against its manifest and reader.

``check_dataset(name, root)`` collects findings instead of stopping at the first problem:

- structure, from ``data_manifests/<name>.yaml`` alone: every table's file (``<path>.gz`` is
  accepted too), its required and ``one_of`` columns, the type of every typed column (count of
  cells that do not parse), id columns against the manifest's ``ids`` formats, repeated keys,
  ids present in one table and not in the table that defines them, and the manifest's folders.
  A table path with ``{phase}`` is expanded from the table's ``phases:`` list (at least one must
  exist); a path with any other placeholder (``{id}``, ``{dicom_id}``) names per-item files:
  their presence is checked for every item and their content on an evenly spaced sample;
- counts against the manifest's official ``counts`` (a partial copy is a note);
- content, through the dataset's reader opened on every split without requiring gaze: a
  ``UserError`` is an error (the copy cannot be used), every non-zero ``skips`` entry a warning,
  ``stats()`` the report's table;
- every image is decoded (``decode``: or an evenly spaced sample, ``data check --quick``), in
  ``workers`` processes with a progress bar, by loading the first item of each image as ``run``
  does, its header size compared with the tables.  An image that does not decode is what ``run``
  and ``train`` skip and count (``--strict`` stops): a **warning**, every file named (up to
  ``UNREADABLE_LISTED``), and the copy stays usable -- unless no image decodes (an error).  Any
  other failure to load an item stops ``run``, so it is an error.

Levels: ``error`` (the copy cannot be used as is), ``warning`` (data are left out or suspect),
``note`` (worth knowing: optional parts absent, a partial copy).  Everything is linear in the
size of the copy: big tables are read in chunks, only the columns the manifest types.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from gazebench.data.datasets import DATASETS
from gazebench.data.images import UnreadableImage, image_size
from gazebench.data.manifest import Manifest, TableSpec, convert_column, load_manifest, missing_columns, read_header, resolve_alternatives
from gazebench.errors import UserError

LEVELS = ("error", "warning", "note")
CHUNK_ROWS = 200_000  # rows per chunk when scanning a table (bounds memory on eye_gaze.csv-sized files)
PER_ITEM_SAMPLE = 100  # per-item files (REFLACX's main_data/<id>/*.csv) whose content is checked
DECODE_SAMPLE = 16  # images decoded by ``data check --quick``
UNREADABLE_LISTED = 20  # unreadable files named one by one; the rest are counted
PLACEHOLDER = re.compile(r"\{(\w+)[^}]*\}")
# official count name -> id columns whose distinct values give it in a local copy
COUNT_COLUMNS = {"images": ("dicom_id",), "studies": ("study_id",), "patients": ("patient_id", "subject_id"), "readings": ("id",)}
KIND_WORDS = {"int": "whole numbers", "float": "numbers", "bool": "true/false values", "label": "labels (1, 0, -1 or blank)"}
# a table whose key has at most this many rows per distinct value (and no ``unique_key`` in the
# manifest) is taken to hold one row per item, so a repeated key is a duplicate
UNIQUE_KEY_ROWS_PER_VALUE = 1.5


@dataclass(frozen=True)
class Finding:
    level: str  # error, warning or note
    message: str


@dataclass
class CheckReport:
    """What ``check_dataset`` found: findings by level, the reader's stats, counts vs the release."""

    name: str
    title: str
    version: str
    root: Path
    images_root: Path
    findings: list[Finding] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (this copy, official)
    usable_images: int = 0

    def add(self, level: str, message: str) -> None:
        if level not in LEVELS:
            raise ValueError(f"unknown finding level {level!r}")
        self.findings.append(Finding(level, message))

    def at(self, level: str) -> list[str]:
        """The messages of one level, in the order found."""
        return [finding.message for finding in self.findings if finding.level == level]

    @property
    def errors(self) -> list[str]:
        return self.at("error")

    @property
    def warnings(self) -> list[str]:
        return self.at("warning")

    @property
    def notes(self) -> list[str]:
        return self.at("note")

    @property
    def usable(self) -> bool:
        """No error and at least one image the reader can serve."""
        return not self.errors and self.usable_images > 0

    def format(self) -> str:
        """The report as text: header, one section per level, stats and counts tables, verdict."""
        lines = [f"gazebench data check: {self.title} {self.version} ({self.name})", f"root:        {self.root}"]
        if Path(self.images_root) != Path(self.root):
            lines.append(f"images root: {self.images_root}")
        for level, title in zip(LEVELS, ("errors", "warnings", "notes")):
            messages = self.at(level)
            lines += ["", f"{title} ({len(messages)})"]
            lines += [f"  - {message}" for message in messages] or ["  (none)"]
        if self.stats:
            lines += ["", "stats", *_two_columns(self.stats)]
        if self.counts:
            counts = {name: f"{mine} of {official}" for name, (mine, official) in self.counts.items()}
            lines += ["", "counts (this copy of the official release)", *_two_columns(counts)]
        lines += ["", f"usable: {'yes' if self.usable else 'no'}"]
        return "\n".join(lines)


def _two_columns(values: dict) -> list[str]:
    width = max(len(str(key)) for key in values)
    return [f"  {str(key):<{width}}  {value}" for key, value in values.items()]


def check_dataset(
    name: str,
    root: Path,
    images_root: Path | None = None,
    decode: int | None = None,
    per_item_sample: int | None = PER_ITEM_SAMPLE,
    workers: int = 0,
    progress: bool = False,
) -> CheckReport:
    """Check the local copy at ``root`` of dataset ``name``; see the module docstring.

    ``decode``: images decoded by the content check (None: all; ``DECODE_SAMPLE`` for
    ``--quick``), in ``workers`` processes (0: this one), with a progress bar if ``progress``;
    ``per_item_sample``: per-item files whose content is read (None: all).  An unknown ``name``
    is a ``UserError``.
    """
    manifest = load_manifest(name)
    root = Path(root)
    report = CheckReport(name, manifest.title, manifest.version, root, Path(images_root or root))
    if not root.is_dir():
        report.add("error", f"data directory {root} does not exist; pass --root with the folder of your copy of {manifest.obtain_hint()}")
        return report
    structure = _StructureCheck(manifest, root, report, per_item_sample)
    structure.run()
    structure.compare_counts()
    if report.errors:
        report.add("note", "the content (reader, images) was not checked: fix the errors above, then check again")
        return report
    _check_content(name, root, images_root, report, decode, workers, progress)
    return report


# ---------------------------------------------------------------------- scanning tables


@dataclass
class _Scan:
    """What one pass over a table's file(s) found; per-column issues are [count, example]."""

    rows: int = 0
    unparsable: dict[str, list] = field(default_factory=dict)
    bad_ids: dict[str, list] = field(default_factory=dict)
    key_counts: pd.Series | None = None
    distinct: dict[str, set] = field(default_factory=dict)  # lower-case id column -> values

    def merge(self, other: "_Scan") -> None:
        self.rows += other.rows
        for mine, theirs in ((self.unparsable, other.unparsable), (self.bad_ids, other.bad_ids)):
            for column, (count, example) in theirs.items():
                mine.setdefault(column, [0, example])[0] += count
        if other.key_counts is not None:
            self.key_counts = other.key_counts if self.key_counts is None else self.key_counts.add(other.key_counts, fill_value=0)
        for column, values in other.distinct.items():
            self.distinct.setdefault(column, set()).update(values)


def _count(issues: dict[str, list], column: str, bad: pd.Series, values: pd.Series) -> None:
    """Add the cells flagged in ``bad`` to ``issues[column]``, keeping the first example."""
    count = int(bad.sum())
    if count:
        entry = issues.setdefault(column, [0, str(values[bad].iloc[0])])
        entry[0] += count


def _existing(path: Path) -> Path | None:
    """``path``, or ``path.gz`` as PhysioNet serves some tables, or None."""
    gzipped = path.with_name(path.name + ".gz")
    return path if path.is_file() else gzipped if gzipped.is_file() else None


class _StructureCheck:
    """The manifest-only part of the check: tables, ids, keys, folders, counts."""

    def __init__(self, manifest: Manifest, root: Path, report: CheckReport, per_item_sample: int | None):
        self.manifest, self.root, self.report = manifest, root, report
        self.per_item_sample = per_item_sample
        self.id_patterns = {column.lower(): manifest.id_pattern(column) for column in manifest.ids}
        self.scans: dict[str, _Scan] = {}  # fixed-path (or phase-expanded) tables that were read
        self.files: dict[str, str] = {}  # table -> the file name(s) to show in messages
        self.unique: set[str] = set()  # tables holding one row per key value

    # ---- driver

    def run(self) -> None:
        per_item = []
        for spec in self.manifest.tables.values():
            placeholders = set(PLACEHOLDER.findall(spec.path))
            listed = self._listed_values(spec)
            if placeholders - set(listed):
                per_item.append(spec)
            else:
                self._check_fixed(spec, listed)
        self._check_references()
        for spec in per_item:
            self._check_per_item(spec)
        for folder, entry in self.manifest.folders.items():
            self._check_folder(folder, entry)

    def _listed_values(self, spec: TableSpec) -> dict[str, list]:
        """Placeholders the manifest enumerates: ``{phase}`` from the table's ``phases:`` list."""
        raw = self.manifest.raw.get("tables", {}).get(spec.name, {})
        return {name: list(raw[f"{name}s"]) for name in PLACEHOLDER.findall(spec.path) if isinstance(raw.get(f"{name}s"), list)}

    # ---- fixed-path tables

    def _check_fixed(self, spec: TableSpec, listed: dict[str, list]) -> None:
        paths = self._expand(spec, listed)
        present = [(label, found) for label, path in paths if (found := _existing(path)) is not None]
        shown = ", ".join(self._relative(path) for _, path in paths)
        if not present:
            self._report_absent(spec, shown)
            return
        if len(paths) > 1:
            for label, path in paths:
                if _existing(path) is None:
                    self.report.add("note", f"{self._relative(path)} is absent ({label}); the other {spec.name} file(s) are used: a partial copy?")
        scan = _Scan()
        for _, path in present:
            part = self._scan_file(spec, path, "error" if spec.required else "warning")
            if part is None:
                return
            scan.merge(part)
        self.scans[spec.name] = scan
        self.files[spec.name] = ", ".join(self._relative(path) for _, path in present)
        self._report_scan(spec, scan, self.files[spec.name])
        self._check_key(spec, scan)

    def _expand(self, spec: TableSpec, listed: dict[str, list]) -> list[tuple[str, Path]]:
        """(label, path) of each file of the table: one, or one per listed placeholder value."""
        if not listed:
            return [(spec.name, self.root / spec.path)]
        (placeholder, values), *_ = listed.items()
        return [(f"{placeholder} {value}", self.root / spec.path.format(**{placeholder: value})) for value in values]

    def _report_absent(self, spec: TableSpec, shown: str) -> None:
        what = f" ({spec.description})" if spec.description else ""
        if spec.required:
            several = " (at least one of them)" if "," in shown else ""
            self.report.add("error", f"missing file {shown}{several}{what}; is --root the folder of the release? Download it from {self.manifest.source}")
        else:
            self.report.add("note", f"optional file {shown} is absent{what}; fine unless you need it")

    def _scan_file(self, spec: TableSpec, path: Path, required_level: str, add=None) -> _Scan | None:
        """Header and typed columns of one file; None (after a finding) when it is unusable."""
        add = add or self.report.add
        try:
            header = read_header(path)
        except UserError as error:
            add(required_level, str(error))
            return None
        except (OSError, EOFError) as error:  # e.g. a damaged .csv.gz
            add(required_level, f"cannot read {self._relative(path)} ({' '.join(str(error).split())}); replace the file with the release's copy")
            return None
        missing = missing_columns(spec, header)
        if missing:
            add(
                required_level,
                f"{self._relative(path)} lacks the column(s) {', '.join(missing)}; expected at least: "
                f"{', '.join([*spec.columns, *('/'.join(n) for n in spec.one_of[:1])])}. Replace the file with the release's copy",
            )
            return None
        absent_optional = [column for column in spec.optional_columns if column not in header]
        if absent_optional:
            add("note", f"{self._relative(path)} has no optional column(s) {', '.join(absent_optional)}")
        try:
            return self._scan_rows(spec, path, header)
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError, EOFError) as error:
            add(required_level, f"cannot parse {self._relative(path)} as CSV ({' '.join(str(error).split())}); replace the file with the release's copy")
            return None

    def _scan_rows(self, spec: TableSpec, path: Path, header: list[str]) -> _Scan:
        """Count unparsable cells, malformed ids and key values, chunk by chunk."""
        rename = resolve_alternatives(spec, header) or {}
        typed = spec.typed_columns()
        id_columns = [c for c in header if rename.get(c, c).lower() in self.id_patterns or rename.get(c, c) == spec.key]
        wanted = [c for c in header if rename.get(c, c) in typed or c in id_columns]
        scan = _Scan()
        chunks = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], usecols=wanted, chunksize=CHUNK_ROWS)
        for chunk in chunks:
            chunk = chunk.rename(columns=rename)
            scan.rows += len(chunk)
            for column, kind in typed.items():
                if column in chunk.columns and kind != "str":
                    values = chunk[column]
                    converted, _ = convert_column(values, kind)
                    present = values.notna() & (values.astype(str).str.strip() != "")
                    _count(scan.unparsable, column, present & pd.isna(converted), values)
            for column in chunk.columns:
                values = chunk[column].dropna()
                pattern = self.id_patterns.get(column.lower())
                if pattern is not None:
                    distinct = pd.Series(values.unique(), dtype=object)  # match each id once, not once per row
                    malformed = distinct[~distinct.str.fullmatch(pattern.pattern).astype(bool)]
                    _count(scan.bad_ids, column, values.isin(malformed), values)
                    scan.distinct.setdefault(column.lower(), set()).update(distinct)
            if spec.key in chunk.columns:
                counts = chunk[spec.key].value_counts()
                scan.key_counts = counts if scan.key_counts is None else scan.key_counts.add(counts, fill_value=0)
                scan.distinct.setdefault(spec.key.lower(), set()).update(counts.index)
        return scan

    def _report_scan(self, spec: TableSpec, scan: _Scan, shown: str) -> None:
        typed = spec.typed_columns()
        for column, (count, example) in scan.unparsable.items():
            self.report.add(
                "warning",
                f"{shown} column {column}: {count} value(s) are not {KIND_WORDS[typed[column]]} (e.g. {example!r}); "
                "readers treat them as missing. Correct them or replace the file with the release's copy",
            )
        for column, (count, example) in scan.bad_ids.items():
            pattern = self.id_patterns[column.lower()].pattern
            self.report.add(
                "warning",
                f"{shown} column {column}: {count} value(s) do not match the id format {pattern} (e.g. {example!r}); "
                "was the file edited (a spreadsheet may turn ids into numbers)? Replace it with the release's copy",
            )

    def _check_key(self, spec: TableSpec, scan: _Scan) -> None:
        """Repeated keys in a table that holds one row per key (manifest ``unique_key``, else by shape)."""
        if scan.key_counts is None or scan.key_counts.empty:
            return
        declared = self.manifest.raw.get("tables", {}).get(spec.name, {}).get("unique_key")
        unique = bool(declared) if declared is not None else scan.rows / len(scan.key_counts) <= UNIQUE_KEY_ROWS_PER_VALUE
        if not unique:
            return
        self.unique.add(spec.name)
        repeated = scan.key_counts[scan.key_counts > 1]
        if len(repeated):
            extra = int((repeated - 1).sum())
            self.report.add(
                "warning",
                f"{self.files[spec.name]}: {extra} repeated {spec.key} row(s) (e.g. {repeated.index[0]!r}, {int(repeated.iloc[0])} rows); "
                "readers keep the first row. Remove the repeats or replace the file with the release's copy",
            )

    # ---- ids across tables

    def _definer(self, column: str) -> str | None:
        """The first table (manifest order) holding one row per value of ``column``."""
        for name, spec in self.manifest.tables.items():
            if name in self.unique and spec.key and spec.key.lower() == column:
                return name
        return None

    def _check_references(self) -> None:
        """Ids in one table and not in the table that defines them, both ways."""
        for column in sorted({c for scan in self.scans.values() for c in scan.distinct}):
            definer = self._definer(column)
            if definer is None:
                continue
            defined = self.scans[definer].distinct.get(column, set())
            for name, scan in self.scans.items():
                if name == definer or column not in scan.distinct:
                    continue
                self._report_difference(scan.distinct[column] - defined, column, self.files[name], f"not in {self.files[definer]}", "their rows are not used", "warning")
                level = "warning" if self.manifest.tables[name].required else "note"
                self._report_difference(defined - scan.distinct[column], column, self.files[definer], f"with no row in {self.files[name]}", "", level)

    def _report_difference(self, values: set, column: str, where: str, what: str, consequence: str, level: str) -> None:
        if values:
            tail = f"; {consequence}" if consequence else ""
            self.report.add(level, f"{len(values)} {column} value(s) of {where} {what} (e.g. {sorted(values)[0]!r}){tail}")

    def _item_ids(self, placeholder: str) -> list[str] | None:
        """Every item's id for ``{placeholder}``, from the table that defines it; None if unknown."""
        definer = self._definer(placeholder.lower())
        if definer is None:
            return None
        return sorted(str(v) for v in self.scans[definer].distinct.get(placeholder.lower(), set()))

    # ---- per-item tables

    def _check_per_item(self, spec: TableSpec) -> None:
        """Presence of each item's file, and the content of a sample of them."""
        placeholder = PLACEHOLDER.findall(spec.path)[0]
        items = self._item_files(spec.path, placeholder)
        if items is None:
            return
        present = [(item, found) for item, path in items if (found := _existing(path)) is not None]
        pattern = spec.path.replace("{" + placeholder + "}", f"<{placeholder}>")
        if not present:
            if spec.required and items:
                self.report.add("error", f"no {pattern} exists for any of the {len(items)} {placeholder} value(s) (e.g. {self._relative(items[0][1])}); is the copy complete?")
            elif items:
                self.report.add("note", f"optional files {pattern} are absent for every {placeholder}; fine unless you need them")
            return
        if len(present) < len(items):
            absent = next(path for item, path in items if _existing(path) is None)
            self.report.add("note", f"{len(items) - len(present)} of {len(items)} {placeholder} value(s) have no {pattern} (e.g. {self._relative(absent)})")
        self._scan_sample(spec, present, pattern)

    def _item_files(self, path: str, placeholder: str) -> list[tuple[str, Path]] | None:
        """(id, path) per item: ids from the defining table, else the files found on disk."""
        ids = self._item_ids(placeholder)
        if ids is not None:
            return [(item, self.root / path.format(**{placeholder: item})) for item in ids]
        static = path.split("{", 1)[0]
        if not (self.root / static).is_dir():
            return None
        found = sorted(self.root.glob(PLACEHOLDER.sub("*", path)))
        return [(str(p), p) for p in found]

    def _scan_sample(self, spec: TableSpec, present: list[tuple[str, Path]], pattern: str) -> None:
        """Header and types of a sample of per-item files; one finding per kind of problem."""
        sample = present if self.per_item_sample is None else _evenly(present, self.per_item_sample)
        problems: dict[str, list[str]] = {}
        scan = _Scan()
        level = "error" if spec.required else "warning"
        for _, path in sample:
            part = self._scan_file(spec, path, level, add=lambda lvl, message: problems.setdefault(lvl, []).append(message))
            if part is not None:
                scan.merge(part)
        for problem_level, messages in problems.items():
            more = f" (and {len(messages) - 1} more of the {len(sample)} files checked)" if len(messages) > 1 else ""
            self.report.add(problem_level, messages[0] + more)
        self._report_scan(spec, scan, f"{pattern} ({len(sample)} of {len(present)} files checked)")

    # ---- folders

    def _check_folder(self, name: str, entry: dict) -> None:
        path, required = str(entry["path"]), bool(entry.get("required", True))
        files = dict(entry.get("files") or {})
        description = " ".join(str(entry.get("description", "")).split())
        what = f" ({description})" if description else ""
        placeholders = PLACEHOLDER.findall(path)
        static = path.split("{", 1)[0].rstrip("/") or "."
        if not (self.root / static).is_dir():
            level = "error" if required else "note"
            self.report.add(level, f"{'missing' if required else 'optional'} folder {static}/ is absent{what}")
            return
        if not placeholders:
            self._report_missing_files([self.root / path], files, path, required)
            return
        ids = self._item_ids(placeholders[0])
        if ids is None:
            return
        pattern = path.replace("{" + placeholders[0] + "}", f"<{placeholders[0]}>")
        folders = [self.root / path.format(**{placeholders[0]: item}) for item in ids]
        present = [folder for folder in folders if folder.is_dir()]
        if len(present) < len(folders):
            level = "warning" if required else "note"
            absent = next(folder for folder in folders if not folder.is_dir())
            self.report.add(level, f"{len(folders) - len(present)} of {len(folders)} {placeholders[0]} value(s) have no folder {pattern}/ (e.g. {self._relative(absent)})")
        self._report_missing_files(present, files, pattern, required)

    def _report_missing_files(self, folders: list[Path], files: dict, shown: str, required: bool) -> None:
        for file in files.values():
            absent = [folder for folder in folders if not (folder / file).is_file()]
            if absent:
                level = "warning" if required else "note"
                self.report.add(level, f"{len(absent)} of {len(folders)} folder(s) {shown}/ lack {file} (e.g. {self._relative(absent[0] / file)})")

    # ---- counts

    def compare_counts(self) -> None:
        """This copy's counts next to the release's official ones (differences make one note)."""
        for name, official in self.manifest.counts.items():
            mine = self._local_count(name)
            if mine is not None:
                self.report.counts[name] = (mine, int(official))
        differ = {name: pair for name, pair in self.report.counts.items() if pair[0] != pair[1]}
        if differ:
            mine = ", ".join(f"{m} {name}" for name, (m, _) in differ.items())
            official = ", ".join(f"{o} {name}" for name, (_, o) in differ.items())
            self.report.add(
                "note",
                f"this copy has {mine}; the official release ({self.manifest.version}) has {official}: "
                "a partial copy, a subset or another version?",
            )

    def _local_count(self, name: str) -> int | None:
        for column in COUNT_COLUMNS.get(name, ()):
            definer = self._definer(column)
            holders = [definer] if definer else [t for t, scan in self.scans.items() if column in scan.distinct]
            if holders:
                return len(self.scans[holders[0]].distinct.get(column, set()))
        return None

    def _relative(self, path: Path) -> str:
        try:
            return Path(path).relative_to(self.root).as_posix()
        except ValueError:
            return str(path)


def _evenly(items: list, count: int) -> list:
    """At most ``count`` items spread evenly over ``items`` (first and last included)."""
    if len(items) <= count:
        return list(items)
    return [items[i] for i in sorted(set(np.linspace(0, len(items) - 1, count).round().astype(int)))]


# ---------------------------------------------------------------------- content via the reader


def _check_content(name: str, root: Path, images_root: Path | None, report: CheckReport, decode: int | None, workers: int = 0, progress: bool = False) -> None:
    """Open the reader on everything, report its stats and skips, decode the images."""
    try:
        reader = DATASETS.get(name).reader_class()(root, split="all", grid=32, images_root=images_root, require_gaze=False, name=name)
    except UserError as error:
        report.add("error", f"the reader cannot use this copy: {error}")
        return
    report.stats.update({str(k): int(v) for k, v in reader.stats().items()})
    for reason, count in sorted(Counter(reader.skips).items(), key=lambda item: -item[1]):
        if count:
            report.add("warning", f"{reason}: {count}")
    report.usable_images = len(reader)
    if not len(reader):
        report.add("error", "no image is usable (see the warnings above for what was left out)")
        return
    if getattr(reader, "has_gaze", False):
        for key, value in report.stats.items():
            if "with gaze" in key and value == 0:
                report.add("warning", f"no usable gaze ({key}: 0): gaze scoring is impossible with this copy; see the warnings above")
    _check_images(reader, report, decode, workers, progress)


@dataclass(frozen=True)
class _ImageResult:
    """What decoding one image (by loading its first item) found; ``None`` fields: nothing wrong."""

    image_id: str
    path: str
    size: tuple[int, int] | None = None  # (width, height) in the file's header, when it differs from the tables
    unreadable: str | None = None  # the UnreadableImage message
    failure: str | None = None  # another UserError: run stops on it


class _ImageCheck(torch.utils.data.Dataset):
    """Item ``indices[k]`` of ``reader`` decoded and checked, for the worker processes (never raises a UserError)."""

    def __init__(self, reader, indices: list[int]):
        self.reader, self.indices = reader, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> _ImageResult:
        record = self.reader.records.iloc[self.indices[position]]
        found = _ImageResult(str(record.image_id), str(record.image_path))
        try:
            width, height = image_size(Path(record.image_path))
            self.reader[self.indices[position]]
        except UnreadableImage as error:
            return _ImageResult(found.image_id, found.path, unreadable=str(error))
        except UserError as error:
            return _ImageResult(found.image_id, found.path, failure=str(error))
        expected = record.get("width"), record.get("height")
        known = all(value is not None and pd.notna(value) for value in expected)
        if known and (width, height) != (int(expected[0]), int(expected[1])):
            return _ImageResult(found.image_id, found.path, size=(width, height))
        return found


def _single(item):
    return item


def _check_images(reader, report: CheckReport, decode: int | None, workers: int = 0, progress: bool = False) -> None:
    """Decode every image (or a sample), as run loads it, and report what run will do with the bad ones."""
    if "image_path" not in reader.records.columns:
        report.add("note", f"images not checked: the {reader.name} reader lists no image_path")
        return
    paths = reader.records.image_path.astype(str)
    firsts = [int(i) for i in np.flatnonzero(~paths.duplicated().to_numpy())]  # one item per image (REFLACX: several readings)
    sample = firsts if decode is None else _evenly(firsts, decode)
    checks = _ImageCheck(reader, sample)
    loader = torch.utils.data.DataLoader(checks, batch_size=None, num_workers=workers if len(sample) > 1 else 0, collate_fn=_single)
    unreadable, failed = [], []
    for found in tqdm(loader, total=len(sample), desc=f"decoding {reader.name} images", unit="image", disable=None if progress else True):
        if found.unreadable:
            unreadable.append(found)
        elif found.failure:
            failed.append(found)
        elif found.size:
            _report_size(reader, report, found)
    decoded = len(sample) - len(unreadable) - len(failed)
    scope = "" if decode is None else " (sample)"
    report.stats[f"images decoded{scope}"] = decoded
    report.stats[f"unreadable images{scope}"] = len(unreadable)
    if decode is not None and len(sample) < len(firsts):
        report.add("note", f"only {len(sample)} of {len(firsts)} images were decoded (--quick): an unreadable image elsewhere is not found")
    _report_unreadable(report, unreadable, len(sample))
    if failed:  # one error: a missing decoder plugin fails every image alike
        more = f" ({len(failed) - 1} more item(s) fail too)" if len(failed) > 1 else ""
        report.add("error", f"item {failed[0].image_id} cannot be loaded: {failed[0].failure}; run and train stop on it{more}")


def _report_size(reader, report: CheckReport, found: _ImageResult) -> None:
    record = reader.records[reader.records.image_path.astype(str) == found.path].iloc[0]
    report.add(
        "warning",
        f"image {found.path} is {found.size[0]}x{found.size[1]} pixels but the tables say {int(record.width)}x{int(record.height)}: "
        "gaze would be misplaced; replace the image with the release's copy",
    )


def _report_unreadable(report: CheckReport, unreadable: list[_ImageResult], checked: int) -> None:
    """A warning saying what run does with unreadable images, one per file (capped); an error when none decodes."""
    if not unreadable:
        return
    if len(unreadable) == checked:
        report.add("error", f"none of the {checked} images checked decodes: the image files are damaged or not images; replace them with the release's copies")
    else:
        report.add("warning", f"{len(unreadable)} unreadable image(s): run and train skip and count them (--strict stops); replace them with the release's copies")
    for found in unreadable[:UNREADABLE_LISTED]:
        report.add("warning", f"image {found.image_id} does not decode: {found.unreadable}")
    if len(unreadable) > UNREADABLE_LISTED:
        report.add("warning", f"... and {len(unreadable) - UNREADABLE_LISTED} more unreadable image(s), not listed")
