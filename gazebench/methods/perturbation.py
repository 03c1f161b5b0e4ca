"""Perturbation methods with Captum: occlusion, LIME and Kernel SHAP (the latter two on SLIC superpixels).

All three explain the target logit by replacing parts of the input with a baseline (``black`` by
default: the adapter's preprocessing of an all-black image, ``gradient.make_baseline``) and
watching the logit change; nothing is differentiated, so ``passes()`` counts forward rows only.
Their raw maps are signed contributions; the protocol sums channels and takes the magnitude
(``postprocess = "abs"``), as for the gradient methods.

LIME and Kernel SHAP attribute each image by its own Captum call (Captum's advice for them: a
feature mask and a seed per image); occlusion, which is deterministic, attributes groups of up to
``rows_per_pass()`` images per call.  Either way a forward pass holds at most ``rows_per_pass()``
model inputs (Captum's ``perturbations_per_eval``, counted in copies of the call's batch;
``--max-batch-elements``), under
``torch.no_grad()``: memory is one chunk of inputs and activations, never ``n_samples`` of them
(LIME with 1000 samples on a batch of 8 DenseNet-121 inputs at 224 px runs 16 rows at a time by
default, well under 1 GiB).  A model's extra inputs go to Captum as the rows of the call's images
(``additional_forward_args``, which Captum repeats for every perturbed copy), so such models need
no refusal.

Randomness: Captum's ``Lime`` and ``KernelShap`` draw their samples from torch's global CPU
generator (``torch.bernoulli``, ``torch.randn``, ``Categorical.sample`` on CPU tensors).  Each
image's call runs inside ``torch.random.fork_rng(devices=[])`` with the CPU generator seeded by
that image's seed, so a map depends neither on batch size, nor on its neighbours, nor on
``--max-batch-elements``, and the caller's RNG state is restored afterwards (only the CPU
generator is seeded: ``torch.manual_seed`` would also reseed every CUDA generator, which
``fork_rng(devices=[])`` does not restore).

Superpixels (LIME, Kernel SHAP): scikit-image's SLIC (Achanta et al. 2012) on the grey SCORING
GRID image ([0, 1]) that ``__call__`` receives, before any preprocessing, so every model is
explained with the same superpixels whatever its input size; the label map is resized to the
model input by nearest neighbour (``nearest-exact``) and relabelled 0..K-1 (a superpixel too small
to survive the resize does not become an empty feature).  Called directly, ``attribute`` runs SLIC
on the input itself (the channel mean, min-max scaled to [0, 1]).  Nothing is cached across images
or calls.  ``compactness`` 0.1 balances intensity against distance for [0, 1] grey values as
scikit-image's default 10 does for CIELAB (L in 0..100); SLIC typically returns somewhat fewer
segments than ``n_segments`` (about 40 of 50 on the synthetic radiographs at 224 px; a uniform
image gets a regular grid).  An image on which SLIC finds a single segment (pixel noise without
structure, which SLIC's connectivity step merges into one region) gets a constant map, and
``self.warnings`` says so.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import KernelShap, Lime, Occlusion
from skimage.segmentation import slic

from gazebench.errors import UserError
from gazebench.methods.base import Method, forward_args, row_groups
from gazebench.methods.gradient import BASELINES, make_baseline
from gazebench.registry import METHODS

BASELINE_CHECK = (lambda b: b in BASELINES, f"one of {', '.join(BASELINES)}")


@contextmanager
def seeded_cpu_rng(seed: int) -> Iterator[None]:
    """Torch's global CPU generator seeded with ``seed`` for the block, its previous state restored after."""
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(int(seed))
        yield


def superpixels(image: torch.Tensor, n_segments: int, compactness: float) -> torch.Tensor:
    """SLIC labels [H, W] (int64, from 0) of a grey image [H, W] with values in [0, 1]."""
    grey = image.detach().to("cpu", torch.float64).numpy()
    labels = slic(grey, n_segments=n_segments, compactness=compactness, channel_axis=None, start_label=0)
    return torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))


def unit_grey(inputs: torch.Tensor) -> torch.Tensor:
    """Preprocessed inputs [B, C, S, S] as grey images [B, S, S] in [0, 1] (channel mean, per-image min-max)."""
    grey = inputs.detach().float().mean(dim=1)
    low = grey.flatten(1).amin(dim=1).view(-1, 1, 1)
    span = (grey.flatten(1).amax(dim=1).view(-1, 1, 1) - low).clamp_min(1e-12)
    return (grey - low) / span


def feature_mask(labels: torch.Tensor, size: int) -> torch.Tensor:
    """Labels [H, W] resized to [1, 1, size, size] (nearest, pixel centres) and relabelled 0..K-1."""
    resized = labels[None, None].float()
    if labels.shape[-2:] != (size, size):
        resized = F.interpolate(resized, size=(size, size), mode="nearest-exact")
    return torch.unique(resized.long(), return_inverse=True)[1]


