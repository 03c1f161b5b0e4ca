"""Reference maps scored beside every method: the floors and the inter-observer ceiling.

- ``centre_bias`` (floor): the run's centre-bias map (the training split's mean gaze density),
  the same for every image -- a method that does not beat it has learnt nothing image-specific;
- ``uniform`` (floor): a constant map -- chance.  Metrics that need a map with some variation
  (CC, NSS, SSIM, SIM, the AUCs) are undefined (NaN) for it by construction; KL and information
  gain are defined;
- ``edges`` (floor): the Sobel gradient magnitude of the image itself (scikit-image
  ``filters.sobel`` on the grid image), which ignores the model.  Adebayo et al. (NeurIPS 2018)
  showed that several saliency methods look like edge detectors: a method that does not beat this
  map on a metric says nothing about the model there;
- ``inter_observer`` (ceiling): for an image that several radiologists read, the mean gaze
  density of the *other* readers, scored against each reader's own gaze (per-reader rows only).

Their names and roles are the protocol's (``gazebench.protocol.REFERENCE_MAPS``).
"""

from __future__ import annotations

import numpy as np
import torch
from skimage import filters

from gazebench.run.pairs import ExplanationPairs, GazeGroup


def reference_maps(name: str, centre_bias: torch.Tensor, pairs: ExplanationPairs, groups: list[GazeGroup]) -> list[torch.Tensor | None]:
    """Each group's maps for reference ``name`` (None where the reference does not apply)."""
    grid = pairs.batch.gaze.shape[-1]
    device = pairs.batch.gaze.device
    if name == "inter_observer":
        return [_other_readers(pairs) if group.per_reader else None for group in groups]
    if name == "edges":
        maps = edge_maps(pairs.batch.images)
        return [maps[torch.as_tensor(group.positions, device=maps.device)] for group in groups]
    if name == "centre_bias":
        single = centre_bias.to(device)
    elif name == "uniform":
        single = torch.full((grid, grid), 1.0 / grid**2, device=device)
    else:
        raise KeyError(name)
    return [single.expand(len(group.positions), grid, grid) for group in groups]


def edge_maps(images: torch.Tensor) -> torch.Tensor:
    """Sobel magnitude [B, G, G] (float32, on the images' device) of grid images [B, 1, G, G]."""
    edges = np.stack([filters.sobel(image) for image in images[:, 0].detach().double().cpu().numpy()])
    return torch.from_numpy(edges).float().to(images.device)


def _other_readers(pairs: ExplanationPairs) -> torch.Tensor:
    """[R, G, G]: per reading of the pairs' images, the mean gaze density of the image's other readers."""
    readings = pairs.batch.readings
    return torch.stack([readings.gaze[readings.others(reading)].mean(dim=0) for reading in range(len(readings.rows))])
