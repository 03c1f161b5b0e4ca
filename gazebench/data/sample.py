"""Sample and Batch: one image and everything known about it, on the scoring grid.

Every spatial field lives on the protocol's square grid (``grid`` x ``grid`` pixels): the
original image letterboxed (aspect preserved, centred, zero padding).  Fixation coordinates
are grid pixels (x to the right, y down, origin at the top-left pixel's corner).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


def one_hot(index: int, n_classes: int) -> torch.Tensor:
    """Single-label ``labels`` vector: 1 at ``index``, 0 elsewhere."""
    labels = torch.zeros(n_classes)
    labels[index] = 1
    return labels


@dataclass
class ReaderGaze:
    """One radiologist's gaze on an image, when several read it (REFLACX)."""

    gaze: torch.Tensor  # [G, G], sums to 1
    fixations: torch.Tensor  # [N, 3]


@dataclass
class Sample:
    image_id: str
    patient_id: str
    image: torch.Tensor  # [1, G, G] float in [0, 1]
    labels: torch.Tensor  # [C] float: 1 positive, 0 negative, NaN unknown/uncertain (excluded)
    gaze: torch.Tensor  # [G, G] float, sums to 1 (all zeros when the image has no fixation)
    fixations: torch.Tensor  # [N, 3] (x, y, duration in s) on the grid
    regions: dict[str, torch.Tensor] = field(default_factory=dict)  # anatomy name -> [G, G] bool
    evidence: torch.Tensor | None = None  # [G, G] bool, where the abnormality is (may be empty)
    reader: str = "all"  # whose gaze ``gaze`` is: a reader id, or ``all`` when merged
    readers: dict[str, ReaderGaze] = field(default_factory=dict)  # each reader's own gaze, when several
    boxes: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [4] xmin, ymin, xmax, ymax (grid)
    lesions: dict[str, torch.Tensor] = field(default_factory=dict)  # finding -> [G, G] bool (e.g. REFLACX ellipses)
    transcript: str | None = None

    @property
    def label(self) -> int:
        """Index of the positive class of single-label data (-1 when no class is positive)."""
        positive = torch.nan_to_num(self.labels, nan=0.0)
        return int(positive.argmax()) if bool((positive == 1).any()) else -1


@dataclass
class Readings:
    """Each radiologist's own gaze on the images of a batch that several read (REFLACX), one row per reading.

    Collated with the batch, so that scoring against single readers needs nothing beside it.
    Readings of one image follow each other, in the order of the sample's ``readers``.
    """

    rows: list[int]  # the batch row (image) of each reading
    readers: list[str]  # whose reading it is
    gaze: torch.Tensor  # [R, G, G], each sums to 1 (or 0 without fixations)
    fixation_maps: torch.Tensor  # [R, G, G] fixations per grid pixel
    fixations: list[torch.Tensor]  # R tensors [N_r, 3]

    def to(self, device: torch.device | str) -> "Readings":
        return Readings(self.rows, self.readers, self.gaze.to(device), self.fixation_maps.to(device), [f.to(device) for f in self.fixations])

    def select(self, index: list[int]) -> "Readings | None":
        """The readings of batch rows ``index`` (repeats allowed), renumbered to their new rows."""
        picked = [(new_row, reading) for new_row, row in enumerate(index) for reading, owner in enumerate(self.rows) if owner == row]
        if not picked:
            return None
        readings = torch.tensor([reading for _, reading in picked], dtype=torch.long, device=self.gaze.device)
        return Readings(
            rows=[new_row for new_row, _ in picked],
            readers=[self.readers[reading] for _, reading in picked],
            gaze=self.gaze[readings],
            fixation_maps=self.fixation_maps[readings],
            fixations=[self.fixations[reading] for _, reading in picked],
        )

    def others(self, reading: int) -> list[int]:
        """The other readings of the same image as ``reading``."""
        return [other for other, row in enumerate(self.rows) if row == self.rows[reading] and self.readers[other] != self.readers[reading]]


