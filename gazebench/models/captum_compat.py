"""Patches that let Captum's DeepLift run on networks as their libraries build them.

Captum's DeepLift hooks every nonlinear *module*: it raises on a module used more than once per
forward pass, has no rule for functional nonlinearities, and records a nonlinear module's output
gradient with a hook on its output tensor while it rewrites the next nonlinear module's input
gradient with a hook on its input tensor.  The patches here change none of a network's outputs,
parameters or state-dict keys:

- ``TensorSeparator``: an identity that returns a new tensor, put between two nonlinear modules
  that would otherwise share one tensor (DenseNet's ``relu0 -> pool0``, ResNet's stem
  ``relu -> maxpool``), so that the first one's rule sees the second one's multipliers.
- ``distinct_block_relus``: torchvision's ResNet blocks reuse one ``nn.ReLU`` two or three times
  per block; every use gets its own module (same function, no parameters), and the stem's max
  pool gets a ``TensorSeparator`` in front.  With gazebench's corrected max-pool rule
  (methods/deeplift.py) DeepLift's attributions then sum to f(x) - f(baseline).
"""

from __future__ import annotations

import types

import torch
from torch import nn


class TensorSeparator(nn.Identity):
    """An identity that returns a new tensor (a copy), so that two hooked modules never share one.

    Captum's DeepLift records a nonlinear module's output gradient with a hook on its output
    tensor and rewrites the next nonlinear module's input gradient with a hook on its input
    tensor; when both are the same tensor the recording hook runs first and misses the rewrite.
    A subclass of ``nn.Identity``, so DeepLift treats it as the linear module it is.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()


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
