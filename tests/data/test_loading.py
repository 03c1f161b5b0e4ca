"""Items whose image file does not decode: skipped and counted by ``load_items`` and ``data prepare``, or a stop with strict."""

import pytest
import yaml

from gazebench.data.cache import MANIFEST_FILE, prepare
from gazebench.data.egd import EGDDataset
from gazebench.data.images import UnreadableImage
from gazebench.data.loading import Unreadable, load_items
from gazebench.data.mimic import MimicDataset
from gazebench.errors import UserError
from tests.fixtures import egd_layout as egd
from tests.fixtures.mimic_layout import write_mimic_jpg


@pytest.fixture
def truncated(tmp_path):
    """A 6-image EGD copy whose image 3 is cut inside its pixel data; (reader, its item index, the file)."""
    root = tmp_path / "egd"
    master = egd.write_egd(root)
    path = egd.image_path(root, master, 3)
    egd.truncate_image(path)
    reader = EGDDataset(root, split="all", grid=32, require_gaze=False)
    index = int(reader.records.index[reader.records.image_id == master.dicom_id[3]][0])
    return reader, index, path


def test_load_items_skips_an_unreadable_image_says_which_and_why_and_skips_nothing_else(truncated, monkeypatch):
    """Only a file that does not decode is skipped: any other problem is not about one image, and stops."""
    reader, bad, path = truncated
    samples, skipped = load_items(reader, range(len(reader)), strict=False)
    assert [s.image_id for s in samples] == [reader.records.image_id.iloc[i] for i in range(len(reader)) if i != bad]
    assert len(skipped) == 1 and isinstance(skipped[0], Unreadable)
    assert (skipped[0].index, skipped[0].image_id) == (bad, reader.records.image_id.iloc[bad])
    assert skipped[0].reason.startswith(f"cannot read image {path}: ") and skipped[0].reason.endswith("; replace or remove the file")

    def broken(self, image_id):
        raise UserError("cannot read the transcript x.json (bad); replace it with the release's copy")

    monkeypatch.setattr(EGDDataset, "_transcript", broken)
    with pytest.raises(UserError, match="cannot read the transcript"):
        load_items(reader, [0], strict=False)


def test_strict_stops_at_the_first_unreadable_image_with_its_one_line_error(truncated):
    reader, _, path = truncated
    with pytest.raises(UnreadableImage, match=rf"^cannot read image {path}: .*; replace or remove the file$"):
        load_items(reader, range(len(reader)), strict=True)


def test_a_zero_byte_image_is_skipped_too(tmp_path):
    """MIMIC-CXR-JPG sizes come from the metadata, so an empty JPG opens and fails only when decoded."""
    release = write_mimic_jpg(tmp_path)
    image = release.image("50000004", "PA")
    (tmp_path / image.path).write_bytes(b"")
    reader = MimicDataset(tmp_path, split="all", grid=32, require_gaze=False)
    samples, skipped = load_items(reader, range(len(reader)), strict=False)
    assert len(samples) == len(reader) - 1 and [item.image_id for item in skipped] == [image.dicom_id]
    assert "empty file (0 bytes)" in skipped[0].reason


@pytest.mark.parametrize("workers", [0, 2])
def test_prepare_caches_the_rest_and_counts_and_names_the_unreadable_image(truncated, workers):
    reader, bad, path = truncated
    report = prepare(reader, workers=workers, progress=False)
    assert (report.items, report.built, report.reused) == (6, 5, 0)
    assert [item.index for item in report.unreadable] == [bad]
    assert "skipped: 1 unreadable image files (empty, truncated or corrupt; skipped, --strict stops)" in report.summary()
    assert str(path) in report.summary()
    record = yaml.safe_load((report.folder / MANIFEST_FILE).read_text())
    assert len(record["unreadable"]) == 1 and str(path) in record["unreadable"][0]
    assert not (report.folder / "items" / f"{reader.item_key(bad)}.pt").exists()
