"""The embedded generator: deterministic, the EGD schema exactly, and a real class signal."""

import hashlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from gazebench.data import synth
from gazebench.data.egd import EGDDataset
from gazebench.errors import UserError

FIXATION_COLUMNS_IN_RELEASE = "SESSION_ID, MEDIA_ID, DICOM_ID, CNT, Time (in secs), TIMETICK(f=10000000), FPOGX, FPOGY, FPOGS, FPOGD, FPOGID, FPOGV, BPOGX, BPOGY, BPOGV, LPCX, LPCY, LPD, LPS, LPV, RPCX, RPCY, RPD, RPS, RPV, BKID, BKDUR, BKPMIN, LPMM, LPMMV, RPMM, RPMMV, SACCADE_MAG, SACCADE_DIR, VID_FRAME, X_ORIGINAL, Y_ORIGINAL".split(", ")


def tree_digest(root):
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    return synth.generate(tmp_path_factory.mktemp("synth") / "a", n=12, seed=5, progress=False)


def test_same_seed_same_bytes_other_seed_differs(generated, tmp_path):
    assert tree_digest(synth.generate(tmp_path / "b", n=12, seed=5, progress=False)) == tree_digest(generated)
    assert tree_digest(synth.generate(tmp_path / "c", n=12, seed=6, progress=False)) != tree_digest(generated)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_master_sheet_and_fixations_follow_the_release_schema(generated):
    master = pd.read_csv(generated / "master_sheet.csv", dtype=str)
    assert len(master.columns) == 59 and list(master.columns[:4]) == ["dicom_id", "path", "study_id", "patient_id"]
    assert list(master.columns) == synth.MASTER_COLUMNS
    assert (master[["Normal", "CHF", "pneumonia"]].astype(int).sum(axis=1) == 1).all()
    assert master.dicom_id.str.fullmatch(r"([0-9a-f]{8}-){4}[0-9a-f]{8}").all()
    assert master.path.str.fullmatch(r"files/p1\d/p1\d{7}/s5\d{7}/[0-9a-f-]{44}\.dcm").all()
    assert master.patient_id.duplicated().any()  # some patients have two images
    fixations = pd.read_csv(generated / "fixations.csv")
    assert list(fixations.columns) == FIXATION_COLUMNS_IN_RELEASE
    boxes = pd.read_csv(generated / "bounding_boxes.csv")
    assert list(boxes.columns) == ["dicom_id", "bbox_name", "x1", "x2", "y1", "y2"]
    assert {"cardiac silhouette", "left lung", "right lung", "trachea"} <= set(boxes.bbox_name)
    assert (boxes.x1 <= boxes.x2).all() and (boxes.y1 <= boxes.y2).all()


def test_files_exist_where_the_release_puts_them(generated):
    master = pd.read_csv(generated / "master_sheet.csv", dtype=str)
    for row in master.itertuples():
        image = Image.open(generated / row.path.replace(".dcm", ".jpg"))
        assert image.mode == "L"
        folder = generated / "audio_segmentation_transcripts" / row.dicom_id
        for name in ("left_lung", "right_lung", "mediastanum", "aortic_knob", "evidence"):
            assert Image.open(folder / f"{name}.png").size == image.size
        evidence = np.asarray(Image.open(folder / "evidence.png")) > 0
        assert evidence.any() == (row.Normal == "0")


def test_original_coordinates_follow_the_release_formula(generated):
    master = pd.read_csv(generated / "master_sheet.csv", dtype={"dicom_id": str})
    fixations = pd.read_csv(generated / "fixations.csv", dtype={"DICOM_ID": str}).merge(master, left_on="DICOM_ID", right_on="dicom_id")
    on_image = fixations.X_ORIGINAL >= 0
    assert 0 < (~on_image).mean() < 0.1  # a few fixations off the displayed image, as in the release
    shown = fixations[on_image]
    sizes = {row.dicom_id: Image.open(generated / row.path.replace(".dcm", ".jpg")).size for row in master.itertuples()}
    width = shown.DICOM_ID.map(lambda d: sizes[d][0])
    height = shown.DICOM_ID.map(lambda d: sizes[d][1])
    expected_x = (width / (1920 - shown.image_left_pad - shown.image_right_pad) * (shown.FPOGX * 1920 - shown.image_left_pad)).astype(int)
    expected_y = (height / (1080 - shown.image_top_pad - shown.image_bottom_pad) * (shown.FPOGY * 1080 - shown.image_top_pad)).astype(int)
    assert (np.abs(expected_x - shown.X_ORIGINAL) <= 1).all() and (np.abs(expected_y - shown.Y_ORIGINAL) <= 1).all()
    assert (shown.X_ORIGINAL < width).all() and (shown.Y_ORIGINAL < height).all()


def test_class_signal_and_gaze_on_the_evidence(generated):
    dataset = EGDDataset(generated, split="all", grid=64, name="synth")
    heart_share, gaze_on_evidence, evidence_share = {0: [], 1: []}, [], []
    for index in range(len(dataset)):
        sample = dataset[index]
        if sample.label in heart_share:
            row = sample.image[0, 40]  # a row through the heart
            heart_share[sample.label].append(float((row > 0.55).float().mean()))
        if sample.label != 0:
            gaze_on_evidence.append(float(sample.gaze[sample.evidence].sum()))
            evidence_share.append(float(sample.evidence.float().mean()))
    assert np.mean(heart_share[1]) > np.mean(heart_share[0])  # CHF: wider cardiac silhouette
    assert np.mean(gaze_on_evidence) > 2 * np.mean(evidence_share)  # dwell on the abnormality


def test_manifest_sigma_is_the_generator_sigma():
    from gazebench.data import synth
    from gazebench.data.manifest import load_manifest

    assert load_manifest("synth").gaze.sigma == synth.GAZE_SIGMA_PX
    assert load_manifest("synth").tables == load_manifest("egd").tables  # the same layout


def test_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="already exists and is not empty"):
        synth.generate(tmp_path, n=3, progress=False)
