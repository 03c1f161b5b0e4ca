"""The embedded synthetic dataset, written in the exact on-disk layout of the EGD release.

``generate(out, n, seed)`` writes ``master_sheet.csv`` (the 59 real columns), ``fixations.csv``
(the 37 real columns, ``X_ORIGINAL/Y_ORIGINAL = -1`` for gaze off the displayed image),
``bounding_boxes.csv``, the anatomy masks and an ``evidence.png`` per image under
``audio_segmentation_transcripts/<dicom_id>/``, and JPG images in the MIMIC-CXR-JPG tree that
``path`` points to.  Nothing here comes from patient data except the lung outlines, which are
torchxrayvision's shipped v7labs lung masks (segmentations, no images).

Images look like frontal radiographs: dark lungs shaped by a real lung mask, a bright heart
bulging to the image right (the patient's left), mediastinum and spine, ribs, clavicles,
diaphragm and soft tissue, with varied patient size, position and exposure.  Class signal:
``CHF`` = enlarged cardiac silhouette (cardiothoracic ratio 0.58-0.66 vs 0.38-0.46) and bilateral
perihilar haze; ``pneumonia`` = a soft focal opacity in one lung zone; ``Normal`` = neither.
Gaze is a simulated reading: a scanpath mixing a centre bias, a survey of the anatomy and dwell
on the abnormality.  Everything is drawn from ``numpy.random.default_rng([seed, index])``, so
the files are identical for the same (n, seed).
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from functools import lru_cache
from io import BytesIO
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy.ndimage import distance_transform_edt, gaussian_filter
from scipy.special import expit
from skimage.measure import label, regionprops
from skimage.transform import resize
from tqdm import tqdm

from gazebench.errors import UserError

GENERATOR_VERSION = "1"
CLASS_NAMES = ("Normal", "CHF", "pneumonia")
HEIGHT_RANGE = (400, 480)
# EGD's 150 px sigma at a typical 3056 px image height, scaled to the synthetic height (440 px)
GAZE_SIGMA_PX = 150.0 * sum(HEIGHT_RANGE) / 2 / 3056
SCREEN = (1920, 1080)

DX_COLUMNS = [f"dx{i}{suffix}" for i in range(1, 10) for suffix in ("", "_icd")]
FINDING_COLUMNS = [
    "consolidation", "enlarged_cardiac_silhouette", "linear__patchy_atelectasis", "lobar__segmental_collapse",
    "not_otherwise_specified_opacity___pleural__parenchymal_opacity__", "pleural_effusion_or_thickening",
    "pulmonary_edema__hazy_opacity", "normal_anatomically", "elevated_hemidiaphragm", "hyperaeration",
    "vascular_redistribution",
]
CHX_COLUMNS = [
    "atelectasis__chx", "cardiomegaly__chx", "consolidation__chx", "edema__chx", "enlarged_cardiomediastinum__chx",
    "fracture__chx", "lung_lesion__chx", "lung_opacity__chx", "no_finding__chx", "pleural_effusion__chx",
    "pleural_other__chx", "pneumonia__chx", "pneumothorax__chx", "support_devices__chx",
]
MASTER_COLUMNS = [
    "dicom_id", "path", "study_id", "patient_id", "stay_id", "gender", "anchor_age",
    "image_top_pad", "image_bottom_pad", "image_left_pad", "image_right_pad", *DX_COLUMNS,
    "normal_reports", *CLASS_NAMES, *FINDING_COLUMNS, *CHX_COLUMNS, "cxr_exam_indication",
]
FIXATION_COLUMNS = [
    "SESSION_ID", "MEDIA_ID", "DICOM_ID", "CNT", "Time (in secs)", "TIMETICK(f=10000000)", "FPOGX", "FPOGY",
    "FPOGS", "FPOGD", "FPOGID", "FPOGV", "BPOGX", "BPOGY", "BPOGV", "LPCX", "LPCY", "LPD", "LPS", "LPV", "RPCX",
    "RPCY", "RPD", "RPS", "RPV", "BKID", "BKDUR", "BKPMIN", "LPMM", "LPMMV", "RPMM", "RPMMV", "SACCADE_MAG",
    "SACCADE_DIR", "VID_FRAME", "X_ORIGINAL", "Y_ORIGINAL",
]
CHX_BY_CLASS = {
    "Normal": {"no_finding__chx": 1},
    "CHF": {"cardiomegaly__chx": 1, "edema__chx": 1},
    "pneumonia": {"pneumonia__chx": 1, "consolidation__chx": 1},
}
FINDINGS_BY_CLASS = {
    "Normal": {"normal_anatomically": 1},
    "CHF": {"enlarged_cardiac_silhouette": 1, "pulmonary_edema__hazy_opacity": 1, "vascular_redistribution": 1},
    "pneumonia": {"consolidation": 1},
}
TRANSCRIPTS = {
    "Normal": "The lungs are clear. The heart size is normal. No acute cardiopulmonary process.",
    "CHF": "The heart is enlarged. There is perihilar haziness and vascular congestion consistent with pulmonary edema.",
    "pneumonia": "There is a focal opacity in the {zone} {side} lung zone concerning for pneumonia.",
}


# ----------------------------------------------------------------------------- anatomy

@lru_cache(maxsize=1)
def lung_shapes() -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """(image-left lung, image-right lung) boolean pairs on a 128x128 frame, from torchxrayvision."""
    import torchxrayvision

    archive = Path(torchxrayvision.__file__).parent / "data" / "semantic_masks_v7labs_lungs.zip"
    shapes = []
    with zipfile.ZipFile(archive) as bundle:
        for name in sorted(bundle.namelist()):
            if name.endswith("/"):
                continue
            mask = np.asarray(Image.open(BytesIO(bundle.read(name))).convert("L").resize((128, 128))) > 127
            pair = _two_lungs(mask)
            if pair is not None:
                shapes.append(pair)
    if not shapes:
        raise RuntimeError(f"no usable lung masks in {archive}")
    return tuple(shapes)


def _two_lungs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The two largest components, cropped to their joint box, ordered image-left, image-right."""
    labels = label(mask)
    regions = sorted(regionprops(labels), key=lambda r: r.area, reverse=True)[:2]
    if len(regions) < 2 or regions[1].area < 0.3 * regions[0].area:
        return None
    regions.sort(key=lambda r: r.centroid[1])
    rows = np.flatnonzero((labels == regions[0].label).any(1) | (labels == regions[1].label).any(1))
    cols = np.flatnonzero((labels == regions[0].label).any(0) | (labels == regions[1].label).any(0))
    crop = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    left, right = labels[crop] == regions[0].label, labels[crop] == regions[1].label
    if right.sum() == 0 or left.sum() == 0:
        return None
    return left, right


