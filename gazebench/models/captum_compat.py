"""Patches that let Captum's DeepLift run on networks as their libraries build them.

Captum's DeepLift hooks every nonlinear *module*: it raises on a module used more than once per
forward pass, has no rule for functional nonlinearities, and records a nonlinear module's output
gradient with a hook on its output tensor while it rewrites the next nonlinear module's input
gradient with a hook on its input tensor.  When one tensor is both (an ``nn.ReLU`` feeding an
``nn.MaxPool2d`` directly, as in AlexNet, VGG and the DenseNet / ResNet stems), the recording hook
runs first and the ReLU's rule never sees the pool's multipliers: attributions silently stop
summing to f(x) - f(baseline) (by 3% to over 100% on a small Conv-ReLU-MaxPool network, AlexNet
and VGG-11 with random weights).  The
patches here change none of a network's outputs, parameters or state-dict keys:

- ``own_inputs``: for the duration of a call, every hooked module gets a copy of its input, made
  before Captum's hooks run, so a rewriting hook never shares a tensor with a recording hook.
  This is the general fix; gazebench's DeepLift (methods/deeplift.py) applies it to every module
  with a rule, on any network.
- ``TensorSeparator``: the same separation built into a network (DenseNet's ``relu0 -> pool0``,
  ResNet's stem ``relu -> maxpool``), for Captum's DeepLift used without gazebench's method.
- ``distinct_block_relus``: torchvision's ResNet blocks reuse one ``nn.ReLU`` two or three times
  per block; every use gets its own module (same function, no parameters), and the stem's max
  pool gets a ``TensorSeparator`` in front.  With gazebench's corrected max-pool rule
  (methods/deeplift.py) DeepLift's attributions then sum to f(x) - f(baseline).
"""

from __future__ import annotations

import types
from collections.abc import Container, Iterator
from contextlib import contextmanager

import torch
from torch import nn


class TensorSeparator(nn.Identity):
    """An identity that returns a new tensor (a copy), so that two hooked modules never share one.

    Captum's DeepLift records a nonlinear module's output gradient with a hook on its output
    tensor and rewrites the next nonlinear module's input gradient with a hook on its input
    tensor; when both are the same tensor the recording hook runs first and misses the rewrite.
    A subclass of ``nn.Identity``, so DeepLift treats it as the linear module it is.  gazebench's
    DeepLift no longer needs it (``own_inputs`` separates every hooked input); it is kept so that
    Captum's DeepLift used directly stays complete on the networks built with it.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()


def _copy_inputs(module: nn.Module, args: tuple) -> tuple:
    """Forward pre-hook: the module's tensor inputs, copied (same values, a tensor of its own)."""
    return tuple(arg.clone() if isinstance(arg, torch.Tensor) else arg for arg in args)


@contextmanager
def own_inputs(model: nn.Module, kinds: Container[type]) -> Iterator[None]:
    """For the duration, every module of ``model`` whose exact type is in ``kinds`` gets a copy of its input.

    The copy is made by a pre-hook put in front of all others (``prepend``), so Captum's
    input-rewriting hook lands on the copy, which only this module reads; the rewritten gradient
    then flows back into the original tensor, where the producer's recording hook (and any other
    reader's gradient) meets it.  Values are unchanged; the hooks are removed after.
    """
    handles = [module.register_forward_pre_hook(_copy_inputs, prepend=True) for module in model.modules() if type(module) in kinds]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _basic_block_forward(self, x: torch.Tensor) -> torch.Tensor:
    """torchvision ``BasicBlock.forward`` with a distinct ReLU module per use."""
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return self.relu_out(out + identity)


def _bottleneck_forward(self, x: torch.Tensor) -> torch.Tensor:
    """torchvision ``Bottleneck.forward`` with a distinct ReLU module per use."""
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu_mid(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    return self.relu_out(out + identity)


def distinct_block_relus(network: nn.Module) -> nn.Module:
    """Give every ReLU use in torchvision ResNet blocks its own ``nn.ReLU`` (in place, returns ``network``).

    torchvision's ``BasicBlock`` / ``Bottleneck`` call ``self.relu`` two / three times, and
    Captum's DeepLift raises on a module used more than once.  The stem's max pool gets a
    ``TensorSeparator`` in front, so that the ReLU before it gets the pool's multipliers.  The new
    modules have no parameters, so outputs, parameters and state-dict keys are unchanged.
    """
    from torchvision.models.resnet import BasicBlock, Bottleneck

    for block in network.modules():
        kind = type(block)
        if kind is BasicBlock:
            block.relu_out = nn.ReLU(inplace=True)
            block.forward = types.MethodType(_basic_block_forward, block)
        elif kind is Bottleneck:
            block.relu_mid = nn.ReLU(inplace=True)
            block.relu_out = nn.ReLU(inplace=True)
            block.forward = types.MethodType(_bottleneck_forward, block)
    if isinstance(getattr(network, "maxpool", None), nn.MaxPool2d):  # the stem's relu feeds maxpool directly
        network.maxpool = nn.Sequential(TensorSeparator(), network.maxpool)
    return network
