"""A census of a model's nonlinearities, for methods whose rules apply to some of them only.

Guided backprop (Captum modifies the backward pass of ``nn.ReLU`` modules only), DeepLift and LRP
(rules per module type) compute something else, silently, on a network whose nonlinearities they
do not see.  What a network really does is only known by running it: a module's ``forward`` may
call ``F.relu``, ``torch.sigmoid`` or ``x * gate`` itself, and one module may be called twice.
``census(adapter)`` runs the model once on a blank input (an all-black image, two rows, at the
adapter's input size; a blank batch with one central fixation per row builds the extra inputs of
models that take them) in eval mode, with the input as the only tensor that requires a gradient
(so that "depends on the input" is ``requires_grad``: parameters, buffers and extra-input branches
do not count), and records:

* ``modules``: every module that ran (dotted name, type, calls, how many calls received an
  input-dependent tensor, leaf or not, the first output's shape), in order of first call;
* ``functions``: every nonlinear torch function applied to input-dependent tensors
  (``deeplift.NONLINEAR_FUNCTIONS`` on one such tensor, ``deeplift.PRODUCT_FUNCTIONS`` on two, plus
  recurrent and attention kernels), with the innermost module running it.  A call inside one of
  torch's own leaf modules (``nn.ReLU`` calls ``relu``, ``nn.SiLU`` calls ``silu``) is that module's
  implementation (``activations()``); anywhere else it is *functional* (``functional()``): a
  ``forward`` that calls ``F.relu``, ``Tensor.relu``, ``clamp(min=0)``, ``torch.sigmoid`` itself,
  which no module hook can see.

A module called through ``module.forward(x)`` instead of ``module(x)`` runs no hooks, neither
ours nor Captum's: its functions are then counted as functional calls of its caller, as they
should be.  Function calls inside another function (``F.multi_head_attention_forward``'s softmax)
are not seen; the outer function is.  Nothing is differentiated: no gradient reaches any tensor,
and every module's training flag and every parameter's ``requires_grad`` are restored after.

The census is cached per adapter module (and input size), since each method calls it once per
run; ``refresh=True`` takes it again after a model has been changed in place.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections import Counter
from dataclasses import dataclass

import torch
from torch import nn

from gazebench.errors import UserError
from gazebench.methods.deeplift import NONLINEAR_FUNCTIONS, PRODUCT_FUNCTIONS, input_dependent, type_name
from gazebench.methods.gradient import gradient_leaf, input_gradients_only
from gazebench.methods.module_stack import ModuleStackMode
from gazebench.models.base import ModelAdapter

# Nonlinear kernels beyond deeplift's lists: recurrent layers and fused attention (torch's nn.LSTM calls ``lstm``).
KERNEL_FUNCTIONS = frozenset(("lstm", "gru", "rnn_tanh", "rnn_relu", "lstm_cell", "gru_cell", "multi_head_attention_forward"))
CENSUS_ROWS = 2  # blank input rows (two, so that a forward that squeezes the batch dimension behaves as in a run)


@dataclass(frozen=True)
class ModuleUse:
    """One module that ran in the census' forward pass."""

    name: str  # dotted name in the model ("" for the model itself)
    kind: type
    calls: int  # times called in one forward pass
    input_calls: int  # calls that received at least one input-dependent tensor
    leaf: bool  # no child modules
    output_shape: tuple[int, ...] | None  # of the first call's output, when it is a tensor

    def describe(self) -> str:
        """``'features.relu0' (torch.nn.modules.activation.ReLU)``, the way refusals name a module."""
        where = repr(self.name) if self.name else "the model itself"
        return f"{where} ({type_name(self.kind)})"


@dataclass(frozen=True)
class FunctionUse:
    """A nonlinear torch function applied to input-dependent tensors while ``module`` was the innermost module running."""

    module: ModuleUse
    function: str  # the function's ``__name__``: F.relu, torch.relu and Tensor.relu are all "relu"
    functional: bool  # called in a forward of its own, not inside one of torch's leaf modules (nn.ReLU, nn.SiLU, ...)


@dataclass(frozen=True)
class Census:
    """What one forward pass of ``model`` on a blank input ran (see the module docstring)."""

    model: str
    input_size: int
    modules: tuple[ModuleUse, ...]  # in order of first call
    functions: tuple[FunctionUse, ...]  # in order of first call, one per (module, function)

    def leaf_types(self) -> Counter:
        """How many leaf modules of each type ran."""
        return Counter(use.kind for use in self.modules if use.leaf)

    def reused(self) -> list[ModuleUse]:
        """Modules called more than once per forward pass."""
        return [use for use in self.modules if use.calls > 1]

    def functional(self) -> list[FunctionUse]:
        """Nonlinear functions a module's own forward applies to input-dependent tensors (no module hook sees them)."""
        return [use for use in self.functions if use.functional]

    def activations(self) -> list[FunctionUse]:
        """Nonlinear functions run by torch's own leaf modules on input-dependent tensors (``nn.ReLU``: relu, ``nn.SiLU``: silu)."""
        return [use for use in self.functions if not use.functional]

    def module(self, target: nn.Module | str) -> ModuleUse | None:
        """The census entry of a module (by dotted name, or the module object of the adapter's model), None if it never ran."""
        name = target if isinstance(target, str) else self._names.get(id(target))
        return next((use for use in self.modules if use.name == name), None)

    def refusal(self, method: str, offender: ModuleUse | FunctionUse, reason: str) -> str:
        """One line: ``method M cannot explain model X: module 'a.b' (type) <reason>``."""
        use = offender.module if isinstance(offender, FunctionUse) else offender
        return f"method {method} cannot explain model {self.model}: {'module ' if use.name else ''}{use.describe()} {reason}"

    # module object id -> dotted name, for ``module(obj)``; not part of equality or the repr
    _names: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)


