"""Fixations as tensors, for the models that take or generate per-fixation maps (temporal_gaze, heatmap_generator).

``padded_fixations`` turns a batch's per-row fixations [N_i, 3] (x, y on the grid, duration) into
one padded tensor and a mask; ``gaussian_profiles`` gives the 1-D Gaussians whose outer products
are the per-fixation maps (separable, so a batch of maps is one einsum, not one 2-D exponential
per fixation).
"""

from __future__ import annotations

import math

import torch


def padded_fixations(
    fixations: list[torch.Tensor], device: torch.device | str, max_count: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row fixations [N_i, 3] -> padded [B, T, 3] and mask [B, T] (real fixations first, T >= 1).

    With ``max_count``, rows with more fixations keep their ``max_count`` longest ones (by
    duration, ties to the earlier), still in reading order.
    """
    lengths = torch.tensor([len(f) for f in fixations], dtype=torch.long)
    longest = max(int(lengths.max()) if len(fixations) else 0, 1)
    flat = torch.cat([f.reshape(-1, 3) for f in fixations] or [torch.zeros(0, 3)]).to(device=device, dtype=torch.float32)
    rows = torch.repeat_interleave(torch.arange(len(fixations)), lengths).to(device)
    starts = torch.repeat_interleave(lengths.cumsum(0) - lengths, lengths).to(device)
    positions = torch.arange(len(flat), device=device) - starts
    padded = torch.zeros(len(fixations), longest, 3, device=device)
    mask = torch.zeros(len(fixations), longest, dtype=torch.bool, device=device)
    padded[rows, positions] = flat
    mask[rows, positions] = True
    if max_count is not None and longest > max_count:
        padded, mask = longest_fixations(padded, mask, max_count)
    return padded, mask


def longest_fixations(padded: torch.Tensor, mask: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``count`` longest-duration fixations of each row, in their original (reading) order."""
    durations = torch.nan_to_num(padded[..., 2], nan=0.0).masked_fill(~mask, -math.inf)
    # a stable descending sort (ties: the earlier fixation first), then back to reading order
    keep = durations.argsort(dim=1, descending=True, stable=True)[:, :count].sort(dim=1).values
    return padded.gather(1, keep[..., None].expand(-1, -1, 3)), mask.gather(1, keep)


def gaussian_profiles(coordinates: torch.Tensor, grid: int, size: int, sigma: float) -> torch.Tensor:
    """exp(-(c - coordinate)^2 / 2 sigma^2) at the ``size`` pixel centres c of a grid side: [..., size].

    Coordinates and sigma are in grid pixels (origin at the first pixel's outer edge).
    """
    centres = (torch.arange(size, device=coordinates.device, dtype=torch.float32) + 0.5) * (grid / size)
    return torch.exp(-0.5 * ((centres - coordinates[..., None]) / sigma) ** 2)