def _place(shape: np.ndarray, box: tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
    """Resize a boolean shape into box (top, left, height, width) of a canvas of ``size``."""
    top, left, height, width = box
    canvas = np.zeros(size, dtype=bool)
    placed = resize(shape.astype(float), (height, width), order=1, anti_aliasing=False) > 0.5
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + height, size[0]), min(left + width, size[1])
    canvas[y0:y1, x0:x1] = placed[y0 - top : y1 - top, x0 - left : x1 - left]
    return canvas


def _ellipse(yy, xx, cy, cx, ry, rx) -> np.ndarray:
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2


def draw_case(rng: np.random.Generator, label_name: str) -> dict:
    """One synthetic radiograph with its masks, boxes and evidence (all in image pixels)."""
    height = int(rng.integers(*HEIGHT_RANGE, endpoint=True))
    width = int(height * rng.uniform(0.82, 0.98))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    size = (height, width)
    # patient size and position vary as in real radiographs (and the reading follows them)
    centre_x = width / 2 + np.clip(rng.normal(0, 0.08), -0.15, 0.15) * width
    thorax_w = width * rng.uniform(0.56, 0.82)
    lungs_top = height * rng.uniform(0.06, 0.2)
    lungs_h = height * rng.uniform(0.5, 0.66)
    left_shape, right_shape = lung_shapes()[int(rng.integers(len(lung_shapes())))]
    box = (int(lungs_top), int(centre_x - thorax_w / 2), int(lungs_h), int(thorax_w))
    image_left_lung = _place(left_shape, box, size)
    image_right_lung = _place(right_shape, box, size)
    lungs = image_left_lung | image_right_lung
    lungs_bottom = lungs_top + lungs_h

    body_distance = _ellipse(yy, xx, height * 0.55, centre_x, height * 0.62, thorax_w * 0.68)
    body = body_distance <= 1
    image = np.where(body, 0.42 + 0.2 * np.sqrt(np.clip(1 - body_distance, 0, 1)), 0.05).astype(np.float32)
    image += 0.1 * expit((yy - lungs_bottom + 0.05 * height) / 4.0) * body  # abdomen below the diaphragm
    lung_soft = gaussian_filter(lungs.astype(np.float32), 3.0)
    texture = gaussian_filter(rng.normal(0, 1, size).astype(np.float32), 5.0) * 0.25
    lung_value = 0.17 + 0.05 * (yy - lungs_top) / lungs_h + texture
    image = image * (1 - lung_soft) + lung_value * lung_soft

    spine_w = thorax_w * 0.085
    spine = np.exp(-0.5 * ((xx - centre_x) / spine_w) ** 8) * (yy > lungs_top - 0.1 * height)
    image = np.maximum(image, (0.62 + 0.06 * (np.sin(yy / height * 64) > 0.7)) * spine * (1 - 0.6 * lung_soft))

    ratio = rng.uniform(0.58, 0.66) if label_name == "CHF" else rng.uniform(0.38, 0.46)
    heart_w = ratio * thorax_w
    heart_cx = centre_x + 0.12 * heart_w
    heart_cy = lungs_top + 0.74 * lungs_h
    heart = _ellipse(yy, xx, heart_cy, heart_cx, 0.2 * lungs_h * (ratio / 0.45) ** 0.5, heart_w / 2) <= 1
    heart_soft = gaussian_filter(heart.astype(np.float32), 2.5)
    image = image * (1 - heart_soft) + np.maximum(image, 0.64) * heart_soft

    mediastinum = (np.abs(xx - centre_x) < thorax_w * 0.08) & (yy > lungs_top) & (yy < heart_cy) & ~lungs
    knob_cx, knob_cy, knob_r = centre_x + thorax_w * 0.075, lungs_top + 0.2 * lungs_h, thorax_w * 0.05
    aortic_knob = _ellipse(yy, xx, knob_cy, knob_cx, knob_r, knob_r * 0.8) <= 1
    image = np.maximum(image, 0.58 * gaussian_filter(aortic_knob.astype(np.float32), 2.0) * 1.0)

    ribs = np.zeros(size, np.float32)
    spacing = lungs_h / 9.0
    for side in (-1, 1):
        lateral = (xx - centre_x) * side / (thorax_w / 2)
        for k in range(10):
            rib_y = lungs_top + (k - 0.5) * spacing + 1.1 * spacing * np.sin(np.pi / 2 * np.clip(lateral, 0, 1.1))
            ribs += (np.abs(yy - rib_y) < spacing * 0.2) * (lateral > 0.1) * (lateral < 1.05)
    image += 0.07 * gaussian_filter(np.clip(ribs, 0, 1), 1.0) * body

    clavicles = np.zeros(size, bool)
    for side in (-1, 1):
        t = (xx - centre_x) * side
        clavicle_y = lungs_top - 0.02 * height + 0.12 * t - 0.00035 * t**2
        clavicles |= (np.abs(yy - clavicle_y) < height * 0.011) & (t > spine_w) & (t < thorax_w * 0.46)
    image += 0.14 * gaussian_filter(clavicles.astype(np.float32), 1.0)

    evidence = np.zeros(size, bool)
    case = {"zone": None, "side": None}
    if label_name == "CHF":
        haze = np.zeros(size, np.float32)
        for side in (-1, 1):
            haze += np.exp(-0.5 * _ellipse(yy, xx, lungs_top + 0.5 * lungs_h, centre_x + side * thorax_w * 0.2, 0.22 * lungs_h, 0.14 * thorax_w))
        haze *= lungs
        image += rng.uniform(0.2, 0.28) * haze
        evidence = heart | (haze > 0.35)
    elif label_name == "pneumonia":
        lung_index = int(rng.integers(2))
        lung = (image_left_lung, image_right_lung)[lung_index]
        zone_index = int(rng.integers(3))
        radius = thorax_w * rng.uniform(0.12, 0.17)
        rows = np.flatnonzero(lung.any(axis=1))
        zone = np.zeros(size, bool)
        zone[rows[len(rows) * zone_index // 3] : rows[min(len(rows) * (zone_index + 1) // 3, len(rows) - 1)] + 1] = True
        # centre the opacity well inside the lung so that it is visible, not hidden at an edge
        depth = distance_transform_edt(lung) * zone
        candidates = np.argwhere(depth >= min(0.7 * radius, depth.max()))
        cy, cx = candidates[int(rng.integers(len(candidates)))]
        blob = np.exp(-0.5 * _ellipse(yy, xx, cy, cx, radius, radius * rng.uniform(0.8, 1.2))) * lung
        image += rng.uniform(0.45, 0.55) * blob
        evidence = blob > 0.3
        case = {"zone": ("upper", "mid", "lower")[zone_index], "side": ("right", "left")[lung_index]}

    image = gaussian_filter(image, sigma=rng.uniform(1.0, 1.8))
    image = image + rng.normal(0, 0.015, size).astype(np.float32)
    image = np.clip(image, 0, 1) ** rng.uniform(0.8, 1.25)
    regions = {
        # the patient's right lung appears on the image's left (radiological convention)
        "right_lung": image_left_lung,
        "left_lung": image_right_lung,
        "mediastanum": mediastinum,
        "aortic_knob": aortic_knob,
    }
    return {
        "image": (image * 255).round().astype(np.uint8),
        "regions": regions,
        "heart": heart,
        "evidence": evidence,
        "clavicles": clavicles,
        "case": case,
        "geometry": {"centre_x": centre_x, "thorax_w": thorax_w, "lungs_top": lungs_top, "lungs_bottom": lungs_bottom, "spine_w": spine_w},
    }


def bounding_boxes(drawn: dict) -> list[tuple[str, float, float, float, float]]:
    """Chest ImaGenome-style boxes (name, x1, x2, y1, y2) derived from the drawn anatomy."""

    def box_of(mask):
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        return float(cols[0]), float(cols[-1]), float(rows[0]), float(rows[-1])

    regions, g = drawn["regions"], drawn["geometry"]
    boxes = [("cardiac silhouette", *box_of(drawn["heart"])), ("aortic arch", *box_of(regions["aortic_knob"]))]
    boxes.append(("trachea", g["centre_x"] - g["spine_w"] * 0.6, g["centre_x"] + g["spine_w"] * 0.6, g["lungs_top"] - 0.06 * (g["lungs_bottom"] - g["lungs_top"]), g["lungs_top"] + 0.2 * (g["lungs_bottom"] - g["lungs_top"])))
    boxes.append(("upper mediastinum", g["centre_x"] - g["thorax_w"] * 0.1, g["centre_x"] + g["thorax_w"] * 0.1, g["lungs_top"], g["lungs_top"] + 0.35 * (g["lungs_bottom"] - g["lungs_top"])))
    for side in ("left", "right"):
        lung = regions[f"{side}_lung"]
        x1, x2, y1, y2 = box_of(lung)
        boxes.append((f"{side} lung", x1, x2, y1, y2))
        for index, zone in enumerate(("upper", "mid", "lower")):
            boxes.append((f"{side} {zone} lung zone", x1, x2, y1 + (y2 - y1) * index / 3, y1 + (y2 - y1) * (index + 1) / 3))
        outer_x = (x1, x1 + 0.25 * (x2 - x1)) if side == "right" else (x2 - 0.25 * (x2 - x1), x2)
        boxes.append((f"{side} costophrenic angle", *outer_x, y2 - 0.12 * (y2 - y1), y2))
        boxes.append((f"{side} hilar structures", x1 + 0.3 * (x2 - x1), x2 - 0.3 * (x2 - x1), y1 + 0.35 * (y2 - y1), y1 + 0.6 * (y2 - y1)))
        half = drawn["clavicles"] & ((np.arange(lung.shape[1]) >= g["centre_x"]) == (side == "left"))[None, :]
        if half.any():
            boxes.append((f"{side} clavicle", *box_of(half)))
    return boxes


# ----------------------------------------------------------------------------- gaze

def scanpath(rng: np.random.Generator, drawn: dict) -> tuple[np.ndarray, np.ndarray]:
    """Fixation points (x, y in image pixels, float) and durations (s) of one simulated reading."""
    height, width = drawn["image"].shape
    survey = np.argwhere(np.logical_or.reduce([*drawn["regions"].values(), drawn["heart"]]))
    evidence = np.argwhere(drawn["evidence"])
    n = int(rng.integers(25, 71))
    kinds = rng.choice(3, size=n, p=[0.15, 0.85, 0.0] if len(evidence) == 0 else [0.1, 0.35, 0.55])
    points = np.empty((n, 2))
    durations = rng.gamma(2.0, 0.12, size=n) + 0.08
    for kind, source in ((1, survey), (2, evidence)):
        chosen = np.flatnonzero(kinds == kind)
        picks = source[rng.integers(len(source), size=len(chosen))] if len(chosen) else np.zeros((0, 2))
        points[chosen] = picks[:, ::-1]
    centre = np.flatnonzero(kinds == 0)
    points[centre] = np.column_stack([rng.normal(width / 2, width * 0.15, len(centre)), rng.normal(height / 2, height * 0.15, len(centre))])
    dwell = kinds == 2
    durations[dwell] += rng.gamma(3.0, 0.15, size=int(dwell.sum()))
    points += rng.normal(0, 3.0, points.shape)
    # a reading starts near the centre and moves between nearby targets: order by a noisy sweep
    order = np.argsort(points[:, 1] / height + 0.6 * rng.random(n))
    return points[order], durations[order]


def display_pads(width: int, height: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) padding of the image letterboxed on the 1920x1080 screen."""
    scale = min(SCREEN[0] / width, SCREEN[1] / height)
    shown_w, shown_h = round(width * scale), round(height * scale)
    left, top = (SCREEN[0] - shown_w) // 2, (SCREEN[1] - shown_h) // 2
    return top, SCREEN[1] - shown_h - top, left, SCREEN[0] - shown_w - left


def fixation_rows(rng, dicom_id: str, session: int, points, durations, width: int, height: int, pads) -> pd.DataFrame:
    """The 37-column fixation rows of one reading; a few fixations fall in the screen padding."""
    top, bottom, left, right = pads
    n = len(points)
    shown_w, shown_h = SCREEN[0] - left - right, SCREEN[1] - top - bottom
    screen_x = left + points[:, 0] * shown_w / width
    screen_y = top + points[:, 1] * shown_h / height
    off = rng.random(n) < 0.04
    screen_x[off] = np.where(rng.random(int(off.sum())) < 0.5, rng.uniform(0, max(left, 1), int(off.sum())), rng.uniform(SCREEN[0] - max(right, 1), SCREEN[0], int(off.sum())))
    fpogx, fpogy = np.clip(screen_x / SCREEN[0], 0, 1), np.clip(screen_y / SCREEN[1], 0, 1)
    x_original = (width / shown_w * (fpogx * SCREEN[0] - left)).astype(int)
    y_original = (height / shown_h * (fpogy * SCREEN[1] - top)).astype(int)
    outside = (x_original < 0) | (x_original >= width) | (y_original < 0) | (y_original >= height) | off
    x_original[outside], y_original[outside] = -1, -1
    starts = 0.5 + np.concatenate([[0], np.cumsum(durations[:-1] + rng.uniform(0.02, 0.06, n - 1))])
    saccades = np.hypot(np.diff(fpogx, prepend=fpogx[0]) * SCREEN[0], np.diff(fpogy, prepend=fpogy[0]) * SCREEN[1])
    directions = np.degrees(np.arctan2(np.diff(fpogy, prepend=fpogy[0]), np.diff(fpogx, prepend=fpogx[0])))
    pupil = rng.normal(0.34, 0.01, (n, 2))
    return pd.DataFrame(
        {
            "SESSION_ID": session, "MEDIA_ID": session, "DICOM_ID": dicom_id, "CNT": np.arange(n),
            "Time (in secs)": np.round(starts + durations, 5), "TIMETICK(f=10000000)": np.round((starts + durations) * 1e7).astype(np.int64),
            "FPOGX": np.round(fpogx, 5), "FPOGY": np.round(fpogy, 5), "FPOGS": np.round(starts, 5), "FPOGD": np.round(durations, 5),
            "FPOGID": np.arange(1, n + 1), "FPOGV": 1, "BPOGX": np.round(fpogx, 5), "BPOGY": np.round(fpogy, 5), "BPOGV": 1,
            "LPCX": np.round(0.4 + pupil[:, 0] * 0.1, 5), "LPCY": 0.5, "LPD": np.round(pupil[:, 0] * 60, 3), "LPS": 1.0, "LPV": 1,
            "RPCX": np.round(0.6 + pupil[:, 1] * 0.1, 5), "RPCY": 0.5, "RPD": np.round(pupil[:, 1] * 60, 3), "RPS": 1.0, "RPV": 1,
            "BKID": 0, "BKDUR": 0.0, "BKPMIN": 20, "LPMM": np.round(pupil[:, 0] * 10, 4), "LPMMV": 1, "RPMM": np.round(pupil[:, 1] * 10, 4), "RPMMV": 1,
            "SACCADE_MAG": np.round(saccades, 3), "SACCADE_DIR": np.round(directions, 3), "VID_FRAME": 0,
            "X_ORIGINAL": x_original, "Y_ORIGINAL": y_original,
        },
        columns=FIXATION_COLUMNS,
    )


# ----------------------------------------------------------------------------- identities and files

def identities(n: int, seed: int) -> pd.DataFrame:
    """dicom/patient/study ids and balanced, shuffled labels; about 1 patient in 6 has 2 images."""
    rng = np.random.default_rng([seed, 10**9])
    labels = np.array([CLASS_NAMES[i % 3] for i in range(n)])
    rng.shuffle(labels)
    patients, patient = [], None
    for index in range(n):
        if patient is None or index == 0 or rng.random() > 0.17:
            patient = str(rng.integers(10_000_000, 20_000_000))
        patients.append(patient)
    dicom_ids = ["-".join(f"{v:08x}" for v in row) for row in rng.integers(0, 2**32, size=(n, 5), dtype=np.uint64)]
    studies = [str(v) for v in rng.choice(np.arange(50_000_000, 60_000_000), size=n, replace=False)]
    return pd.DataFrame({"dicom_id": dicom_ids, "patient_id": patients, "study_id": studies, "label": labels})


def master_row(identity, index: int, rng, pads) -> dict:
    label_name = identity.label
    top, bottom, left, right = pads
    row = dict.fromkeys(MASTER_COLUMNS, "")
    row.update(
        dicom_id=identity.dicom_id,
        path=f"files/p{identity.patient_id[:2]}/p{identity.patient_id}/s{identity.study_id}/{identity.dicom_id}.dcm",
        study_id=identity.study_id, patient_id=identity.patient_id, stay_id=str(30_000_000 + index),
        gender=("F", "M")[int(rng.integers(2))], anchor_age=int(rng.integers(25, 90)),
        image_top_pad=top, image_bottom_pad=bottom, image_left_pad=left, image_right_pad=right,
        normal_reports=int(label_name == "Normal"), cxr_exam_indication="synthetic: dyspnea",
    )
    row.update({name: int(name == label_name) for name in CLASS_NAMES})
    row.update({name: 0 for name in FINDING_COLUMNS} | FINDINGS_BY_CLASS[label_name])
    row.update(CHX_BY_CLASS[label_name])
    return row


def _save_mask(mask: np.ndarray, path: Path) -> None:
    Image.fromarray(mask.astype(np.uint8) * 255).save(path, optimize=False)


def write_case(out: Path, identity, index: int, seed: int) -> tuple[dict, pd.DataFrame, list]:
    rng = np.random.default_rng([seed, index])
    drawn = draw_case(rng, identity.label)
    height, width = drawn["image"].shape
    pads = display_pads(width, height)
    row = master_row(identity, index, rng, pads)
    image_path = out / Path(row["path"]).with_suffix(".jpg")
    image_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(drawn["image"]).save(image_path, quality=92)
    folder = out / "audio_segmentation_transcripts" / identity.dicom_id
    folder.mkdir(parents=True)
    for name, mask in drawn["regions"].items():
        _save_mask(mask, folder / f"{name}.png")
    _save_mask(drawn["evidence"], folder / "evidence.png")
    text = TRANSCRIPTS[identity.label].format(**{k: v or "" for k, v in drawn["case"].items()})
    (folder / "transcript.json").write_text(json.dumps({"full_text": text, "time_stamped_text": [{"phrase": text, "begin_time": 1.0, "end_time": 6.0}]}))
    points, durations = scanpath(rng, drawn)
    fixations = fixation_rows(rng, identity.dicom_id, index + 1, points, durations, width, height, pads)
    boxes = [(identity.dicom_id, *box) for box in bounding_boxes(drawn)]
    return row, fixations, boxes


def generate(out: Path, n: int = 400, seed: int = 0, progress: bool = True) -> Path:
    """Write ``n`` synthetic cases in the EGD layout to ``out`` (atomically: temp folder, rename)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} already exists and is not empty; choose a new --out")
    if n < 3:
        raise UserError(f"--n must be at least 3 (one image per class), got {n}")
    temporary = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    try:
        rows, fixations, boxes = [], [], []
        ids = identities(n, seed)
        for index, identity in enumerate(tqdm(list(ids.itertuples()), desc="synthetic dataset", unit="image", disable=not progress)):
            row, case_fixations, case_boxes = write_case(temporary, identity, index, seed)
            rows.append(row)
            fixations.append(case_fixations)
            boxes.extend(case_boxes)
        pd.DataFrame(rows, columns=MASTER_COLUMNS).to_csv(temporary / "master_sheet.csv", index=False)
        pd.concat(fixations, ignore_index=True).to_csv(temporary / "fixations.csv", index=False)
        pd.DataFrame(boxes, columns=["dicom_id", "bbox_name", "x1", "x2", "y1", "y2"]).round(2).to_csv(temporary / "bounding_boxes.csv", index=False)
        criteria = temporary / "inclusion_exclusion_criteria_outputs"
        criteria.mkdir()
        for class_name, file in zip(CLASS_NAMES, ("normals", "CHF", "pneumonia")):
            ids[ids.label == class_name][["dicom_id"]].to_csv(criteria / f"{file}.csv", index=False)
        (temporary / "README_SYNTHETIC.md").write_text(
            f"# Synthetic data\n\nGenerated by gazebench's synthetic generator version {GENERATOR_VERSION} "
            f"(n={n}, seed={seed}) in the layout of the EGD eye-gaze release. No patient data: images, "
            f"gaze and labels are simulated; lung outlines come from torchxrayvision's shipped masks.\n"
        )
        if out.exists():
            out.rmdir()
        os.replace(temporary, out)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return out
