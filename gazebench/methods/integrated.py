"""Integrated gradients and input x gradient, with Captum.

Both return raw input attributions [B, C, S, S]; the protocol sums channels, takes the absolute
value and resamples onto the grid.  Extra model inputs go to Captum as ``additional_forward_args``.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from captum.attr import InputXGradient, IntegratedGradients
from captum.attr._utils.approximation_methods import SUPPORTED_METHODS

from gazebench.methods.base import Method, forward_args, row_groups
from gazebench.methods.gradient import BASELINES, gradient_leaf, input_gradients_only, make_baseline
from gazebench.registry import METHODS

IG_METHODS = tuple(SUPPORTED_METHODS)  # Captum's quadratures: riemann_left/right/middle/trapezoid, gausslegendre


@METHODS.register("integrated_gradients")
class IntegratedGradientsMethod(Method):
    """Integrated gradients (Sundararajan et al. 2017), Captum ``IntegratedGradients``.

    (x - b) times the path integral of the gradient from the baseline b (``black`` by default: the
    adapter's preprocessing of an all-black image, an empty radiograph; ``zero`` for zeros in
    model-input space) to x, by Captum's ``method`` quadrature (Gauss-Legendre by default, as in
    Captum) with ``n_steps`` nodes.  Attributions sum to f(x) - f(b) up to the quadrature error.
    ``n_steps`` defaults to 8 to keep CPU runs short (Captum's default is 50; the paper suggests
    20-300 Riemann steps).  Each image's ``n_steps`` path points go through the model at most
    ``rows_per_pass()`` rows at a time (``--max-batch-elements``; Captum's ``internal_batch_size``):
    a batch is split into groups of at most ``rows_per_pass()`` images, and each group's steps
    are batched as Captum does.
    """

    name = "integrated_gradients"
    postprocess = "abs"
    default_params: ClassVar[dict] = {"n_steps": 8, "method": "gausslegendre", "baseline": "black"}
    family = "path"
    param_aliases: ClassVar[dict] = {"baselines": "baseline"}  # Captum's name
    param_checks: ClassVar[dict] = {
        "n_steps": (lambda n: n >= 1, ">= 1"),
        "method": (lambda m: m in IG_METHODS, f"one of {', '.join(IG_METHODS)}"),
        "baseline": (lambda b: b in BASELINES, f"one of {', '.join(BASELINES)}"),
    }

    def passes(self):
        return self.params["n_steps"], self.params["n_steps"]

    def attribute(self, adapter, inputs, targets, seeds, extra=()):
        rows = self.rows_per_pass()
        baseline = make_baseline(adapter, inputs, self.params["baseline"])
        integrated = IntegratedGradients(adapter.module)
        with input_gradients_only(adapter.module):
            maps = [
                integrated.attribute(
                    gradient_leaf(images),
                    baselines=baseline.expand_as(images),
                    target=image_targets,
                    additional_forward_args=forward_args(image_extra),
                    n_steps=self.params["n_steps"],
                    method=self.params["method"],
                    internal_batch_size=rows,
                ).detach()
                for images, image_targets, image_extra in row_groups(rows, inputs, targets, extra)
            ]
        return torch.cat(maps)


@METHODS.register("input_x_gradient")
class InputXGradientMethod(Method):
    """Input x gradient (Shrikumar et al. 2016), Captum ``InputXGradient``: x * d logit_target / dx.

    Elementwise product of the preprocessed input and its gradient; one forward and one backward
    pass per image.  The implicit reference is the zero input of model-input space (the
    dataset-mean grey image for mean/std-normalised models), not a black image.
    """

    name = "input_x_gradient"
    postprocess = "abs"
    default_params: ClassVar[dict] = {}
    family = "gradient"

    def attribute(self, adapter, inputs, targets, seeds, extra=()):
        with input_gradients_only(adapter.module):
            return InputXGradient(adapter.module).attribute(gradient_leaf(inputs), target=targets, additional_forward_args=forward_args(extra))
