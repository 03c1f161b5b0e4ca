"""Gaze maps on the scoring grid: letterbox geometry, fixation points and gaze densities.

Densities are built directly on the grid, with each fixation's sigma scaled from original
image pixels to grid pixels, as a sum of separable Gaussians (a [N, G] x [N, G] product):
no canvas at the original resolution, no blur of a 3000 px image.

Two published conventions (REFERENCES.md section 1):
- ``egd``: +1 per fixation, Gaussian sigma 150 px of the original image, no duration weight
  (Karargyris et al.); the canvas is the image, so mass falling outside it is lost before the
  map is normalised.
- ``reflacx``: sigma 1 degree of visual angle (per fixation, from the angular resolution in
  pixels per degree), weighted by duration, drawn only inside the rectangle that was shown.
Both are normalised to sum 1.  Differences from the original recipes, documented: the
Gaussian is evaluated exactly at pixel centres (no truncation at 4 sigma, as scipy/OpenCV do)
and fixations keep their sub-pixel grid position.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class GazeConvention:
    """How fixations become a density: ``egd`` or ``reflacx`` and the sigma in its own unit."""

    name: str  # "egd" (sigma in original-image pixels) or "reflacx" (sigma in degrees)
    sigma: float
    duration_weighted: bool

    def describe(self) -> str:
        unit = "px" if self.name == "egd" else "deg"
        weight = "duration-weighted" if self.duration_weighted else "unweighted"
        return f"{self.name}-sigma{self.sigma:g}{unit}-{weight}"


EGD_CONVENTION = GazeConvention("egd", sigma=150.0, duration_weighted=False)
REFLACX_CONVENTION = GazeConvention("reflacx", sigma=1.0, duration_weighted=True)
MAX_IMAGE_SIDE = 65535  # DICOM's Rows and Columns are 16-bit: a larger side in a table is damage


def usable_side(side):
    """Which widths or heights (numbers or arrays of them, in pixels) a ``Letterbox`` can use: 1 to ``MAX_IMAGE_SIDE``."""
    return (side >= 1) & (side <= MAX_IMAGE_SIDE)


@dataclass(frozen=True)
class Letterbox:
    """Original image (width x height) scaled to fit a square grid, centred, zero padded."""

    width: int
    height: int
    grid: int

    @property
    def scaled_size(self) -> tuple[int, int]:
        scale = self.grid / max(self.width, self.height)
        return max(1, round(self.width * scale)), max(1, round(self.height * scale))

    @property
    def offset(self) -> tuple[int, int]:
        scaled_w, scaled_h = self.scaled_size
        return (self.grid - scaled_w) // 2, (self.grid - scaled_h) // 2

    @property
    def scale(self) -> tuple[float, float]:
        """Grid pixels per original pixel along x and y."""
        scaled_w, scaled_h = self.scaled_size
        return scaled_w / self.width, scaled_h / self.height

    def points_to_grid(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Original pixel indices (centre at index + 0.5) -> continuous grid coordinates."""
        (sx, sy), (ox, oy) = self.scale, self.offset
        return (x + 0.5) * sx + ox, (y + 0.5) * sy + oy

    def image_rect(self) -> tuple[float, float, float, float]:
        """The image's area on the grid: (xmin, ymin, xmax, ymax) in grid coordinates."""
        (w, h), (ox, oy) = self.scaled_size, self.offset
        return float(ox), float(oy), float(ox + w), float(oy + h)


def gaussian_density(
    x: torch.Tensor,
    y: torch.Tensor,
    weights: torch.Tensor,
    sigma_x: torch.Tensor,
    sigma_y: torch.Tensor,
    rects: torch.Tensor,
    grid: int,
) -> torch.Tensor:
    """Sum over fixations of weight * Gaussian(x, y, sigma) clipped to each fixation's rect.

    All inputs are [N] grid-unit tensors (``rects`` is [N, 4]: xmin, ymin, xmax, ymax; a pixel
    counts as inside when its centre is).  Returns [grid, grid] normalised to sum 1, or zeros
    when nothing lands on the grid.
    """
    density = torch.zeros(grid, grid, dtype=torch.float64)
    if len(x) == 0:
        return density.float()
    centres = torch.arange(grid, dtype=torch.float64) + 0.5
    x, y, sigma_x, sigma_y = (t.double()[:, None] for t in (x, y, sigma_x, sigma_y))
    rects = rects.double()
    along_x = torch.exp(-0.5 * ((centres - x) / sigma_x) ** 2)
    along_x = along_x * ((centres >= rects[:, 0:1]) & (centres < rects[:, 2:3]))
    along_y = torch.exp(-0.5 * ((centres - y) / sigma_y) ** 2)
    along_y = along_y * ((centres >= rects[:, 1:2]) & (centres < rects[:, 3:4]))
    density = along_y.T @ (weights.double()[:, None] * along_x)
    total = density.sum()
    return (density / total).float() if total > 0 else torch.zeros(grid, grid)


def egd_density(x_orig: torch.Tensor, y_orig: torch.Tensor, durations: torch.Tensor, box: Letterbox, convention: GazeConvention) -> torch.Tensor:
    """EGD-style density on the grid from original-pixel fixations (sigma in original pixels)."""
    gx, gy = box.points_to_grid(x_orig, y_orig)
    sx, sy = box.scale
    n = len(gx)
    weights = durations if convention.duration_weighted else torch.ones(n)
    rects = torch.tensor(box.image_rect()).expand(n, 4)
    return gaussian_density(gx, gy, weights, torch.full((n,), convention.sigma * sx), torch.full((n,), convention.sigma * sy), rects, box.grid)


def reflacx_density(
    x_orig: torch.Tensor,
    y_orig: torch.Tensor,
    durations: torch.Tensor,
    pixels_per_degree: torch.Tensor,
    shown_rects: torch.Tensor,
    box: Letterbox,
    convention: GazeConvention = REFLACX_CONVENTION,
) -> torch.Tensor:
    """REFLACX-style density on the grid (Bigolin Lanfredi et al.).

    ``pixels_per_degree`` is [N, 2] (x, y angular resolution of each fixation, in original
    pixels per degree), so sigma = ``convention.sigma`` degrees in each direction; each
    Gaussian is weighted by duration (when the convention says so) and drawn only inside the
    image rectangle shown at that moment (``shown_rects`` [N, 4] xmin, ymin, xmax, ymax in
    original pixels).
    """
    gx, gy = box.points_to_grid(x_orig, y_orig)
    (sx, sy), (ox, oy) = box.scale, box.offset
    rects = shown_rects.double() * torch.tensor([sx, sy, sx, sy], dtype=torch.float64) + torch.tensor([ox, oy, ox, oy], dtype=torch.float64)
    weights = durations if convention.duration_weighted else torch.ones(len(gx))
    sigma_x = convention.sigma * pixels_per_degree[:, 0] * sx
    sigma_y = convention.sigma * pixels_per_degree[:, 1] * sy
    return gaussian_density(gx, gy, weights, sigma_x, sigma_y, rects, box.grid)
