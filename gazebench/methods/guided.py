"""Guided backpropagation and Guided Grad-CAM with Captum, refused where they would be something else.

Guided backprop (Springenberg et al. 2015) is the input gradient of the target logit in which
every ReLU passes back only positive gradients, and only where its input was positive.  Captum's
``GuidedBackprop`` implements this with hooks on ``nn.ReLU`` modules (``isinstance``), and on
nothing else; what Captum 0.9 does in each other case (``guided_backprop_deconvnet.py``,
``_utils.common._register_backward_hook``; checked in tests/methods/test_guided.py):

* a ReLU applied functionally in a module's forward (``F.relu``, ``torch.relu``, ``Tensor.relu``,
  ``clamp(min=0)``): no hook, so the plain gradient passes through it, silently;
* an ``nn.ReLU`` module used several times per forward pass (torchvision's ResNet blocks): each
  use gets its own input hook, which rectifies that use's own input gradient; the output
  gradient that the hooks share across uses is only tested for presence.  Guided backprop is
  therefore exact with reused modules (Captum's ``Deconvolution``, which reads the shared output
  gradient, is not), and such models are accepted;
* a nonlinear module other than ``nn.ReLU`` (``nn.SiLU``, ``nn.GELU``, ``nn.Sigmoid``, ...): the
  plain gradient passes through it, silently; guided backprop is defined for ReLU networks;
* an ``nn.ReLU`` that runs on tensors that do not depend on the input (an extra-input branch):
  Captum's hook registration raises a RuntimeError in the middle of the run.

``check_model`` refuses all but the second case, in one line naming the first offending module,
from the pre-flight census (``preflight.census``).  Max pooling is allowed, module or function:
guided backprop routes its gradient to the argmax like the plain gradient (Springenberg et al.).
Both methods pass a model's extra inputs as Captum's ``additional_forward_args``.
"""

from __future__ import annotations

import warnings
from typing import ClassVar

from captum.attr import GuidedBackprop, GuidedGradCam
from torch import nn

from gazebench.errors import UserError
from gazebench.methods.base import Method, forward_args
from gazebench.methods.gradient import gradient_leaf, input_gradients_only
from gazebench.methods.preflight import Census, census
from gazebench.registry import METHODS

RELU_FUNCTIONS = frozenset(("relu", "relu_"))  # what nn.ReLU's forward calls
# functional spellings of a ReLU (F.relu, torch.relu, Tensor.relu, clamp(min=0), F.threshold(x, 0, 0), ...)
RELU_LIKE = RELU_FUNCTIONS | {"threshold", "threshold_", "clamp", "clamp_", "clamp_min", "clamp_min_", "clip", "clip_", "maximum"}
CAPTUM_HOOK_WARNING = "Setting backward hooks on ReLU activations"


def is_max_pool(function: str) -> bool:
    """Max pooling (``max_pool2d``, ``adaptive_max_pool2d``, ...): its gradient goes to the argmax, guided or not."""
    return function.startswith(("max_pool", "adaptive_max_pool"))


def guided_refusal(found: Census, method: str) -> str | None:
    """The one-line reason why Captum's guided backprop would not be guided backprop on the census' model, or None."""
    for use in found.functions:
        if is_max_pool(use.function) or (issubclass(use.module.kind, nn.ReLU) and use.function in RELU_FUNCTIONS):
            continue
        if use.functional and use.function in RELU_LIKE:
            reason = (
                f"applies {use.function} functionally in its forward; Captum's guided backprop modifies the backward pass of nn.ReLU modules only, "
                "so this ReLU would pass the plain gradient (make it an nn.ReLU module)"
            )
        elif use.functional:
            reason = f"applies {use.function} to input-dependent tensors in its forward; guided backprop is defined for ReLU networks, and Captum would pass the plain gradient there"
        else:
            reason = f"is a nonlinearity other than ReLU ({use.function}); guided backprop is defined for ReLU networks, and Captum would pass the plain gradient through it"
        return found.refusal(method, use, reason)
    for use in found.modules:
        if issubclass(use.kind, nn.ReLU) and use.input_calls < use.calls:
            return found.refusal(
                method,
                use,
                f"is an nn.ReLU applied to tensors that do not depend on the input ({use.calls - use.input_calls} of {use.calls} calls, e.g. an extra-input branch); "
                "Captum's guided backprop hooks every nn.ReLU and fails there (apply F.relu in such branches)",
            )
    return None


def check_guided(method: Method, adapter) -> None:
    reason = guided_refusal(census(adapter), method.name)
    if reason:
        raise UserError(reason)


@METHODS.register("guided_backprop")
class GuidedBackpropMethod(Method):
    """Guided backpropagation (Springenberg et al. 2015), Captum ``GuidedBackprop``: [B, C, S, S].

    Refuses models on which Captum's ReLU-module hooks would compute something else (module
    docstring).  No parameters; one forward and one backward pass per image.
    """

    name = "guided_backprop"
    postprocess = "abs"
    default_params: ClassVar[dict] = {}
    family = "gradient"

    def check_model(self, adapter) -> None:
        check_guided(self, adapter)

    def attribute(self, adapter, inputs, targets, seeds, extra=()):
        with input_gradients_only(adapter.module), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=CAPTUM_HOOK_WARNING)
            guided = GuidedBackprop(adapter.module)
            return guided.attribute(gradient_leaf(inputs), target=targets, additional_forward_args=forward_args(extra))


@METHODS.register("guided_gradcam")
class GuidedGradCamMethod(Method):
    """Guided Grad-CAM (Selvaraju et al. 2017): guided backprop times Grad-CAM, Captum ``GuidedGradCam``.

    Grad-CAM on the adapter's ``cam_layer`` (ReLU applied) is upsampled to the input size
    **bilinearly**, as in the paper (Captum defaults to nearest), and multiplies the guided
    backprop map elementwise: [B, C, S, S].  Two forward and two backward passes per image
    (Grad-CAM, then guided backprop).  Refuses what guided backprop refuses, and a ``cam_layer``
    whose output is not a [B, C, h, w] map.
    """

    name = "guided_gradcam"
    postprocess = "abs"
    default_params: ClassVar[dict] = {}
    family = "cam"

    def passes(self):
        return 2, 2

    def check_model(self, adapter) -> None:
        check_guided(self, adapter)
        layer = census(adapter).module(adapter.cam_layer)
        if layer is None:
            raise UserError(f"method {self.name} cannot explain model {adapter.name}: its cam_layer ({type(adapter.cam_layer).__name__}) does not run in the forward pass")
        if layer.output_shape is None or len(layer.output_shape) != 4:
            raise UserError(
                f"method {self.name} cannot explain model {adapter.name}: cam_layer {layer.describe()} gives {layer.output_shape or 'no single tensor'}, "
                "not a [B, C, h, w] map that bilinear upsampling can bring to the input size"
            )

    def attribute(self, adapter, inputs, targets, seeds, extra=()):
        with input_gradients_only(adapter.module), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=CAPTUM_HOOK_WARNING)
            guided = GuidedGradCam(adapter.module, adapter.cam_layer)
            maps = guided.attribute(gradient_leaf(inputs), target=targets, additional_forward_args=forward_args(extra), interpolate_mode="bilinear")
        if maps.numel() == 0:  # Captum returns an empty tensor when the Grad-CAM map cannot be interpolated to the input
            raise UserError(f"method {self.name} cannot explain model {adapter.name}: Captum could not upsample the Grad-CAM map of its cam_layer to the input size")
        return maps
