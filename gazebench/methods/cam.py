"""Layer methods of Kim et al. on the adapter's ``cam_layer``: Grad-CAM and layer conductance.

Both return raw maps at the layer's resolution; the protocol sums channels, applies ReLU
(``postprocess = "relu"``: positive evidence for the target class) and resamples bilinearly
onto the grid (never Captum's default nearest upsampling).
"""

from __future__ import annotations

import torch
from captum.attr import LayerConductance, LayerGradCam

from gazebench.methods.base import Method, forward_args, row_groups
from gazebench.methods.gradient import BASELINES, gradient_leaf, input_gradients_only, make_baseline
from gazebench.registry import METHODS


@METHODS.register("gradcam")
class GradCamMethod(Method):
    """Grad-CAM (Selvaraju et al. 2017): ReLU(sum_k mean(dy/dA_k) * A_k), Captum ``LayerGradCam``.

    Returns [B, 1, h, w] at the ``cam_layer`` resolution, ReLU already applied by Captum
    (``relu_attributions=True``).
    """

    name = "gradcam"
    postprocess = "relu"
    default_params: dict = {}
    family = "cam"

    def attribute(self, adapter, inputs, targets, seeds, extra=()):
        gradcam = LayerGradCam(adapter.module, adapter.cam_layer)
        with input_gradients_only(adapter.module):
            return gradcam.attribute(gradient_leaf(inputs), target=targets, relu_attributions=True, additional_forward_args=forward_args(extra))


@METHODS.register("conductance")
class ConductanceMethod(Method):
    """Layer conductance (Dhamdhere et al. 2018) of every ``cam_layer`` neuron, Captum ``LayerConductance``.

    Returns [B, C', h, w]; conductances along the straight path from the baseline (``black`` by
    default) to the input sum to f(x) - f(baseline) (up to the ``n_steps`` Riemann error), so
    the channel sum at a location is that location's signed contribution to the target logit.
    Post-processing is ReLU, as for Grad-CAM: the map shows where the layer supports the target,
    and locations that argue against it count as zero (``abs`` would rank them as salient too).
    ``rows_per_pass()`` (at least 2) is Captum's ``internal_batch_size``, which must hold two rows
    per image (conductance's finite differences): the batch goes to Captum in groups of
    ``rows_per_pass() // 2`` images.  Default 8 steps for CPU (Captum's default 50).
    """

    name = "conductance"
    postprocess = "relu"
    default_params = {"n_steps": 8, "baseline": "black"}
    family = "path"
    param_aliases = {"baselines": "baseline"}
    param_checks = {"n_steps": (lambda n: n >= 1, ">= 1"), "baseline": (lambda b: b in BASELINES, f"one of {', '.join(BASELINES)}")}

    def passes(self):
        return self.params["n_steps"], self.params["n_steps"]

    def attribute(self, adapter, inputs, targets, seeds, extra=()):
        conductance = LayerConductance(adapter.module, adapter.cam_layer)
        baseline = make_baseline(adapter, inputs, self.params["baseline"])
        rows = max(2, self.rows_per_pass())  # Captum needs two rows per image in each pass
        group = max(1, rows // 2)  # images per Captum call, so that internal_batch_size = rows holds two rows per image
        with input_gradients_only(adapter.module):
            maps = [
                conductance.attribute(
                    gradient_leaf(images),
                    baselines=baseline.expand_as(images),
                    target=image_targets,
                    n_steps=self.params["n_steps"],
                    internal_batch_size=rows,
                    additional_forward_args=forward_args(image_extra),
                ).detach()
                for images, image_targets, image_extra in row_groups(group, inputs, targets, extra)
            ]
        return torch.cat(maps)
