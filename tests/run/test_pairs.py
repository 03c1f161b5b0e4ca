"""What the loop hands on: readers and lesions collated into the batch, gaze groups, localisation masks."""

from __future__ import annotations

import torch

from gazebench.data.sample import ReaderGaze, Sample, collate, fixation_map
from gazebench.metrics.base import GazeTargets
from gazebench.run.pairs import ExplanationPairs, gaze_groups, localisation_masks

GRID = 8


def sample(image_id: str, readers=(), lesions=None, evidence=None, labels=(1.0, 0.0)) -> Sample:
    generator = torch.Generator().manual_seed(len(image_id) + len(readers))
    gaze = {name: torch.rand(GRID, GRID, generator=generator) for name in readers}
    fixations = {name: torch.rand(3, 3, generator=generator) * GRID for name in readers}
    return Sample(
        image_id=image_id, patient_id=f"p-{image_id}", image=torch.zeros(1, GRID, GRID), labels=torch.tensor(labels),
        gaze=torch.zeros(GRID, GRID), fixations=torch.zeros(0, 3),
        readers={name: ReaderGaze(gaze[name] / gaze[name].sum(), fixations[name]) for name in readers},
        lesions=lesions or {}, evidence=evidence,
    )


def square(top: int, left: int) -> torch.Tensor:
    mask = torch.zeros(GRID, GRID, dtype=torch.bool)
    mask[top : top + 2, left : left + 2] = True
    return mask


def test_collate_keeps_every_readers_gaze_and_select_follows_the_rows():
    samples = [sample("a", ["r1", "r2"]), sample("b"), sample("c", ["r3", "r4", "r5"]), sample("d", ["only"])]
    batch = collate(samples)
    readings = batch.readings
    assert readings.rows == [0, 0, 2, 2, 2] and readings.readers == ["r1", "r2", "r3", "r4", "r5"]  # one reader alone: no per-reader row
    torch.testing.assert_close(readings.gaze[3], samples[2].readers["r4"].gaze)
    torch.testing.assert_close(readings.fixation_maps[1], fixation_map(samples[0].readers["r2"].fixations, GRID))
    picked = batch.select([2, 1, 0, 2]).readings  # an image twice (two targets), one without readers
    assert picked.rows == [0, 0, 0, 2, 2, 3, 3, 3] and picked.readers == ["r3", "r4", "r5", "r1", "r2", "r3", "r4", "r5"]
    assert picked.others(1) == [0, 2] and picked.others(4) == [3]
    assert batch.select([1, 3]).readings is None


def test_per_reader_group_scores_each_reading_with_the_merged_negatives_and_masks():
    batch = collate([sample("a", ["r1", "r2"]), sample("b")])
    pairs = ExplanationPairs([0, 1, 0], torch.tensor([0, 0, 1]), torch.ones(2, 2), batch.select([0, 1, 0]))
    negatives = torch.arange(3.0)[:, None, None].expand(3, GRID, GRID)
    masks = torch.stack([square(0, 0), square(2, 2), square(4, 4)])
    merged = GazeTargets.from_batch(pairs.batch, centre_bias=torch.ones(GRID, GRID) / GRID**2, negatives=negatives, mask=masks)
    first, per_reader = gaze_groups(pairs, merged)
    assert first.positions == [0, 1, 2] and not first.per_reader
    assert per_reader.positions == [0, 0, 2, 2] and per_reader.batch.readers == ["r1", "r2", "r1", "r2"]
    assert per_reader.batch.image_ids == ["a"] * 4 and per_reader.batch.readings is None
    torch.testing.assert_close(per_reader.targets.density, pairs.batch.readings.gaze)
    torch.testing.assert_close(per_reader.targets.fixations, pairs.batch.readings.fixation_maps)
    assert per_reader.targets.negatives[:, 0, 0].tolist() == [0.0, 0.0, 2.0, 2.0]  # the image's, not the reader's
    assert torch.equal(per_reader.targets.mask, masks[[0, 0, 2, 2]]) and per_reader.targets.centre_bias is merged.centre_bias


def test_without_several_readers_there_is_one_group():
    batch = collate([sample("a"), sample("b", ["r1"])])
    pairs = ExplanationPairs([0, 1], torch.tensor([0, 0]), torch.ones(2, 2), batch.select([0, 1]))
    assert len(gaze_groups(pairs, GazeTargets.from_batch(pairs.batch))) == 1


def test_localisation_masks_take_the_target_lesion_else_the_evidence_of_a_true_label():
    lesioned = sample("a", lesions={"CHF": square(0, 0), "pneumonia": square(4, 4)}, evidence=square(6, 6))
    no_finding = sample("b", lesions={}, evidence=square(2, 2))
    other_label = sample("c", evidence=square(6, 0), labels=(0.0, 1.0))
    batch = collate([lesioned, no_finding, other_label])
    assert batch.annotated.tolist() == [True, False, False] and set(batch.lesions) == {"CHF", "pneumonia"}
    # model outputs 0, 1 are the dataset classes CHF, pneumonia
    pairs = ExplanationPairs([0, 0, 1, 2, 2], torch.tensor([0, 1, 0, 0, 1]), torch.ones(3, 2), batch.select([0, 0, 1, 2, 2]))
    masks = localisation_masks(pairs, (0, 1), ("CHF", "pneumonia"))
    assert torch.equal(masks[0], square(0, 0)) and torch.equal(masks[1], square(4, 4))  # the lesion of the target, never the evidence
    assert torch.equal(masks[2], square(2, 2))  # no lesions: the evidence of its true label
    assert not masks[3].any() and torch.equal(masks[4], square(6, 0))  # CHF is not a label of image c: empty (NaN later)
    unknown = localisation_masks(pairs, (-1, 1), ("CHF", "pneumonia"))  # an output the data lack explains nothing
    assert not unknown[0].any() and not unknown[2].any() and torch.equal(unknown[1], square(4, 4))
