"""Image decoding: PNG/JPG, DICOM (pydicom), and the real-image path on two NIH ChestX-ray14 images.

The two real images (the ``nih_samples`` fixture: ``tests/data/nih_cxr14_samples/`` in the
repository, or ``$GAZEBENCH_NIH_SAMPLES``; skipped when absent) are from the NIH ChestX-ray14
dataset (https://nihcc.app.box.com/v/ChestXray-NIHCC), courtesy of the NIH Clinical Center;
Wang X, Peng Y, Lu L, Lu Z, Bagheri M, Summers RM. "ChestX-ray8: Hospital-scale Chest X-ray
Database and Benchmarks on Weakly-Supervised Classification and Localization of Common Thorax
Diseases." IEEE CVPR 2017.  See tests/data/NIH_NOTICE.md.  They carry no gaze: they test
decoding, resizing, normalisation, a forward pass and an attribution -- never a benchmark number.
"""

import io
import pickle
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGLSLossless

from gazebench.data.gaze import Letterbox
from gazebench.data.images import UnreadableImage, image_size, letterbox_array, read_grey
from gazebench.errors import UserError
from tests.fixtures.mimic_layout import write_dicom

NIH_IMAGES = ["00000001_000.png", "00027426_000.png"]
GRID = 224


# ---------------------------------------------------------------------- PNG / JPG (unchanged)


def test_png_scales_by_its_bit_depth(tmp_path):
    Image.fromarray(np.array([[0, 51, 255]], np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.array([[0, 1000, 65535]], np.uint16)).save(tmp_path / "b.png")
    np.testing.assert_allclose(read_grey(tmp_path / "a.png"), [[0, 0.2, 1]], atol=1e-6)
    np.testing.assert_allclose(read_grey(tmp_path / "b.png"), [[0, 1000 / 65535, 1]], atol=1e-6)
    assert image_size(tmp_path / "a.png") == (3, 1)


def test_unreadable_png_is_a_user_error(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match=r"cannot read image .*bad.png"):
        read_grey(tmp_path / "bad.png")


def jpg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.arange(64 * 64, dtype=np.uint8).reshape(64, 64)).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("empty.jpg", b"", r"empty file \(0 bytes\)"),
        ("empty.png", b"", r"empty file \(0 bytes\)"),
        ("cut.jpg", jpg_bytes()[:400], r"image file is truncated"),
        ("garbage.jpg", b"\xff\xd8 not really a jpeg", r"cannot identify image file"),
    ],
    ids=["zero-byte jpg", "zero-byte png", "truncated jpg", "garbage"],
)
def test_a_file_that_does_not_decode_is_an_unreadable_image_naming_it(tmp_path, name, content, reason):
    """The distinct error that runs and training skip and count (a UserError: --strict prints it as one line)."""
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UnreadableImage, match=rf"^cannot read image {path}: {reason}.*; replace or remove the file$") as error:
        read_grey(path)
    assert isinstance(error.value, UserError) and error.value.path == path and "\n" not in str(error.value)


def test_unreadable_image_survives_a_worker_process_round_trip(tmp_path):
    error = UnreadableImage(tmp_path / "a.jpg", "image file is truncated")
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is UnreadableImage and (again.path, again.reason, str(again)) == (error.path, error.reason, str(error))


# ---------------------------------------------------------------------- DICOM


def ramp(height=30, width=50, top=65535):
    """Stored values rising along x from 0 to ``top``."""
    return np.tile(np.linspace(0, top, width).round(), (height, 1)).astype(np.uint16)


def test_dicom_size_comes_from_the_header(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", ramp(height=30, width=50))
    assert image_size(path) == (50, 30)  # (Columns, Rows)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])  # pixel data cut short: the header still gives the size
    assert image_size(path) == (50, 30)


def test_dicom_16_bit_scales_by_the_stored_range(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", np.array([[0, 32768, 65535]]))
    grey = read_grey(path)
    assert grey.dtype == np.float32
    np.testing.assert_allclose(grey, [[0, 32768 / 65535, 1]], atol=1e-6)


def test_dicom_scales_by_bits_stored_not_by_the_image_range(tmp_path):
    twelve = write_dicom(tmp_path / "12.dcm", np.array([[0, 1024, 4095]]), bits_stored=12)
    np.testing.assert_allclose(read_grey(twelve), [[0, 1024 / 4095, 1]], atol=1e-6)
    narrow = write_dicom(tmp_path / "narrow.dcm", np.array([[1000, 2000]]))  # no min-max stretch
    np.testing.assert_allclose(read_grey(narrow), [[1000 / 65535, 2000 / 65535]], atol=1e-6)


def test_dicom_monochrome1_is_inverted(tmp_path):
    stored = ramp(top=4095)
    mono2 = read_grey(write_dicom(tmp_path / "m2.dcm", stored, bits_stored=12))
    mono1 = read_grey(write_dicom(tmp_path / "m1.dcm", stored, photometric="MONOCHROME1", bits_stored=12))
    np.testing.assert_allclose(mono1, 1 - mono2, atol=1e-6)
    assert mono1[0, 0] == pytest.approx(1.0) and mono1[0, -1] == pytest.approx(0.0)


def test_dicom_voi_window_is_applied(tmp_path):
    stored = np.array([[0, 850, 950, 1000, 1050, 1150, 4000]])
    grey = read_grey(write_dicom(tmp_path / "w.dcm", stored, bits_stored=12, window=(1000, 200)))
    # linear window 900..1100: below -> black, above -> white, in between linear (DICOM PS3.3 C.11.2.1.2)
    assert grey[0, 0] == 0 and grey[0, 1] == 0
    assert grey[0, 5] == 1 and grey[0, 6] == 1
    assert grey[0, 3] == pytest.approx(0.5, abs=0.01)
    assert grey[0, 2] == pytest.approx(0.25, abs=0.01) and grey[0, 4] == pytest.approx(0.75, abs=0.01)


def test_dicom_window_applies_to_rescaled_values(tmp_path):
    stored = np.array([[0, 500, 1000, 1500, 2000]])  # rescaled: -1000, 0, 1000, 2000, 3000
    grey = read_grey(write_dicom(tmp_path / "r.dcm", stored, bits_stored=12, window=(1000, 2000), rescale=(2, -1000)))
    np.testing.assert_allclose(grey[0], [0, 0, 0.5, 1, 1], atol=0.01)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda data: data[: len(data) - 500], r"cannot read DICOM .*pixel data.*replace the file"),
        (lambda data: data[:300], r"cannot read DICOM .*no pixel data"),
        (lambda data: b"not a dicom at all" * 20, r"cannot read DICOM .*not a DICOM file"),
        (lambda data: b"", r"cannot read DICOM .*not a DICOM file"),
    ],
    ids=["truncated pixels", "truncated header", "garbage", "empty"],
)
def test_damaged_dicom_is_a_one_line_user_error(tmp_path, damage, message):
    path = write_dicom(tmp_path / "a.dcm", ramp())
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(UnreadableImage, match=message) as error:
        read_grey(path)
    assert "\n" not in str(error.value) and str(path) in str(error.value) and error.value.path == path


