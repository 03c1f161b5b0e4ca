"""Gradient methods of Kim et al.: saliency, SmoothGrad and GradientSHAP, with Captum.

All three return raw input attributions [B, C, S, S]; the protocol (``Method.__call__``) then
sums channels, takes the absolute value and resamples onto the grid.

Sampling methods draw their randomness per image from ``torch.Generator(seed_i)`` (CPU, so the
draws are the same on every device), never from the global RNG that Captum's ``NoiseTunnel`` and
``GradientShap`` use: a map therefore never depends on batch size or batch neighbours. The
noisy / interpolated inputs of the whole batch are stacked into one expanded batch [B * n, ...]
(image-major, like Captum's ``repeat_interleave``) whose gradients come from Captum's
``Saliency`` in chunks of ``rows_per_pass()`` rows (``--max-batch-elements``).

Noise levels (``stdev``) are fractions of each image's input range (max - min of the
preprocessed input), as in the SmoothGrad paper, so they mean the same under any normalisation.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from captum.attr import Saliency
from torch import nn

from gazebench.methods.base import Method, forward_args, repeat_rows, row_groups
from gazebench.models.base import ModelAdapter
from gazebench.registry import METHODS

BASELINES = ("black", "zero")


def make_baseline(adapter: ModelAdapter, inputs: torch.Tensor, kind: str) -> torch.Tensor:
    """The reference input [1, C, S, S] of ``inputs`` [B, C, S, S].

    ``black``: the adapter's preprocessing of an all-black image (after ImageNet normalisation
    that is ``-mean / std`` per channel, not zero). ``zero``: zeros in model-input space, which
    is the dataset-mean grey image for mean/std-normalised models.
    """
    if kind == "zero":
        return torch.zeros_like(inputs[:1])
    if kind == "black":
        size = inputs.shape[-1]
        black = torch.zeros(1, 1, size, size, device=inputs.device, dtype=inputs.dtype)
        baseline = adapter.preprocess(black)
        if baseline.shape[1:] != inputs.shape[1:]:
            raise ValueError(
                f"{adapter.name}: black baseline has shape {tuple(baseline.shape)}, inputs {tuple(inputs.shape)}"
            )
        return baseline
    raise ValueError(f"unknown baseline {kind!r}; choose one of: {', '.join(BASELINES)}")


@contextmanager
def input_gradients_only(module: nn.Module) -> Iterator[None]:
    """Turn off ``requires_grad`` on every parameter for the duration, then restore it.

    Attribution needs gradients with respect to inputs only; this keeps autograd from building
    weight-gradient graphs and guarantees that no ``.grad`` accumulates on the model.  Only the
    parameters that require grad are touched, so inside an already frozen model (the engine freezes
    the model once for a whole run) it costs one pass over the parameters' flags.
    """
    frozen = [parameter for parameter in module.parameters() if parameter.requires_grad]
    for parameter in frozen:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter in frozen:
            parameter.requires_grad_(True)


def gradient_leaf(inputs: torch.Tensor) -> torch.Tensor:
    """``inputs`` detached from any graph, as a leaf that requires grad (silences Captum's warning)."""
    return inputs.detach().requires_grad_(True)


def input_range(inputs: torch.Tensor) -> torch.Tensor:
    """Per-image range max - min of [B, ...] inputs, shape [B]."""
    flat = inputs.detach().flatten(1)
    return flat.amax(dim=1) - flat.amin(dim=1)


def per_image_draws(seeds: list[int], draw: Callable[[torch.Generator], torch.Tensor]) -> torch.Tensor:
    """``draw(generator_i)`` for each image, concatenated along dim 0; generator_i = CPU Generator(seeds[i])."""
    with torch.no_grad():
        return torch.cat([draw(torch.Generator().manual_seed(int(seed))) for seed in seeds])


def gaussian_noise(inputs: torch.Tensor, seeds: list[int], n_samples: int, stdev: float) -> torch.Tensor:
    """Noise [B * n, C, S, S] (image-major), N(0, (stdev * range_i)^2) from image i's generator."""
    shape = (n_samples, *inputs.shape[1:])
    unit = per_image_draws(seeds, lambda generator: torch.randn(shape, generator=generator))
    sigmas = (stdev * input_range(inputs)).repeat_interleave(n_samples)
    return unit.to(inputs.device, inputs.dtype) * sigmas.view(-1, *[1] * (inputs.dim() - 1))


def chunked_gradients(module: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, chunk_rows: int, extra: tuple = ()) -> torch.Tensor:
    """Input gradients of the target logits (Captum ``Saliency``, signed), ``chunk_rows`` rows per call."""
    saliency = Saliency(module)
    gradients = [
        saliency.attribute(gradient_leaf(rows), target=row_targets, abs=False, additional_forward_args=forward_args(row_extra)).detach()
        for rows, row_targets, row_extra in row_groups(chunk_rows, inputs, targets, extra)
    ]
    return torch.cat(gradients)


def sample_mean(expanded: torch.Tensor, n_samples: int) -> torch.Tensor:
    """Mean over the n samples of each image: [B * n, ...] (image-major) -> [B, ...]."""
    return expanded.view(-1, n_samples, *expanded.shape[1:]).mean(dim=1)


@METHODS.register("saliency")
class SaliencyMethod(Method):
    """Gradient saliency (Simonyan et al. 2014): d logit_target / d input, Captum ``Saliency``.

    Captum's ``abs=False``: the signed gradient is summed over channels before the protocol's
    absolute value (``|sum_c g_c|``, not Captum's default ``sum_c |g_c|``).
    """

    name = "saliency"
    postprocess = "abs"
    default_params: dict = {}
    family = "gradient"

    def attribute(self, adapter, inputs, targets, seeds, extra=()):
        with input_gradients_only(adapter.module):
            return chunked_gradients(adapter.module, inputs, targets, len(inputs), extra)


@METHODS.register("smoothgrad")
class SmoothGradMethod(Method):
    """SmoothGrad (Smilkov et al. 2017): mean over ``n_samples`` noisy copies of the signed gradient.

    The variant is Captum's ``NoiseTunnel(Saliency)`` with ``nt_type="smoothgrad"`` and
    ``abs=False``: signed gradients are averaged, and the absolute value is taken once, by the
    protocol, after summing channels. Noise: N(0, (stdev * input range)^2) per input element,
    from the image's own generator. Defaults (8 samples, 15 % of the range) keep CPU runs short (the paper: 50);
    the paper's 10-20 % noise range is respected.
    """

    name = "smoothgrad"
    postprocess = "abs"
    default_params = {"n_samples": 8, "stdev": 0.15}
    family = "gradient"
    param_aliases = {"nt_samples": "n_samples", "stdevs": "stdev"}  # Captum's NoiseTunnel names
    param_checks = {"n_samples": (lambda n: n >= 1, ">= 1"), "stdev": (lambda s: s >= 0, ">= 0")}

    def passes(self):
        return self.params["n_samples"], self.params["n_samples"]

    def attribute(self, adapter, inputs, targets, seeds, extra=()):
        n_samples = self.params["n_samples"]
        noise = gaussian_noise(inputs, seeds, n_samples, self.params["stdev"])
        noisy = inputs.detach().repeat_interleave(n_samples, dim=0) + noise
        expanded_targets = targets.repeat_interleave(n_samples)
        with input_gradients_only(adapter.module):
            gradients = chunked_gradients(
                adapter.module, noisy, expanded_targets, self.rows_per_pass(), repeat_rows(extra, n_samples)
            )
        return sample_mean(gradients, n_samples)


def draw_gradshap_samples(
    inputs: torch.Tensor, seeds: list[int], n_samples: int, stdev: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """GradientSHAP's randomness, per image: input noise [B * n, C, S, S] and alphas [B * n] ~ U(0, 1).

    Image i's generator first draws its n noise tensors, then its n alphas.
    """
    shape = (n_samples, *inputs.shape[1:])

    def draw(generator: torch.Generator) -> torch.Tensor:
        noise = torch.randn(shape, generator=generator)
        alphas = torch.rand(n_samples, generator=generator)
        return torch.cat([noise.flatten(1), alphas[:, None]], dim=1)

    draws = per_image_draws(seeds, draw).to(inputs.device, inputs.dtype)
    sigmas = (stdev * input_range(inputs)).repeat_interleave(n_samples)
    noise = draws[:, :-1].view(-1, *inputs.shape[1:]) * sigmas.view(-1, *[1] * (inputs.dim() - 1))
    return noise, draws[:, -1]


def gradient_shap_terms(
    module: nn.Module,
    noisy: torch.Tensor,
    baseline: torch.Tensor,
    alphas: torch.Tensor,
    targets: torch.Tensor,
    chunk_rows: int,
    extra: tuple = (),
) -> torch.Tensor:
    """Captum's ``InputBaselineXGradient`` on expanded rows: (x' - b) * grad f(b + a (x' - b))."""
    view = (-1, *[1] * (noisy.dim() - 1))
    differences = noisy - baseline
    interpolated = baseline + alphas.view(view) * differences
    return differences * chunked_gradients(module, interpolated, targets, chunk_rows, extra)


@METHODS.register("gradshap")
class GradientShapMethod(Method):
    """GradientSHAP (Lundberg & Lee 2017) as Captum's ``GradientShap`` computes it, seeded per image.

    For each of ``n_samples`` draws: x' = x + N(0, (stdev * input range)^2) (Captum adds its
    ``stdevs`` noise to the input), b = the baseline (``black`` by default: a single reference,
    so Captum's random baseline choice is trivial), a ~ U(0, 1); the attribution is the mean of
    (x' - b) * grad f(b + a (x' - b)). Defaults: 8 samples (CPU-sized; Captum's default 5), noise 9 % of the input range.
    """

    name = "gradshap"
    postprocess = "abs"
    default_params = {"n_samples": 8, "stdev": 0.09, "baseline": "black"}
    family = "gradient"
    param_aliases = {"stdevs": "stdev", "baselines": "baseline"}  # Captum's GradientShap names
    param_checks = {"n_samples": (lambda n: n >= 1, ">= 1"), "stdev": (lambda s: s >= 0, ">= 0"), "baseline": (lambda b: b in BASELINES, f"one of {', '.join(BASELINES)}")}

    def passes(self):
        return self.params["n_samples"], self.params["n_samples"]

    def attribute(self, adapter, inputs, targets, seeds, extra=()):
        n_samples = self.params["n_samples"]
        noise, alphas = draw_gradshap_samples(inputs, seeds, n_samples, self.params["stdev"])
        noisy = inputs.detach().repeat_interleave(n_samples, dim=0) + noise
        baseline = make_baseline(adapter, inputs, self.params["baseline"])
        expanded_targets = targets.repeat_interleave(n_samples)
        with input_gradients_only(adapter.module):
            terms = gradient_shap_terms(
                adapter.module, noisy, baseline, alphas, expanded_targets, self.rows_per_pass(), repeat_rows(extra, n_samples)
            )
        return sample_mean(terms, n_samples)