@dataclass
class Batch:
    image_ids: list[str]
    patient_ids: list[str]
    images: torch.Tensor  # [B, 1, G, G]
    labels: torch.Tensor  # [B, C] float: 1 / 0 / NaN (see Sample.labels)
    gaze: torch.Tensor  # [B, G, G], each map sums to 1 (or 0 without fixations)
    fixation_maps: torch.Tensor  # [B, G, G] float: number of fixations per grid pixel
    fixations: list[torch.Tensor]  # B tensors [N_i, 3]
    regions: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [B, G, G] bool
    evidence: torch.Tensor | None = None  # [B, G, G] bool
    readers: list[str] = field(default_factory=list)  # whose gaze each row is ("all" when merged)
    readings: Readings | None = None  # each reader's own gaze, for the images that several read
    lesions: dict[str, torch.Tensor] = field(default_factory=dict)  # finding -> [B, G, G] bool (all False where a row lacks it)
    annotated: torch.Tensor | None = None  # [B] bool: the row's image has lesion annotations (``lesions`` speaks for it)

    def __len__(self) -> int:
        return len(self.image_ids)

    def to(self, device: torch.device | str) -> "Batch":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Batch(
            image_ids=self.image_ids,
            patient_ids=self.patient_ids,
            images=move(self.images),
            labels=move(self.labels),
            gaze=move(self.gaze),
            fixation_maps=move(self.fixation_maps),
            fixations=[move(f) for f in self.fixations],
            regions={k: move(v) for k, v in self.regions.items()},
            evidence=move(self.evidence),
            readers=self.readers,
            readings=move(self.readings),
            lesions={k: move(v) for k, v in self.lesions.items()},
            annotated=move(self.annotated),
        )

    def select(self, index: list[int]) -> "Batch":
        """The batch of rows ``index`` (repeats allowed), e.g. one row per (image, target) pair."""
        rows = torch.tensor(index, dtype=torch.long, device=self.images.device)
        pick = lambda t: None if t is None else t[rows]  # noqa: E731
        return Batch(
            image_ids=[self.image_ids[i] for i in index],
            patient_ids=[self.patient_ids[i] for i in index],
            images=pick(self.images),
            labels=pick(self.labels),
            gaze=pick(self.gaze),
            fixation_maps=pick(self.fixation_maps),
            fixations=[self.fixations[i] for i in index],
            regions={k: pick(v) for k, v in self.regions.items()},
            evidence=pick(self.evidence),
            readers=[self.readers[i] for i in index],
            readings=self.readings.select(index) if self.readings is not None else None,
            lesions={k: pick(v) for k, v in self.lesions.items()},
            annotated=pick(self.annotated),
        )

    def with_readings(self) -> "Batch":
        """One row per reading of ``readings``: the rows of their images, scored against each reader's own gaze."""
        readings = self.readings
        batch = self.select(readings.rows)
        batch.gaze, batch.fixation_maps, batch.fixations = readings.gaze, readings.fixation_maps, readings.fixations
        batch.readers, batch.readings = readings.readers, None
        return batch


def fixation_map(fixations: torch.Tensor, grid: int) -> torch.Tensor:
    """Binary-count map [G, G]: +1 at the grid pixel of each fixation (off-grid ones ignored)."""
    counts = torch.zeros(grid * grid, dtype=torch.float32)
    if len(fixations):
        cols = fixations[:, 0].floor().long()
        rows = fixations[:, 1].floor().long()
        inside = (cols >= 0) & (cols < grid) & (rows >= 0) & (rows < grid)
        index = rows[inside] * grid + cols[inside]
        counts.index_add_(0, index, torch.ones(len(index)))
    return counts.view(grid, grid)


def collate(samples: list[Sample]) -> Batch:
    """Stack Samples into a Batch (regions: the names common to every sample)."""
    grid = samples[0].image.shape[-1]
    region_names = set(samples[0].regions)
    for sample in samples[1:]:
        region_names &= set(sample.regions)
    evidence = None
    if all(s.evidence is not None for s in samples):
        evidence = torch.stack([s.evidence for s in samples])
    lesion_names = sorted({name for s in samples for name in s.lesions})
    empty = torch.zeros(grid, grid, dtype=torch.bool)
    return Batch(
        image_ids=[s.image_id for s in samples],
        patient_ids=[s.patient_id for s in samples],
        images=torch.stack([s.image for s in samples]),
        labels=torch.stack([s.labels.float() for s in samples]),
        gaze=torch.stack([s.gaze for s in samples]),
        fixation_maps=torch.stack([fixation_map(s.fixations, grid) for s in samples]),
        fixations=[s.fixations for s in samples],
        regions={name: torch.stack([s.regions[name] for s in samples]) for name in sorted(region_names)},
        evidence=evidence,
        readers=[s.reader for s in samples],
        readings=collate_readings(samples, grid),
        lesions={name: torch.stack([s.lesions.get(name, empty) for s in samples]) for name in lesion_names},
        annotated=torch.tensor([bool(s.lesions) for s in samples]) if lesion_names else None,
    )


def collate_readings(samples: list[Sample], grid: int) -> Readings | None:
    """Every reader's gaze of the samples that several radiologists read (None when none was)."""
    readings = [(row, reader, gaze) for row, sample in enumerate(samples) if len(sample.readers) > 1 for reader, gaze in sample.readers.items()]
    if not readings:
        return None
    return Readings(
        rows=[row for row, _, _ in readings],
        readers=[reader for _, reader, _ in readings],
        gaze=torch.stack([gaze.gaze for _, _, gaze in readings]),
        fixation_maps=torch.stack([fixation_map(gaze.fixations, grid) for _, _, gaze in readings]),
        fixations=[gaze.fixations for _, _, gaze in readings],
    )
