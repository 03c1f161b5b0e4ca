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
  ``F.relu``, any functional nonlinearity found while the model runs: see below), are recorded
  in ``self.warnings``, one readable line each.

Captum needs each nonlinear module (e.g. each ``nn.ReLU``) to be used once per forward pass: it
stores the module's input and output in hooks, and a reused module raises a RuntimeError in the
backward pass (torchvision's ResNet blocks are patched by ``captum_compat.distinct_block_relus``).
Nonlinear modules reached only through a model's extra inputs (the temporal model's frame branch,
which needs no gradient) make Captum's hooks fail: such branches must use functional calls.

Captum also loses a rule silently where a nonlinear module feeds another directly (``nn.ReLU`` ->
``nn.MaxPool2d`` in AlexNet, VGG, the DenseNet and ResNet stems): both hook one shared tensor, and
the ReLU's rule reads the pool's plain gradient instead of its multipliers.  During the call every
module with a rule gets its own copy of its input (``captum_compat.own_inputs``), so this holds on
any network, whether or not it was built with a ``TensorSeparator``.

Captum 0.9's rule for ``nn.MaxPool2d`` loses deltas: it spreads each window's delta back with
``F.max_unpool2d``, which keeps one value where overlapping windows (the 3x3 stride-2 stem pools
of DenseNet and ResNet) share an argmax, and its zero-delta fallback uses the first row's gradient
for every row (captum issue #1276).  During the call, ``corrected_maxpool2d`` replaces it (values
added with ``scatter_add_``, each row's own gradient), for ``nn.MaxPool1d`` and ``nn.MaxPool3d``
as well.

Nonlinear *functions* called in a module's own ``forward`` (``F.relu``, ``torch.sigmoid``, a
product of two input-dependent tensors, ...) cannot be hooked; during the call a torch function
mode (``UnhookedNonlinearities``) records each one that runs on input-dependent tensors outside
a module with a rule, and ``self.warnings`` names the module (type and dotted name) and the
function.  With all of the above, attributions sum to f(x) - f(baseline) for the explained logit
(within float rounding) on every network for which ``self.warnings`` says nothing.
"""

from __future__ import annotations

import math
import warnings
import weakref
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import ClassVar

import torch
import torch.nn.functional as F
from captum.attr import DeepLift
from captum.attr._core.deep_lift import SUPPORTED_NON_LINEAR, nonlinear
from torch import nn

from gazebench.errors import UserError
from gazebench.methods.base import Method, forward_args
from gazebench.methods.gradient import BASELINES, gradient_leaf, input_gradients_only, make_baseline
from gazebench.methods.module_stack import ModuleStackMode
from gazebench.models.captum_compat import own_inputs
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

# torch functions (by ``__name__``: F.relu, torch.relu and Tensor.relu alike) that are nonlinear in
# one input-dependent tensor; called outside a module with a rule, no DeepLift rule applies to them.
NONLINEAR_FUNCTIONS = frozenset((
    "relu", "relu_", "relu6", "elu", "elu_", "selu", "selu_", "celu", "celu_", "leaky_relu", "leaky_relu_", "rrelu", "prelu",
    "gelu", "silu", "mish", "hardswish", "hardsigmoid", "hardtanh", "hardtanh_", "hardshrink", "softshrink", "tanhshrink",
    "threshold", "threshold_", "softplus", "softsign", "sigmoid", "sigmoid_", "tanh", "tanh_", "logsigmoid", "softmax",
    "log_softmax", "softmin", "glu", "exp", "exp_", "expm1", "log", "log_", "log1p", "log2", "sqrt", "sqrt_", "rsqrt", "abs",
    "abs_", "clamp", "clamp_", "clamp_min", "clamp_min_", "clamp_max", "clamp_max_", "clip", "clip_", "max", "amax", "min",
    "amin", "maximum", "minimum", "pow", "pow_", "__pow__", "__rpow__", "square", "reciprocal", "erf", "sin", "cos",
    "max_pool1d", "max_pool2d", "max_pool3d", "max_pool1d_with_indices", "max_pool2d_with_indices", "max_pool3d_with_indices",
    "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d", "adaptive_max_pool1d_with_indices",
    "adaptive_max_pool2d_with_indices", "adaptive_max_pool3d_with_indices", "lp_pool1d", "lp_pool2d", "lp_pool3d",
    "layer_norm", "group_norm", "instance_norm", "local_response_norm", "rms_norm", "normalize",
))  # fmt: skip
# torch functions that are nonlinear when two of their tensors depend on the input (x * gate, q @ k).
PRODUCT_FUNCTIONS = frozenset((
    "mul", "mul_", "__mul__", "__rmul__", "__imul__", "multiply", "div", "div_", "divide", "true_divide", "__truediv__",
    "__rtruediv__", "__itruediv__", "matmul", "__matmul__", "__rmatmul__", "mm", "bmm", "baddbmm", "addcmul", "addcmul_",
    "addcdiv", "einsum", "bilinear", "scaled_dot_product_attention",
))  # fmt: skip


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
        f"{prefix} {count} x {type_name(kind)} have no DeepLift rule; plain gradients pass through them" for kind, count in counts.items() if has_no_rule(kind)
    ]
    squeeze_excite = Counter(type_name(type(m)) for m in model.modules() if is_squeeze_excite(m))
    if squeeze_excite:
        kinds = ", ".join(f"{count} x {kind}" for kind, count in squeeze_excite.items())
        lines.append(
            f"{prefix} squeeze-excitation blocks ({kinds}) gate features with a functional product x * gate; "
            "DeepLift has no rule for it and uses plain gradients there, so attributions need not sum to f(x) - f(baseline)"
        )
    if any(uses_functional_densenet_relu(m) for m in model.modules()):
        lines.append(f"{prefix} torchvision DenseNet.forward applies a functional F.relu; DeepLift uses plain gradients there")
    return lines


# The max pools gazebench's corrected rule replaces Captum's for, with their functional form.
MAX_POOLS = {nn.MaxPool1d: F.max_pool1d, nn.MaxPool2d: F.max_pool2d, nn.MaxPool3d: F.max_pool3d}


def scatter_unpool(values: torch.Tensor, indices: torch.Tensor, output_size: list[int]) -> torch.Tensor:
    """``max_unpool`` (1-3 d) that adds the values of windows sharing an argmax (``F.max_unpool2d`` keeps one)."""
    flat = values.new_zeros(*values.shape[:2], math.prod(output_size[2:]))
    flat.scatter_add_(2, indices.flatten(2), values.flatten(2))
    return flat.view(output_size)


def corrected_maxpool2d(module, inputs, outputs, grad_input, grad_output, eps=1e-10):
    """DeepLift's max-pool rule (Captum's ``maxpool2d`` with its two defects fixed; module docstring),
    for ``nn.MaxPool1d`` / ``nn.MaxPool3d`` too (the pool function follows the module's type).

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
        _, indices = MAX_POOLS[type(module)](module.input, *pool, return_indices=True)
        spread = scatter_unpool(grad_output * delta_out, indices, list(inputs.shape))
        from_x, from_reference = spread.chunk(2)
        spread = torch.cat(2 * [from_x + from_reference])
        delta_in = torch.cat(2 * [x - reference])
    return torch.where(delta_in.abs() < eps, grad_input, spread / delta_in)


@contextmanager
def extra_rescale_rules(model: nn.Module) -> Iterator[None]:
    """For the call: Captum's rescale rule for the model's elementwise activations Captum lacks, the
    corrected max-pool rule, and a copy of its input for every module with a rule (``own_inputs``,
    so no rule misses the next one's multipliers); Captum's table is restored after."""
    added = [kind for kind in leaf_types(model) if needs_rescale_rule(kind)]
    previous_maxpools = {kind: SUPPORTED_NON_LINEAR.get(kind) for kind in MAX_POOLS}
    SUPPORTED_NON_LINEAR.update({kind: nonlinear for kind in added})
    SUPPORTED_NON_LINEAR.update({kind: corrected_maxpool2d for kind in MAX_POOLS})
    try:
        with own_inputs(model, SUPPORTED_NON_LINEAR):
            yield
    finally:
        for kind in added:
            SUPPORTED_NON_LINEAR.pop(kind, None)
        for kind, rule in previous_maxpools.items():
            if rule is None:
                SUPPORTED_NON_LINEAR.pop(kind, None)
            else:
                SUPPORTED_NON_LINEAR[kind] = rule


def input_dependent(args: tuple, kwargs: dict) -> int:
    """How many tensor arguments (also inside lists: ``einsum``) carry a gradient back to the input.

    During the call only the input requires a gradient (``input_gradients_only``), so parameters,
    buffers and branches run without gradients do not count.
    """
    values = [*args, *kwargs.values()]
    values += [item for value in values if isinstance(value, (list, tuple)) for item in value]
    return sum(isinstance(value, torch.Tensor) and value.requires_grad for value in values)


def reported_statically(module: nn.Module) -> bool:
    """Modules whose approximation ``deeplift_warnings`` already names (not reported twice)."""
    leaf = next(module.children(), None) is None
    return (leaf and has_no_rule(type(module))) or is_squeeze_excite(module) or uses_functional_densenet_relu(module)


class UnhookedNonlinearities(ModuleStackMode):
    """While active, records nonlinear torch functions that a module's own forward applies to
    input-dependent tensors where no DeepLift rule covers them (functional ``F.relu``, ``x * gate``).

    The module stack says whose forward is running; functions called inside a module with a rule
    (an ``nn.ReLU`` calls ``F.relu``), outside the model's forward (Captum's own code, the rules in
    the backward pass), or in modules that ``deeplift_warnings`` already reports are not recorded.  ``found``: {(module type, function
    name): [dotted module names]}.
    """

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self.found: dict[tuple[type, str], list[str]] = {}

    def seen(self, module: nn.Module, function: str, args: tuple, kwargs: dict, result) -> None:
        """Records ``function`` if it is nonlinear here and no rule or warning covers ``module``."""
        needed = 1 if function in NONLINEAR_FUNCTIONS else 2 if function in PRODUCT_FUNCTIONS else 0
        if not needed or type(module) in SUPPORTED_NON_LINEAR or reported_statically(module) or input_dependent(args, kwargs) < needed:
            return
        names = self.found.setdefault((type(module), function), [])
        if self.names[id(module)] not in names:
            names.append(self.names[id(module)])


def deeplift_problems(adapter) -> dict[str, list[str]]:
    """Where DeepLift cannot be exact on ``adapter``'s model, one line per place, from a census of one forward pass.

    ``reused``: nonlinear modules with a rule called more than once per pass (Captum raises);
    ``approximations``: module types without a rule, squeeze-excitation gates, torchvision's functional
    DenseNet ReLU, and nonlinear functions applied in a module's own forward outside any rule.
    """
    from gazebench.methods.preflight import census  # preflight imports this module

    model = adapter.module
    taken = census(adapter)
    rule_types = (*SUPPORTED_NON_LINEAR, *RESCALE_TYPES, *MAX_POOLS)
    prefix = f"method deeplift cannot explain model {adapter.name}:"
    reused = [
        f"{prefix} module {use.describe()} is called {use.calls} times per forward pass, and Captum's DeepLift needs one module per use (give each use its own module)"
        for use in taken.reused()
        if use.leaf and issubclass(use.kind, rule_types)
    ]
    names = {id(module): name for name, module in model.named_modules()}
    approximations = [
        f"{prefix} module {taken.module(module).describe()} has no DeepLift rule"
        for module in model.modules()
        if next(module.children(), None) is None and has_no_rule(type(module)) and taken.module(module) is not None and taken.module(module).input_calls
    ]
    approximations += [f"{prefix} module {names[id(module)]!r} ({type_name(type(module))}) gates its features with a functional product x * gate" for module in model.modules() if is_squeeze_excite(module)]
    approximations += [f"{prefix} torchvision DenseNet.forward applies a functional F.relu" for module in model.modules() if uses_functional_densenet_relu(module)]
    for use in taken.functional():
        module = model.get_submodule(use.module.name) if use.module.name else model
        if type(module) in SUPPORTED_NON_LINEAR or reported_statically(module) or any(is_squeeze_excite(parent) for parent in ancestors(model, use.module.name)):
            continue
        approximations.append(f"{prefix} module {use.module.describe()} calls {use.function} on input-dependent tensors in its forward")
    return {"reused": reused, "approximations": approximations}


def ancestors(model: nn.Module, dotted: str) -> list[nn.Module]:
    """The modules that contain the module called ``dotted`` (the model first, the module itself last)."""
    parts = dotted.split(".") if dotted else []
    return [model.get_submodule(".".join(parts[:depth])) if depth else model for depth in range(len(parts) + 1)]


def functional_warnings(found: dict[tuple[type, str], list[str]], model_name: str) -> list[str]:
    """One line per (module type, function) that ``UnhookedNonlinearities`` found, naming the modules."""
    lines = []
    for (kind, function), names in found.items():
        shown = ", ".join(repr(name) if name else "the model itself" for name in names[:3])
        more = f" and {len(names) - 3} more" if len(names) > 3 else ""
        lines.append(
            f"deeplift on {model_name}: {type_name(kind)} ({shown}{more}) calls {function} on input-dependent tensors in its "
            "forward; Captum cannot hook a function, so plain gradients pass through it and attributions need not sum to "
            "f(x) - f(baseline) (rules exist for modules only: nn.ReLU, nn.Sigmoid, nn.MaxPool2d, ...)"
        )
    return lines


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
    default_params: ClassVar[dict] = {"baseline": "black", "approximate": False}
    family = "gradient"
    param_aliases = {"baselines": "baseline"}
    param_checks = {"baseline": (lambda b: b in BASELINES, f"one of {', '.join(BASELINES)}")}

    def __init__(self, **params):
        super().__init__(**params)
        self.exact_models: weakref.WeakSet = weakref.WeakSet()  # models check_model found no approximation in

    def check_model(self, adapter) -> None:
        """Pre-flight: refuse a model on which DeepLift would not be exact, naming the first module.

        A nonlinear module used twice per pass (Captum raises mid-run) is always refused; a
        nonlinearity without a rule (a functional ``F.relu``, a squeeze-excitation ``x * gate``, a
        module type without a rule) is refused unless ``approximate=true``, which runs DeepLift with
        plain gradients there and lists each approximation in run.log.
        """
        problems = deeplift_problems(adapter)
        reused, approximations = problems["reused"], problems["approximations"]
        if reused:
            raise UserError(reused[0])
        if approximations and not self.params["approximate"]:
            more = f" (and {len(approximations) - 1} more)" if len(approximations) > 1 else ""
            raise UserError(f"{approximations[0]}{more}; DeepLift would use plain gradients there, so its map would not be DeepLift's: deeplift:approximate=true runs it anyway and lists the approximations in run.log")
        if not approximations:
            self.exact_models.add(adapter.module)

    def attribute(self, adapter, inputs, targets, seeds, extra=()):
        """DeepLift's attributions; unless ``check_model`` found the model exact, the run-time check
        (``UnhookedNonlinearities``, a hook per module and a callback per torch function) watches the
        pass and records the approximations it sees."""
        exact = adapter.module in self.exact_models
        if not exact:
            self.record(deeplift_warnings(adapter.module, adapter.name))
        baseline = make_baseline(adapter, inputs, self.params["baseline"])
        with (
            input_gradients_only(adapter.module),
            extra_rescale_rules(adapter.module),
            nullcontext(None) if exact else UnhookedNonlinearities(adapter.module) as unhooked,
            warnings.catch_warnings(),
        ):
            warnings.filterwarnings("ignore", message="Setting forward, backward hooks")
            deeplift = DeepLift(adapter.module)
            attributions = deeplift.attribute(
                gradient_leaf(inputs), baselines=baseline.expand_as(inputs), target=targets, additional_forward_args=forward_args(extra)
            )
        if unhooked is not None:
            self.record(functional_warnings(unhooked.found, adapter.name))
        return attributions

    def record(self, lines: list[str]) -> None:
        """Adds the lines not yet in ``self.warnings`` (each is logged once, not once per batch)."""
        self.warnings.extend(line for line in lines if line not in self.warnings)