class SuperpixelMethod(Method):
    """LIME and Kernel SHAP: Captum's explainer on SLIC superpixels, one seeded call per image."""

    family = "perturbation"
    library = "captum + scikit-image"
    postprocess = "abs"
    explainer: ClassVar[type]
    param_aliases: ClassVar[dict] = {"baselines": "baseline"}

    def __init__(self, **params):
        super().__init__(**params)
        self.grid_segments: list[torch.Tensor] | None = None  # set by __call__ for the duration of one call

    def passes(self):
        return self.params["n_samples"], 0

    def __call__(self, adapter, images, targets, seeds, grid, extra=()):
        """As ``Method.__call__``, with superpixels computed on the grid images [B, 1, G, G] first."""
        self.grid_segments = [superpixels(image[0], self.params["n_segments"], self.params["compactness"]) for image in images]
        try:
            return super().__call__(adapter, images, targets, seeds, grid, extra)
        finally:
            self.grid_segments = None

    def feature_masks(self, inputs: torch.Tensor) -> list[torch.Tensor]:
        """One [1, 1, S, S] feature mask per input: the grid superpixels of this call, else SLIC on the input."""
        segments = self.grid_segments
        if segments is None or len(segments) != len(inputs):
            segments = [superpixels(grey, self.params["n_segments"], self.params["compactness"]) for grey in unit_grey(inputs)]
        return [feature_mask(labels, inputs.shape[-1]).to(inputs.device) for labels in segments]

    def attribute(self, adapter, inputs, targets, seeds, extra=()):
        inputs = inputs.detach()
        baseline = make_baseline(adapter, inputs, self.params["baseline"])
        maps = []
        with torch.no_grad():
            for i, mask in enumerate(self.feature_masks(inputs)):
                image_extra = tuple(tensor[i : i + 1] for tensor in extra)
                if int(mask.max()) == 0:
                    self.record(f"{self.name} on {adapter.name}: SLIC found a single superpixel in an image (noise without structure); its map is constant")
                with seeded_cpu_rng(seeds[i]):
                    maps.append(self.explain(adapter, inputs[i : i + 1], int(targets[i]), baseline, mask, image_extra))
        return torch.cat(maps)

    def explain(self, adapter, image, target, baseline, mask, extra) -> torch.Tensor:
        """Captum's attribution of one image [1, C, S, S]: the superpixel coefficients painted on their pixels."""
        return self.explainer(adapter.module).attribute(
            image,
            baselines=baseline,
            target=target,
            additional_forward_args=forward_args(extra),
            feature_mask=mask,
            n_samples=self.params["n_samples"],
            perturbations_per_eval=self.rows_per_pass(),
        )

    def record(self, line: str) -> None:
        if line not in self.warnings:
            self.warnings.append(line)


SUPERPIXEL_CHECKS = {
    "n_segments": (lambda n: n >= 2, ">= 2"),
    "compactness": (lambda c: c > 0, "> 0"),
    "baseline": BASELINE_CHECK,
}


@METHODS.register("lime")
class LimeMethod(SuperpixelMethod):
    """LIME (Ribeiro et al. 2016) on SLIC superpixels, Captum ``Lime`` with its defaults.

    Each of ``n_samples`` samples keeps every superpixel with probability 1/2 (the others take the
    baseline) and records the target logit; the interpretable model is Captum's default
    ``SkLearnLasso(alpha=0.01)`` (scikit-learn ``Lasso``, with intercept) fitted to the logits with
    sample weights from Captum's default kernel, exp(-d^2 / 2) with d = 1 - cosine similarity of
    the perturbed and the original model input (kernel width 1).  The map paints each superpixel
    with its coefficient.  The Lasso penalty is absolute (in logit units): on a model whose logits
    barely move (random weights) every coefficient can be 0, and the map is then all zero.

    Defaults are CPU-sized for the embedded data: 64 samples on about 50 superpixels
    (``n_segments=50``), about 0.7 s per image on the embedded model (unet_gaze, input 128, two
    CPU cores: ~10 ms per sample, one forward row each; 1000 samples take 7-9 s).  Fewer samples
    than superpixels would leave the fit underdetermined, so 64 is the floor, not 100 ms.  The
    studies' values: SHAMSUL (Alam et al. 2023) used 1000 samples on superpixels
    (``lime:n_samples=1000``).
    """

    name = "lime"
    explainer = Lime
    default_params: ClassVar[dict] = {"n_samples": 64, "n_segments": 50, "compactness": 0.1, "baseline": "black"}
    param_checks: ClassVar[dict] = {"n_samples": (lambda n: n >= 1, ">= 1"), **SUPERPIXEL_CHECKS}


