"""Which module's ``forward`` is running while a torch function is called.

Hook-based methods (DeepLift, LRP, guided backprop) apply rules per module; a nonlinearity that a
module's own ``forward`` computes with ``F.relu`` or ``x * gate`` escapes them.  ``ModuleStackMode``
is a ``TorchFunctionMode`` that also keeps a stack of running modules (a forward pre-hook pushes, a
forward hook pops, on every module of the model), so that its subclasses can say, for each torch
function called, in whose ``forward`` it ran.  The pre-flight census, DeepLift's run-time check and
LRP's unruled-operation probe are its subclasses.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.overrides import TorchFunctionMode


class ModuleStackMode(TorchFunctionMode):
    """While active (``with Mode(model) as mode``): ``mode.stack`` is the modules of ``model`` whose
    forward is running, innermost last; ``mode.names`` maps ``id(module)`` to its dotted name.

    Subclasses override ``entered``/``left`` (called with each module's arguments and output) and
    ``seen`` (called for every torch function run inside the model's forward, with its result).
    ``prepend_hooks`` puts the pre-hook before the model's own hooks (a rule's hooks then run inside).
    """

    prepend_hooks = False

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.names = {id(module): name for name, module in model.named_modules()}
        self.stack: list[nn.Module] = []
        self.handles: list = []

    def entered(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        """Called as ``module``'s forward starts (it is already on the stack)."""

    def left(self, module: nn.Module, args: tuple, output) -> None:
        """Called as ``module``'s forward ends (it is already off the stack)."""

    def seen(self, module: nn.Module, function: str, args: tuple, kwargs: dict, result) -> None:
        """Called after each torch function that ran while ``module`` was the innermost module running."""

    def _push(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self.stack.append(module)
        self.entered(module, args, kwargs)

    def _pop(self, module: nn.Module, args: tuple, output) -> None:
        if self.stack and self.stack[-1] is module:
            self.stack.pop()
        self.left(module, args, output)

    def __enter__(self):
        for module in self.model.modules():
            self.handles += [
                module.register_forward_pre_hook(self._push, with_kwargs=True, prepend=self.prepend_hooks),
                module.register_forward_hook(self._pop, always_call=True),
            ]
        return super().__enter__()

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        self.handles = []
        return super().__exit__(*exc)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        if self.stack:
            self.seen(self.stack[-1], getattr(func, "__name__", ""), args, kwargs, result)
        return result


def requires_grad_in(value) -> bool:
    """Whether a tensor, or any tensor in a (nested) list or tuple, requires a gradient."""
    if isinstance(value, torch.Tensor):
        return value.requires_grad
    if isinstance(value, (list, tuple)):
        return any(requires_grad_in(item) for item in value)
    return False
