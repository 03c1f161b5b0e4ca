"""DeepLift (Shrikumar et al. 2017, rescale rule) with Captum, honest about what it approximates.

Captum applies DeepLift rules only to the module types in
``captum.attr._core.deep_lift.SUPPORTED_NON_LINEAR`` (matched by exact type); everything else is
back-propagated with plain gradients. That is exact for linear modules (convolutions, linear
layers, eval-mode batch norm, average pooling, ...), but not for other nonlinearities, so:

* elementwise activations Captum lacks (``nn.SiLU``, ``nn.GELU``, ...) get Captum's own rescale
  rule (``nonlinear``), which is DeepLift's rule for any elementwise function; the rule is added
  to Captum's table only for the duration of the call (``extra_rescale_rules``) and removed
  after, so other users of Captum in the process are unaffected outside the call;
* every other module type without a rule, and nonlinear operations that are not modules at all
  (the ``x * gate`` product of squeeze-excitation blocks, torchvision DenseNet's functional
  ``F.relu``), are recorded in ``self.warnings``, one readable line each.

Captum needs each nonlinear module (e.g. each ``nn.ReLU``) to be used once per forward pass: it
stores the module's input and output in hooks, and a reused module raises a RuntimeError in the
backward pass. Models that reuse one ``nn.ReLU`` object or call ``F.relu`` must be patched to
use a distinct module per use.  Nonlinear modules reached only through a model's extra inputs
(the temporal model's frame branch, which needs no gradient) make Captum's hooks fail: such
branches must use functional calls.

Captum 0.9's rule for ``nn.MaxPool2d`` loses deltas: it spreads each window's delta back with
``F.max_unpool2d``, which keeps one value where overlapping windows (the 3x3 stride-2 stem pools
of DenseNet and ResNet) share an argmax, and its zero-delta fallback uses the first row's gradient
for every row (captum issue #1276).  During the call, ``corrected_maxpool2d`` replaces it (values
added with ``scatter_add_``, each row's own gradient), so networks with max pooling keep
completeness (attributions summing to f(x) - f(baseline)) for any baseline.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from contextlib import contextmanager
from typing import Iterator

from captum.attr import DeepLift
from captum.attr._core.deep_lift import SUPPORTED_NON_LINEAR, nonlinear
import torch
import torch.nn.functional as F
from torch import nn

from gazebench.methods.base import Method, forward_args
from gazebench.methods.gradient import gradient_leaf, input_gradients_only, make_baseline
from gazebench.registry import METHODS

# Elementwise activations: DeepLift's rescale rule (delta_out / delta_in) is exact for them.
RESCALE_TYPES = (
    nn.SiLU, nn.GELU, nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.ReLU6, nn.Hardtanh,
    nn.SELU, nn.CELU, nn.Softsign, nn.LogSigmoid,
)  # fmt: skip

# Linear (affine in eval mode) modules: plain gradients are DeepLift's linear rule, no rule needed.
LINEAR_TYPES = (
    nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd,
    nn.Identity, nn.Flatten, nn.Unflatten, nn.modules.pooling._AvgPoolNd, nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.Upsample, nn.modules.padding._ConstantPadNd, nn.modules.padding._ReflectionPadNd,
    nn.modules.padding._ReplicationPadNd, nn.PixelShuffle, nn.PixelUnshuffle, nn.ChannelShuffle,
)  # fmt: skip

SQUEEZE_EXCITE_NAMES = ("SqueezeExcite", "SEModule")


def type_name(module_type: type) -> str:
    return f"{module_type.__module__}.{module_type.__qualname__}"


def leaf_types(model: nn.Module) -> Counter:
    """How many leaf modules (no children) of each type the model has."""
    return Counter(type(module) for module in model.modules() if next(module.children(), None) is None)


def needs_rescale_rule(module_type: type) -> bool:
    return module_type in RESCALE_TYPES and module_type not in SUPPORTED_NON_LINEAR


def has_no_rule(module_type: type) -> bool:
    """A leaf type that is nonlinear (or unknown) and has no DeepLift rule, even with ours."""
    return not (issubclass(module_type, LINEAR_TYPES) or module_type in SUPPORTED_NON_LINEAR or module_type in RESCALE_TYPES)


def is_squeeze_excite(module: nn.Module) -> bool:
    """timm ``SqueezeExcite`` / ``SEModule``, smp ``SCSEModule`` and the like, recognised by class name."""
    return any(name in type(module).__name__ for name in SQUEEZE_EXCITE_NAMES)


def uses_functional_densenet_relu(module: nn.Module) -> bool:
    """torchvision's DenseNet (not a subclass) with its own ``forward``, which calls ``F.relu`` on the features."""
    kind = type(module)
    return (kind.__module__, kind.__name__) == ("torchvision.models.densenet", "DenseNet") and "forward" not in vars(module)