def test_dicom_without_a_header_size_is_a_user_error(tmp_path):
    path = tmp_path / "a.dcm"
    path.write_bytes(b"garbage")
    with pytest.raises(UserError, match=r"cannot read DICOM .*a.dcm"):
        image_size(path)


def test_compressed_dicom_without_plugins_names_them(tmp_path):
    path = write_dicom(tmp_path / "c.dcm", ramp())
    dataset = pydicom.dcmread(path)
    dataset.file_meta.TransferSyntaxUID = JPEGLSLossless
    dataset.PixelData = encapsulate([b"\xff\xd8 not a real JPEG-LS stream"])
    dataset["PixelData"].VR = "OB"
    dataset.save_as(path, enforce_file_format=True)
    with pytest.raises(UserError, match=r"compressed \(JPEG-LS Lossless.*install pylibjpeg") as error:
        read_grey(path)
    assert "\n" not in str(error.value)
    assert not isinstance(error.value, UnreadableImage)  # every image would fail: a run stops instead of skipping them all


# ---------------------------------------------------------------------- the real-image path


@pytest.fixture(scope="module")
def nih_grid_images(nih_samples: Path) -> torch.Tensor:
    """The two NIH images decoded and letterboxed onto the scoring grid: [2, 1, 224, 224]."""
    grids = []
    for name in NIH_IMAGES:
        grey = read_grey(nih_samples / name)
        assert grey.shape == (512, 512) and grey.dtype == np.float32
        assert 0 <= grey.min() < 0.2 and 0.8 < grey.max() <= 1 and grey.std() > 0.1  # a real radiograph
        box = Letterbox(grey.shape[1], grey.shape[0], GRID)
        grids.append(letterbox_array(grey, box)[None].float())
    return torch.stack(grids)


def test_nih_images_run_through_unet_gaze_and_gradcam(nih_grid_images):
    from gazebench.models.unet_gaze import build_adapter
    from gazebench.registry import METHODS

    torch.manual_seed(0)
    adapter = build_adapter(["Normal", "CHF", "pneumonia"], input_size=64).eval()
    inputs = adapter.preprocess(nih_grid_images)
    assert inputs.shape == (2, 3, 64, 64)
    with torch.no_grad():
        logits = adapter.module(inputs)
    assert logits.shape == (2, 3) and bool(torch.isfinite(logits).all())
    method = METHODS.get("gradcam")()
    maps = method(adapter, nih_grid_images, logits.argmax(dim=1), seeds=[0, 0], grid=GRID)
    assert maps.shape == (2, GRID, GRID) and bool(torch.isfinite(maps).all())
    assert bool((maps.flatten(1).amax(dim=1) > maps.flatten(1).amin(dim=1)).all())  # not constant


def test_nih_images_run_through_a_torchxrayvision_densenet(nih_grid_images):
    xrv = pytest.importorskip("torchxrayvision")
    torch.manual_seed(0)
    model = xrv.models.DenseNet(weights=None).eval()  # random weights: nothing is downloaded
    normalised = xrv.datasets.normalize(nih_grid_images.numpy(), maxval=1.0)  # [0, 1] -> [-1024, 1024]
    assert normalised.min() >= -1024 and normalised.max() <= 1024 and normalised.max() > 500
    with torch.no_grad():
        outputs = model(torch.from_numpy(normalised))
    assert outputs.shape == (2, len(xrv.datasets.default_pathologies)) and bool(torch.isfinite(outputs).all())
    assert not torch.allclose(outputs[0], outputs[1])  # the two radiographs give different outputs