@METHODS.register("kernelshap")
class KernelShapMethod(SuperpixelMethod):
    """Kernel SHAP (Lundberg & Lee 2017) on SLIC superpixels, Captum ``KernelShap``.

    The first two samples are all superpixels kept and all replaced by the baseline (weighted
    10^6, which pins the coefficients' sum to f(x) - f(baseline)); the others keep k superpixels
    drawn from the Shapley kernel's distribution over k, and a weighted linear regression
    (scikit-learn ``LinearRegression``) gives each superpixel's Shapley value estimate.  With a
    single superpixel (Captum cannot sample then) the exact value f(x) - f(baseline) is used.

    Defaults are CPU-sized for the embedded data: 64 samples on about 50 superpixels (the
    regression is then barely determined; raise ``n_samples`` for stabler maps), about 0.7 s per
    image on the embedded model (as for ``lime``; 1000 samples take ~7 s).  The studies' values:
    SHAMSUL (Alam et al. 2023) used 50 SLIC segments and 1000 samples (``kernelshap:n_samples=1000``).
    """

    name = "kernelshap"
    explainer = KernelShap
    default_params: ClassVar[dict] = {"n_samples": 64, "n_segments": 50, "compactness": 0.1, "baseline": "black"}
    param_checks: ClassVar[dict] = {"n_samples": (lambda n: n >= 2, ">= 2 (the all-kept and all-removed samples)"), **SUPERPIXEL_CHECKS}

    def explain(self, adapter, image, target, baseline, mask, extra) -> torch.Tensor:
        if int(mask.max()) > 0:
            return super().explain(adapter, image, target, baseline, mask, extra)
        logits = adapter.module(torch.cat([image, baseline]), *[torch.cat([tensor, tensor]) for tensor in extra])
        return (logits[0, target] - logits[1, target]) * torch.ones_like(image)


def occlusion_pixels(fraction: float, size: int) -> int:
    """A window or stride given as a fraction of the input side, in pixels (at least 1)."""
    return max(1, round(fraction * size))


@METHODS.register("occlusion")
class OcclusionMethod(Method):
    """Occlusion (Zeiler & Fergus 2014), Captum ``Occlusion``: a square window slides over the image.

    ``window`` and ``stride`` are fractions of the model's input side (the same share of the image
    for every model whatever its input size), rounded to pixels; the window covers all channels and
    is filled with the baseline (``black``).  A pixel's attribution is the mean, over the window
    positions covering it, of f(x) - f(x occluded), for the target logit.  Positions per side:
    ceil((1 - window) / stride) + 1, the last one cut off at the border if it does not fit.

    Defaults: window 1/4 of the side, stride 1/4 (non-overlapping): 4 x 4 = 16 positions plus the
    unoccluded input per image, CPU-sized for the embedded data (about 0.15 s per image on the
    embedded model on two CPU cores; window and stride 1/8 give 64 positions, 0.6-0.8 s).
    """

    name = "occlusion"
    postprocess = "abs"
    family = "perturbation"
    library = "captum"
    default_params: ClassVar[dict] = {"window": 0.25, "stride": 0.25, "baseline": "black"}
    param_aliases: ClassVar[dict] = {"sliding_window_shapes": "window", "strides": "stride", "baselines": "baseline"}
    param_checks: ClassVar[dict] = {
        "window": (lambda w: 0 < w <= 1, "in (0, 1] (a fraction of the input side)"),
        "stride": (lambda s: 0 < s <= 1, "in (0, 1] (a fraction of the input side)"),
        "baseline": BASELINE_CHECK,
    }

    def __init__(self, **params):
        super().__init__(**params)
        if self.params["stride"] > self.params["window"]:
            raise UserError(f"method occlusion: stride must be <= window ({self.params['window']!r}), got {self.params['stride']!r}")

    def passes(self):
        """Rows per image: positions (exact where window and stride are whole pixels) plus the unoccluded input."""
        window, stride = self.params["window"], self.params["stride"]
        per_side = math.ceil((1 - window) / stride - 1e-9) + 1
        return per_side * per_side + 1, 0

    def attribute(self, adapter, inputs, targets, seeds, extra=()):
        inputs = inputs.detach()
        channels, side = inputs.shape[1], inputs.shape[-1]
        window = occlusion_pixels(self.params["window"], side)
        stride = min(window, occlusion_pixels(self.params["stride"], side))
        baseline = make_baseline(adapter, inputs, self.params["baseline"])
        occlusion = Occlusion(adapter.module)
        rows = self.rows_per_pass()
        group = min(len(inputs), rows)  # images per Captum call; each pass holds `group` x perturbations_per_eval rows
        with torch.no_grad():
            maps = [
                occlusion.attribute(
                    images,
                    sliding_window_shapes=(channels, window, window),
                    strides=(channels, stride, stride),
                    baselines=baseline,
                    target=image_targets,
                    additional_forward_args=forward_args(image_extra),
                    perturbations_per_eval=max(1, rows // len(images)),
                )
                for images, image_targets, image_extra in row_groups(group, inputs, targets, extra)
            ]
        return torch.cat(maps)
