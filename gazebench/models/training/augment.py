"""Training-time augmentation (CheXclusion's horizontal flip and rotation), applied on the grid.

A recipe's ``training.augment`` (``{hflip: true, rotate_degrees: 15}``) draws, per image, a flip
with probability 1/2 and an angle uniform in [-d, d] from the training run's own generator, and
applies the same transform to the image, its gaze density (renormalised to sum 1; an empty map
stays empty) and its fixation points, so gaze-supervised losses see gaze where the image is.
Pixels rotated in from outside the image are zero (the letterbox padding is zero too).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from gazebench.data.sample import Batch, fixation_map


@dataclass(frozen=True)
class Augmentation:
    hflip: bool = False
    rotate_degrees: float = 0.0

    @classmethod
    def from_settings(cls, settings: dict | None) -> "Augmentation | None":
        if not settings:
            return None
        unknown = set(settings) - {"hflip", "rotate_degrees"}
        if unknown:
            raise ValueError(f"unknown augment settings {sorted(unknown)}; known: hflip, rotate_degrees")
        return cls(bool(settings.get("hflip", False)), float(settings.get("rotate_degrees", 0.0)))

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Per-image affine matrices [n, 2, 3] mapping output to input normalised coordinates."""
        flips = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0) if self.hflip else torch.ones(n)
        angles = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(self.rotate_degrees)
        cos, sin = angles.cos(), angles.sin()
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0], theta[:, 0, 1] = cos * flips, -sin
        theta[:, 1, 0], theta[:, 1, 1] = sin * flips, cos
        return theta

    def __call__(self, batch: Batch, generator: torch.Generator) -> Batch:
        theta = self.draw(len(batch), generator).to(batch.images.device)
        grid = F.affine_grid(theta, list(batch.images.shape), align_corners=False)
        images = F.grid_sample(batch.images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        gaze = F.grid_sample(batch.gaze[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0]
        gaze = gaze / gaze.sum(dim=(1, 2), keepdim=True).clamp_min(torch.finfo(gaze.dtype).tiny)
        size = batch.images.shape[-1]
        fixations = [move_points(points, matrix, size) for points, matrix in zip(batch.fixations, theta)]
        maps = torch.stack([fixation_map(points.cpu(), size) for points in fixations]).to(gaze.device)
        return replace(batch, images=images, gaze=gaze, fixations=fixations, fixation_maps=maps)


def move_points(points: torch.Tensor, theta: torch.Tensor, size: int) -> torch.Tensor:
    """Fixations [N, 3] (x, y on the grid, duration) under the transform ``theta`` (output -> input)."""
    if len(points) == 0:
        return points
    normalised = points[:, :2] / size * 2 - 1  # grid coordinates (pixel-edge origin) -> [-1, 1]
    linear, shift = theta[:, :2], theta[:, 2]
    moved = torch.linalg.solve(linear, (normalised - shift).T).T  # input -> output position
    return torch.cat([(moved + 1) / 2 * size, points[:, 2:]], dim=1)
