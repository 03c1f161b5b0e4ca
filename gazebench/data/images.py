"""Decoding images and masks and letterboxing them onto the scoring grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from gazebench.data.gaze import Letterbox
from gazebench.errors import UserError


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, UnidentifiedImageError) as error:
        raise UserError(f"cannot read image {path}: {error}; replace or remove the file") from None


def read_grey(path: Path) -> np.ndarray:
    """Decode an image file to a float32 [H, W] array in [0, 1] (by the dtype's full range)."""
    try:
        with Image.open(path) as image:
            image.load()
            array = np.asarray(image if image.mode in ("L", "I;16", "I", "F") else image.convert("L"))
    except (OSError, UnidentifiedImageError) as error:
        raise UserError(f"cannot read image {path}: {error}; replace or remove the file") from None
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    array = array.astype(np.float32)
    return (array - array.min()) / max(float(array.max() - array.min()), 1e-12)


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