def deeplift_warnings(model: nn.Module, model_name: str) -> list[str]:
    """One line per approximation DeepLift makes on ``model`` (empty: every nonlinearity has a rule)."""
    prefix = f"deeplift on {model_name}:"
    counts = leaf_types(model)
    lines = [
        f"{prefix} {count} x {type_name(kind)} use the rescale rule added by gazebench (Captum has no rule for them)"
        for kind, count in counts.items()
        if needs_rescale_rule(kind)
    ]
    lines += [
        f"{prefix} {count} x {type_name(kind)} have no DeepLift rule; plain gradients pass through them"
        for kind, count in counts.items()
        if has_no_rule(kind)
    ]
    squeeze_excite = Counter(type_name(type(m)) for m in model.modules() if is_squeeze_excite(m))
    if squeeze_excite:
        kinds = ", ".join(f"{count} x {kind}" for kind, count in squeeze_excite.items())
        lines.append(
            f"{prefix} squeeze-excitation blocks ({kinds}) gate features with a functional product x * gate; "
            "DeepLift has no rule for it and uses plain gradients there, so attributions do not sum to f(x) - f(baseline)"
        )
    if any(uses_functional_densenet_relu(m) for m in model.modules()):
        lines.append(f"{prefix} torchvision DenseNet.forward applies a functional F.relu; DeepLift uses plain gradients there")
    return lines


def scatter_unpool(values: torch.Tensor, indices: torch.Tensor, output_size: list[int]) -> torch.Tensor:
    """``max_unpool2d`` that adds the values of windows sharing an argmax (``F.max_unpool2d`` keeps one)."""
    flat = values.new_zeros(*values.shape[:2], math.prod(output_size[2:]))
    flat.scatter_add_(2, indices.flatten(2), values.flatten(2))
    return flat.view(output_size)


def corrected_maxpool2d(module, inputs, outputs, grad_input, grad_output, eps=1e-10):
    """DeepLift's max-pool rule (Captum's ``maxpool2d`` with its two defects fixed; module docstring).

    Rows are [inputs; references] as Captum stacks them.  Each window's output delta goes to its
    argmax (of the input and of the reference), the spread deltas are summed, and the multiplier
    is that sum over the input delta, or the row's own gradient where the input delta is ~0.
    """
    with torch.no_grad():
        x, reference = inputs.chunk(2)
        out, out_reference = outputs.chunk(2)
        cross = torch.max(out, out_reference)
        delta_out = torch.cat([cross - out_reference, out - cross])
        pool = (module.kernel_size, module.stride, module.padding, module.dilation, module.ceil_mode)
        _, indices = F.max_pool2d(module.input, *pool, return_indices=True)
        spread = scatter_unpool(grad_output * delta_out, indices, list(inputs.shape))
        from_x, from_reference = spread.chunk(2)
        spread = torch.cat(2 * [from_x + from_reference])
        delta_in = torch.cat(2 * [x - reference])
    return torch.where(delta_in.abs() < eps, grad_input, spread / delta_in)


@contextmanager
def extra_rescale_rules(model: nn.Module) -> Iterator[None]:
    """For the call: Captum's rescale rule for the model's elementwise activations Captum lacks, and
    the corrected max-pool rule; Captum's table is restored after."""
    added = [kind for kind in leaf_types(model) if needs_rescale_rule(kind)]
    previous_maxpool = SUPPORTED_NON_LINEAR.get(nn.MaxPool2d)
    SUPPORTED_NON_LINEAR.update({kind: nonlinear for kind in added})
    SUPPORTED_NON_LINEAR[nn.MaxPool2d] = corrected_maxpool2d
    try:
        yield
    finally:
        for kind in added:
            SUPPORTED_NON_LINEAR.pop(kind, None)
        if previous_maxpool is None:
            SUPPORTED_NON_LINEAR.pop(nn.MaxPool2d, None)
        else:
            SUPPORTED_NON_LINEAR[nn.MaxPool2d] = previous_maxpool


@METHODS.register("deeplift")
class DeepLiftMethod(Method):
    """DeepLift, rescale rule, Captum ``DeepLift`` with the ``black`` baseline by default.

    The default reference is the adapter's preprocessing of an all-black image (an empty
    radiograph), not zeros in normalised space (the mean-grey image); ``baseline="zero"`` gives
    the latter. Attributions sum to f(x) - f(baseline) for the target logit wherever every
    nonlinearity has a rule; ``self.warnings`` lists where it does not.
    """

    name = "deeplift"
    postprocess = "abs"
    default_params = {"baseline": "black"}

    def attribute(self, adapter, inputs, targets, seeds, extra=()):
        new_lines = [line for line in deeplift_warnings(adapter.module, adapter.name) if line not in self.warnings]
        self.warnings.extend(new_lines)
        baseline = make_baseline(adapter, inputs, self.params["baseline"])
        with input_gradients_only(adapter.module), extra_rescale_rules(adapter.module), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Setting forward, backward hooks")
            deeplift = DeepLift(adapter.module)
            return deeplift.attribute(
                gradient_leaf(inputs), baselines=baseline.expand_as(inputs), target=targets, additional_forward_args=forward_args(extra)
            )
