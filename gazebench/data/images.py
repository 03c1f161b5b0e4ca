"""Decoding images and masks and letterboxing them onto the scoring grid.

PNG and JPG files are decoded with Pillow; DICOM files (``.dcm``) with pydicom, which reads
uncompressed and RLE pixel data itself.  Compressed DICOM transfer syntaxes (JPEG, JPEG-LS,
JPEG 2000) need pydicom's decoding plugins -- ``pylibjpeg`` with ``pylibjpeg-libjpeg`` (JPEG,
JPEG-LS) and ``pylibjpeg-openjpeg`` (JPEG 2000), or ``python-gdcm`` -- and without them
``read_grey`` raises a ``UserError`` naming these packages (or read the MIMIC-CXR-JPG copy).

A file that cannot be decoded (empty, truncated, corrupt, not an image) raises ``UnreadableImage``,
a ``UserError`` naming the file: runs and training skip and count such an item
(``sample.load_items``) unless ``--strict``; a missing decoder plugin stays a plain ``UserError``,
since it would make every image unreadable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import torch
from PIL import Image
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from gazebench.data.gaze import Letterbox
from gazebench.errors import UserError

DICOM_SUFFIXES = (".dcm", ".dicom")
DICOM_PLUGINS = "pylibjpeg with pylibjpeg-libjpeg and pylibjpeg-openjpeg (or python-gdcm)"
# what a damaged file can make pydicom raise while parsing the header or the pixel data
DICOM_ERRORS = (InvalidDicomError, OSError, EOFError, ValueError, KeyError, AttributeError, TypeError, IndexError)
# what a damaged PNG/JPG can make Pillow raise (UnidentifiedImageError and "image file is truncated" are OSErrors)
PIL_ERRORS = (OSError, SyntaxError, ValueError)


class UnreadableImage(UserError):
    """An image (or mask) file that cannot be decoded: empty, truncated, corrupt or not an image.

    ``path`` is the file, ``reason`` the decoder's one-line complaint; the message names both
    and the fix.  Pickles with its fields, so a worker process can raise it.
    """

    def __init__(self, path: Path | str, reason: str, message: str | None = None):
        self.path, self.reason = Path(path), reason
        super().__init__(message or f"cannot read image {path}: {reason}; replace or remove the file")

    def __reduce__(self):
        return type(self), (self.path, self.reason, str(self))


def _unreadable(path: Path, error: BaseException) -> UnreadableImage:
    """The error for a PNG/JPG that Pillow cannot open or decode (an empty file said as such)."""
    empty = Path(path).is_file() and Path(path).stat().st_size == 0
    return UnreadableImage(path, "empty file (0 bytes)" if empty else _one_line(error))


def is_dicom(path: Path) -> bool:
    return Path(path).suffix.lower() in DICOM_SUFFIXES


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    if is_dicom(path):
        return _dicom_size(Path(path))
    try:
        with Image.open(path) as image:
            return image.size
    except PIL_ERRORS as error:
        raise _unreadable(path, error) from None


def read_grey(path: Path) -> np.ndarray:
    """Decode an image file to a float32 [H, W] array in [0, 1].

    PNG/JPG: scaled by the dtype's full range (8 or 16 bit), float images min-max.
    DICOM: see ``read_dicom_grey``.
    """
    if is_dicom(path):
        return read_dicom_grey(Path(path))
    try:
        with Image.open(path) as image:
            image.load()
            array = np.asarray(image if image.mode in ("L", "I;16", "I", "F") else image.convert("L"))
    except PIL_ERRORS as error:
        raise _unreadable(path, error) from None
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    array = array.astype(np.float32)
    return (array - array.min()) / max(float(array.max() - array.min()), 1e-12)


# ---------------------------------------------------------------------- DICOM


def _dicom_error(path: Path, problem: str) -> UnreadableImage:
    return UnreadableImage(path, problem, f"cannot read DICOM {path}: {problem}; replace the file with the release's copy")


def _read_dicom(path: Path, stop_before_pixels: bool) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        raise _dicom_error(path, "not a DICOM file (no 'DICM' file header: empty, truncated or another format)") from None
    except DICOM_ERRORS as error:
        raise _dicom_error(path, _one_line(error)) from None


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _dicom_size(path: Path) -> tuple[int, int]:
    """(Columns, Rows) from the header; the pixel data is not read."""
    dataset = _read_dicom(path, stop_before_pixels=True)
    if "Rows" not in dataset or "Columns" not in dataset:
        raise _dicom_error(path, "no Rows/Columns in the header (truncated, or not an image)")
    return int(dataset.Columns), int(dataset.Rows)


def read_dicom_grey(path: Path) -> np.ndarray:
    """Decode a greyscale DICOM to float32 [H, W] in [0, 1], as a viewer would display it.

    Stored values -> modality LUT (Rescale Slope/Intercept or Modality LUT Sequence) -> VOI LUT
    (VOI LUT Sequence, else Window Center/Width; the first view when several) -> scaled to
    [0, 1] by the *nominal* output range of the last step, never by the image's own min/max:
    - without VOI: the stored bit range (``BitsStored``, signed or not) through the modality
      LUT, so a 12-bit image uses [0, 4095] and a 16-bit one [0, 65535];
    - after windowing: the same range, which pydicom's windowing maps the window onto, so the
      window's lower edge is 0 and its upper edge 1 (values outside are clipped);
    - after a VOI LUT Sequence: [0, 2**bits - 1] with the LUT's bits per entry.
    MONOCHROME1 (low values are white) is inverted so that 1 is always white.
    """
    dataset = _read_dicom(path, stop_before_pixels=False)
    if "PixelData" not in dataset:
        raise _dicom_error(path, "no pixel data (truncated, or not an image)")
    photometric = str(dataset.get("PhotometricInterpretation", ""))
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise _dicom_error(path, f"photometric interpretation {photometric or 'missing'} is not greyscale (MONOCHROME1/2)")
    stored = _decode_pixels(path, dataset)
    if stored.ndim != 2:
        raise _dicom_error(path, f"pixel array of shape {stored.shape} is not one grey frame")
    try:
        low, high = _output_range(dataset)
        values = apply_voi_lut(apply_modality_lut(stored, dataset), dataset, index=0)
    except DICOM_ERRORS + (NotImplementedError,) as error:
        raise _dicom_error(path, f"invalid modality or VOI LUT ({_one_line(error)})") from None
    grey = np.clip((values.astype(np.float64) - low) / (high - low), 0.0, 1.0)
    if photometric == "MONOCHROME1":
        grey = 1.0 - grey
    return grey.astype(np.float32)


def _decode_pixels(path: Path, dataset: pydicom.Dataset) -> np.ndarray:
    """The stored values; a compressed transfer syntax without its plugin is a UserError."""
    syntax = dataset.file_meta.get("TransferSyntaxUID") if hasattr(dataset, "file_meta") else None
    try:
        return dataset.pixel_array
    except (RuntimeError, NotImplementedError) as error:
        if syntax is not None and syntax.is_compressed:
            raise UserError(
                f"cannot decode DICOM {path}: its pixel data is compressed ({syntax.name}) and no installed "
                f"plugin could decode it ({_one_line(error)}); install {DICOM_PLUGINS}, or use the MIMIC-CXR-JPG copy"
            ) from None
        raise _dicom_error(path, _one_line(error)) from None
    except DICOM_ERRORS as error:
        raise _dicom_error(path, _one_line(error)) from None


def _output_range(dataset: pydicom.Dataset) -> tuple[float, float]:
    """(value shown black, value shown white) after the modality and VOI LUTs (see read_dicom_grey)."""
    if dataset.get("VOILUTSequence"):
        bits = int(dataset.VOILUTSequence[0].LUTDescriptor[2])
        return 0.0, 2.0**bits - 1
    if dataset.get("ModalityLUTSequence"):
        bits = int(dataset.ModalityLUTSequence[0].LUTDescriptor[2])
        return 0.0, 2.0**bits - 1
    bits = int(dataset.BitsStored)
    low, high = (0.0, 2.0**bits - 1) if int(dataset.PixelRepresentation) == 0 else (-(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1)
    if "RescaleSlope" in dataset and "RescaleIntercept" in dataset:
        slope, intercept = float(dataset.RescaleSlope), float(dataset.RescaleIntercept)
        low, high = low * slope + intercept, high * slope + intercept
    if high == low:
        raise ValueError("empty output range (Rescale Slope 0?)")
    return low, high


# ---------------------------------------------------------------------- grid


def letterbox_array(array: np.ndarray, box: Letterbox, nearest: bool = False) -> torch.Tensor:
    """Resize a [H, W] array (antialiased bilinear, or nearest for masks) onto the grid [G, G]."""
    scaled_w, scaled_h = box.scaled_size
    offset_x, offset_y = box.offset
    resample = Image.NEAREST if nearest else Image.BILINEAR
    resized = np.asarray(Image.fromarray(array).resize((scaled_w, scaled_h), resample=resample))
    canvas = np.zeros((box.grid, box.grid), dtype=resized.dtype)
    canvas[offset_y : offset_y + scaled_h, offset_x : offset_x + scaled_w] = resized
    return torch.from_numpy(canvas)


def read_mask(path: Path, box: Letterbox) -> torch.Tensor:
    """A binary mask PNG (non-zero = inside) on the grid as a bool [G, G] tensor."""
    return letterbox_array((read_grey(path) > 0.5).astype(np.uint8), box, nearest=True) > 0