def is_torch_leaf(module: nn.Module) -> bool:
    """A leaf module whose ``forward`` is torch's own (nn.ReLU, nn.Conv2d, nn.SiLU, ...; not a subclass that rewrites it)."""
    if next(module.children(), None) is not None:
        return False
    forward = getattr(type(module), "forward", None)
    return getattr(forward, "__module__", "").startswith("torch.")


def blank_batch(adapter: ModelAdapter, rows: int, device: torch.device):
    """An all-black batch at the adapter's input size, one central fixation (0.3 s) per row, for ``extra_inputs``."""
    from gazebench.data.sample import Batch

    size = adapter.input_size
    zeros = torch.zeros(rows, size, size, device=device)
    return Batch(
        image_ids=[f"blank{row}" for row in range(rows)],
        patient_ids=[f"blank{row}" for row in range(rows)],
        images=zeros[:, None],
        labels=torch.zeros(rows, len(adapter.class_names), device=device),
        gaze=zeros.clone(),
        fixation_maps=zeros.clone(),
        fixations=[torch.tensor([[size / 2, size / 2, 0.3]], device=device) for _ in range(rows)],
        readers=["all"] * rows,
    )


class CensusMode(ModuleStackMode):
    """While active: every module that runs (calls, input-dependent calls, first output shape) and the
    nonlinear functions each innermost module applies to input-dependent tensors."""

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self.calls: Counter = Counter()  # id(module) -> calls
        self.input_calls: Counter = Counter()
        self.shapes: dict[int, tuple[int, ...] | None] = {}
        self.order: dict[int, nn.Module] = {}  # modules in order of first call
        self.found: dict[tuple[int, str], None] = {}  # (id(module), function), ordered

    def entered(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        key = id(module)
        self.order.setdefault(key, module)
        self.calls[key] += 1
        self.input_calls[key] += input_dependent(args, kwargs) > 0

    def left(self, module: nn.Module, args: tuple, output) -> None:
        self.shapes.setdefault(id(module), tuple(output.shape) if isinstance(output, torch.Tensor) else None)

    def seen(self, module: nn.Module, function: str, args: tuple, kwargs: dict, result) -> None:
        needed = 1 if function in NONLINEAR_FUNCTIONS or function in KERNEL_FUNCTIONS else 2 if function in PRODUCT_FUNCTIONS else 0
        if needed and input_dependent(args, kwargs) >= needed:
            self.found.setdefault((id(module), function), None)

    def census(self, model_name: str, input_size: int) -> Census:
        uses = {
            key: ModuleUse(
                name=self.names[key],
                kind=type(module),
                calls=self.calls[key],
                input_calls=self.input_calls[key],
                leaf=next(module.children(), None) is None,
                output_shape=self.shapes.get(key),
            )
            for key, module in self.order.items()
        }
        functions = tuple(FunctionUse(uses[key], function, not is_torch_leaf(self.order[key])) for key, function in self.found)
        return Census(model_name, input_size, tuple(uses.values()), functions, dict(self.names))


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # adapter.module -> {input_size: Census}


def census(adapter: ModelAdapter, refresh: bool = False) -> Census:
    """The census of ``adapter.module`` at the adapter's input size (cached per module; see the module docstring).

    Raises a one-line UserError naming the model when it cannot run on the blank input.
    """
    module = adapter.module
    cached = _CACHE.setdefault(module, {})
    if refresh or adapter.input_size not in cached:
        cached[adapter.input_size] = take_census(adapter)
    return dataclasses.replace(cached[adapter.input_size], model=adapter.name)


def take_census(adapter: ModelAdapter) -> Census:
    """One forward pass of the blank input through ``adapter.module`` under ``CensusMode``, nothing cached."""
    module = adapter.module
    parameter = next(module.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    flags = [(child, child.training) for child in module.modules()]
    module.eval()
    try:
        batch = blank_batch(adapter, CENSUS_ROWS, device)
        with torch.no_grad():
            inputs = adapter.preprocess(batch.images)
            extra = adapter.inputs_from(batch)
        with torch.enable_grad(), input_gradients_only(module), CensusMode(module) as mode:
            module(gradient_leaf(inputs), *extra)
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - any failure on a blank input is reported the same way, in one line
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise UserError(f"pre-flight census of model {adapter.name}: the model fails on a blank {adapter.input_size}x{adapter.input_size} input: {type(error).__name__}: {first}") from None
    finally:
        for child, flag in flags:
            child.train(flag)
    return mode.census(adapter.name, adapter.input_size)
