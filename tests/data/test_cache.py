"""`gazebench data prepare`: the preprocessed cache is exact, resumable, keyed and marked."""

import os
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from gazebench.cli import main
from gazebench.data.cache import CachedDataset, cache_dir, prepare
from gazebench.data.datasets import open_dataset
from gazebench.data.egd import EGDDataset


def assert_same_sample(a, b):
    assert (a.image_id, a.patient_id, a.reader, a.transcript) == (b.image_id, b.patient_id, b.reader, b.transcript)
    for name in ("image", "labels", "gaze", "fixations"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=0, atol=0, equal_nan=True, msg=name)
    assert a.regions.keys() == b.regions.keys() and all(torch.equal(a.regions[k], b.regions[k]) for k in a.regions)
    assert a.boxes.keys() == b.boxes.keys() and all(torch.equal(a.boxes[k], b.boxes[k]) for k in a.boxes)
    assert (a.evidence is None) == (b.evidence is None)
    if a.evidence is not None:
        assert torch.equal(a.evidence, b.evidence)


def test_prepared_samples_equal_the_reader_samples_and_a_second_prepare_does_no_work(tiny_synth):
    dataset = EGDDataset(tiny_synth, split="all", grid=64, name="synth", require_gaze=False)
    first = prepare(dataset, workers=2, progress=False)
    assert (first.items, first.built, first.reused) == (12, 12, 0)
    second = prepare(dataset, workers=2, progress=False)
    assert (second.built, second.reused) == (0, 12)
    cached = open_dataset("synth", tiny_synth, "all", 64, require_gaze=False)
    assert isinstance(cached, CachedDataset)
    for index in range(len(dataset)):
        assert cached.cache.has(dataset.item_key(index))
        assert_same_sample(cached[index], dataset[index])
    assert (first.folder / "splits.csv").is_file() and (first.folder / "prepared.yaml").is_file()


class Interrupting(torch.utils.data.Dataset):
    """The reader, stopped by Ctrl-C after ``stop_after`` items."""

    def __init__(self, dataset, stop_after):
        self.dataset, self.stop_after, self.calls = dataset, stop_after, 0

    def __getitem__(self, index):
        self.calls += 1
        if self.calls > self.stop_after:
            raise KeyboardInterrupt
        return self.dataset[index]

    def __len__(self):
        return len(self.dataset)

    def __getattr__(self, name):
        return getattr(self.dataset, name)


def test_an_interrupted_prepare_resumes_where_it_stopped(tiny_synth):
    dataset = EGDDataset(tiny_synth, split="all", grid=32, name="synth", require_gaze=False)
    with pytest.raises(KeyboardInterrupt):
        prepare(Interrupting(dataset, stop_after=5), workers=0, progress=False)
    items = list((cache_dir(dataset) / "items").glob("*.pt"))
    assert len(items) == 5 and not list((cache_dir(dataset) / "items").glob(".*tmp"))
    resumed = prepare(dataset, workers=0, progress=False)
    assert (resumed.built, resumed.reused) == (7, 5)


def test_the_key_follows_the_preprocessing_and_the_copy(tiny_synth, tmp_path):
    base = EGDDataset(tiny_synth, split="all", grid=32, name="synth")
    assert cache_dir(EGDDataset(tiny_synth, split="test", grid=32, name="synth")) == cache_dir(base)  # split is not part of it
    assert cache_dir(EGDDataset(tiny_synth, split="all", grid=48, name="synth")) != cache_dir(base)
    wider = open_dataset("synth", tiny_synth, "all", 32, gaze_sigma=40.0, use_cache=False)
    assert cache_dir(wider) != cache_dir(base) and "sigma40px" in cache_dir(wider).name
    master = Path(tiny_synth) / "master_sheet.csv"
    stat, before = master.stat(), cache_dir(base)
    try:
        os.utime(master, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # an edited copy
        assert cache_dir(base) != before
    finally:
        os.utime(master, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_credentialed_caches_carry_the_data_use_notice(tiny_synth):
    as_egd = EGDDataset(tiny_synth, split="all", grid=32, name="egd", require_gaze=False)  # the synthetic copy is in EGD's layout
    report = prepare(as_egd, workers=0, progress=False)
    notice = (report.folder / "DATA_USE.md").read_text()
    assert "PhysioNet Credentialed Health Data" in notice and "egd-cxr" in notice
    synthetic = prepare(EGDDataset(tiny_synth, split="all", grid=32, name="synth", require_gaze=False), workers=0, progress=False)
    assert not (synthetic.folder / "DATA_USE.md").exists()


def test_cli_prepare_reports_built_then_cached(tiny_synth):
    runner = CliRunner()
    args = ["data", "prepare", "--dataset", "synth", "--root", str(tiny_synth), "--grid", "32", "--workers", "0"]
    first = runner.invoke(main, args)
    assert first.exit_code == 0, first.output
    assert "12 built, 0 already cached" in first.output
    second = runner.invoke(main, args)
    assert "0 built, 12 already cached" in second.output


def test_cli_prepare_needs_a_root_for_credentialed_data():
    result = CliRunner().invoke(main, ["data", "prepare", "--dataset", "egd"])
    assert result.exit_code == 2
    assert result.output.startswith("gazebench: error: --root is required") and "physionet.org" in result.output


def test_reflacx_samples_keep_every_reader_through_the_cache(tmp_path):
    from gazebench.data.reflacx import ReflacxDataset
    from tests.fixtures.reflacx_layout import write_reflacx

    write_reflacx(tmp_path / "reflacx", images_root=tmp_path / "jpg")
    dataset = ReflacxDataset(tmp_path / "reflacx", split="all", grid=48, images_root=tmp_path / "jpg", require_gaze=False)
    report = prepare(dataset, workers=0, progress=False)
    assert report.built == len(dataset) and (report.folder / "DATA_USE.md").is_file()
    cached = open_dataset("reflacx", tmp_path / "reflacx", "all", 48, images_root=tmp_path / "jpg", require_gaze=False)
    several = 0
    for index in range(len(dataset)):
        fresh, stored = dataset[index], cached[index]
        assert_same_sample(stored, fresh)
        assert stored.readers.keys() == fresh.readers.keys()
        for name in fresh.readers:
            assert torch.equal(stored.readers[name].gaze, fresh.readers[name].gaze)
        assert stored.lesions.keys() == fresh.lesions.keys()
        several += len(fresh.readers) > 1
    assert several >= 2
