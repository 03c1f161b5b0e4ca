"""Canonizers for LRP with zennit: temporary rewrites after which every operation has a conserving rule.

A zennit canonizer changes a network for the duration of an attribution and restores it after
(``Composite.register`` / ``remove``); outputs stay the same (checked by ``LRPMethod.check_model``).
zennit 0.5.1 ships canonizers for torchvision's VGG and ResNet only, and they do not fit here:
its ``SequentialMergeBatchNorm`` merges a batch norm into whatever linear layer precedes it among
the leaves, which on DenseNet is the previous dense layer's ``conv2`` (32 channels) in front of
the next layer's pre-activation ``norm1`` (the concatenation of every earlier feature map), a
shape error; its ``AttributeCanonizer`` deletes the attributes it set on removal, which would
delete the instance ``forward`` that ``captum_compat.distinct_block_relus`` gives torchvision's
ResNet blocks.  The canonizers here:

* ``MergeTracedBatchNorms``: every batch norm whose input is the output of one convolution or
  linear layer (found by a forward trace, each module called once) is merged into it, as zennit's
  ``MergeBatchNorm`` does, and left as an *exact* identity (running variance 1 - eps, so that
  ``x / sqrt(var + eps)`` divides by 1; zennit's leaves ``x / sqrt(1 + eps)``, a 1e-5 to 1e-3
  change per merged norm).  On DenseNet this merges ``conv0 -> norm0`` and each dense layer's
  ``conv1 -> norm2``; the pre-activation norms after each concatenation (``norm1``, the
  transitions' ``norm``, ``norm5``) have no single linear layer in front and keep their own rule
  (``Pass``: see lrp.py).  On timm's EfficientNet every ``BatchNormAct2d`` follows its convolution.
* ``SkipSum`` (timm ``DepthwiseSeparableConv``, ``InvertedResidual``, ``EdgeResidual`` with a
  skip), ``TorchvisionResNetSum`` and ``TimmResNetSum`` (``BasicBlock``, ``Bottleneck``): the
  residual addition ``f(x) + x`` becomes zennit's ``Sum`` module over the stacked pair, so that it
  gets a rule (``Norm``: each summand receives relevance in proportion to its value) instead of
  the gradient, which would hand the full relevance to both summands.  This is what zennit's
  ``ResNetCanonizer`` does for torchvision's ResNet.
* ``TorchvisionDenseNetHead``: torchvision's ``DenseNet.forward`` applies a functional ``F.relu``
  and ``F.adaptive_avg_pool2d``; they become modules (``nn.ReLU``, ``nn.AdaptiveAvgPool2d``), as
  gazebench's own DenseNet builds them, so that they get rules.

Attributes are set with ``PatchAttributes``, which restores each one exactly as it was (an
instance attribute, a child module, or absent) when the canonizer is removed.
"""

from __future__ import annotations

import types
from collections import Counter

import torch
from torch import nn
from zennit.canonizers import Canonizer, CompositeCanonizer, MergeBatchNorm
from zennit.layer import Sum

LINEAR_LAYERS = (nn.modules.conv._ConvNd, nn.Linear)
_MISSING = object()
_STORES = ("_parameters", "_buffers", "_modules")


# ----------------------------------------------------------------------------- batch norms


class MergeTracedBatchNorms(MergeBatchNorm):
    """Merges the (linear layer name, batch norm name) ``pairs`` found by ``traced_merge_pairs``, as zennit's
    ``MergeBatchNorm`` does, leaving each batch norm an exact identity (running variance ``1 - eps``)."""

    def __init__(self, pairs=()):
        super().__init__()
        self.pairs = tuple(pairs)

    def apply(self, root_module):
        lookup = dict(root_module.named_modules())
        instances = []
        for linear, norm in self.pairs:
            instance = self.copy()
            instance.register((lookup[linear],), lookup[norm])
            instances.append(instance)
        return instances

    def merge_batch_norm(self, modules, batch_norm):
        MergeBatchNorm.merge_batch_norm(modules, batch_norm)
        batch_norm.running_var.data = torch.full_like(batch_norm.running_var.data, 1.0 - batch_norm.eps)

    def copy(self):
        return MergeTracedBatchNorms(self.pairs)


def mergeable_norm(module: nn.Module) -> bool:
    """A batch norm with affine parameters and running statistics (what a merge rewrites)."""
    return isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine and module.running_mean is not None and module.running_var is not None


def run_hooked(model: nn.Module, probe: torch.Tensor, handles: list) -> None:
    """One forward pass of ``probe`` without gradients, for the hooks behind ``handles``; removes them after."""
    try:
        with torch.no_grad():
            model(probe)
    finally:
        for handle in handles:
            handle.remove()


def traced_merge_pairs(model: nn.Module, probe: torch.Tensor) -> list[tuple[str, str]]:
    """(linear layer, batch norm) names where the norm's input *is* the linear layer's output, both called once.

    One forward pass of ``probe`` (no gradient) with hooks: a convolution's or linear layer's
    output tensor is remembered, and a batch norm receiving that very tensor object (same channel
    count along dimension 1) is paired with it.  That nothing else reads the linear layer's output
    is not traced: ``LRPMethod.check_model`` checks that the canonized model's outputs are unchanged.
    """
    names = {id(module): name for name, module in model.named_modules()}
    calls: Counter = Counter()
    produced: dict[int, tuple[nn.Module, torch.Tensor]] = {}
    found: list[tuple[nn.Module, nn.Module]] = []

    def after_linear(module, args, output):
        calls[id(module)] += 1
        if isinstance(output, torch.Tensor):
            produced[id(output)] = (module, output)

    def before_norm(module, args):
        calls[id(module)] += 1
        source = produced.get(id(args[0])) if args and isinstance(args[0], torch.Tensor) else None
        if source is not None and source[1] is args[0]:
            found.append((source[0], module))

    handles = []
    for module in model.modules():
        if isinstance(module, LINEAR_LAYERS):
            handles.append(module.register_forward_hook(after_linear))
        elif mergeable_norm(module):
            handles.append(module.register_forward_pre_hook(before_norm))
    run_hooked(model, probe, handles)
    pairs = []
    for linear, norm in found:
        channels = linear.out_features if isinstance(linear, nn.Linear) else linear.out_channels
        if calls[id(linear)] == 1 and calls[id(norm)] == 1 and channels == norm.num_features and linear.weight is not None:
            pairs.append((names[id(linear)], names[id(norm)]))
    return pairs


# ----------------------------------------------------------------------------- attribute patches


def _stored(module: nn.Module, key: str) -> tuple[str | None, object]:
    """Where ``key`` lives on ``module`` (a parameter/buffer/module store, the instance dict, or nowhere) and its value."""
    for store in _STORES:
        values = module.__dict__.get(store, {})
        if key in values:
            return store, values[key]
    if key in module.__dict__:
        return "__dict__", module.__dict__[key]
    return None, _MISSING


class PatchAttributes(Canonizer):
    """Sets attributes of matching modules (``patch(name, module)`` -> dict or None) and restores them exactly.

    zennit's ``AttributeCanonizer`` deletes the attributes on removal; this one puts back what was
    there (an instance ``forward``, a flag such as ``has_skip``) and deletes only what was absent.
    """

    def __init__(self):
        self.module: nn.Module | None = None
        self.saved: dict[str, tuple[str | None, object]] = {}

    def patch(self, name: str, module: nn.Module) -> dict | None:
        raise NotImplementedError

    def apply(self, root_module):
        instances = []
        for name, module in root_module.named_modules():
            attributes = self.patch(name, module)
            if attributes:
                instance = self.copy()
                instance.register(module, attributes)
                instances.append(instance)
        return instances

    def register(self, module, attributes):
        self.module = module
        self.saved = {key: _stored(module, key) for key in attributes}
        for key, value in attributes.items():
            setattr(module, key, value)

    def remove(self):
        for key, (store, value) in self.saved.items():
            if _stored(self.module, key)[0] is not None:
                delattr(self.module, key)
            if store == "__dict__":
                self.module.__dict__[key] = value
            elif store is not None:
                getattr(self.module, store)[key] = value
        self.saved = {}


def _sum(pair: list[torch.Tensor], summation: nn.Module) -> torch.Tensor:
    return summation(torch.stack(pair, dim=-1))


def _timm_effnet_blocks() -> tuple[type, ...]:
    try:
        from timm.models._efficientnet_blocks import DepthwiseSeparableConv, EdgeResidual, InvertedResidual
    except ImportError:  # pragma: no cover - timm is a dependency of the EGD models
        return ()
    return (DepthwiseSeparableConv, InvertedResidual, EdgeResidual)


def _skip_sum_forward(self, x: torch.Tensor) -> torch.Tensor:
    """The block without its shortcut (``has_skip`` is False while patched), then ``Sum([drop_path(out), x])``."""
    out = self.canonizer_block_forward(x)
    return _sum([self.drop_path(out), x], self.canonizer_sum)


class SkipSum(PatchAttributes):
    """timm EfficientNet / MobileNet blocks with a skip: ``drop_path(f(x)) + x`` through a ``Sum`` module."""

    def patch(self, name, module):
        if type(module) in _timm_effnet_blocks() and getattr(module, "has_skip", False):
            return {
                "canonizer_block_forward": module.forward,  # the block's forward as it is (bound method)
                "has_skip": False,
                "canonizer_sum": Sum(),
                "forward": types.MethodType(_skip_sum_forward, module),
            }
        return None

    def copy(self):
        return SkipSum()


def _torchvision_basic_forward(self, x: torch.Tensor) -> torch.Tensor:
    """torchvision ``BasicBlock.forward`` with the addition as a ``Sum`` module (``relu_out``: captum_compat's distinct ReLU)."""
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return getattr(self, "relu_out", self.relu)(_sum([out, identity], self.canonizer_sum))


def _torchvision_bottleneck_forward(self, x: torch.Tensor) -> torch.Tensor:
    """torchvision ``Bottleneck.forward`` with the addition as a ``Sum`` module."""
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = getattr(self, "relu_mid", self.relu)(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    return getattr(self, "relu_out", self.relu)(_sum([out, identity], self.canonizer_sum))


class TorchvisionResNetSum(PatchAttributes):
    """torchvision ResNet ``BasicBlock`` / ``Bottleneck``: the residual addition through a ``Sum`` module."""

    def patch(self, name, module):
        from torchvision.models.resnet import BasicBlock, Bottleneck

        forward = {BasicBlock: _torchvision_basic_forward, Bottleneck: _torchvision_bottleneck_forward}.get(type(module))
        if forward is None:
            return None
        return {"canonizer_sum": Sum(), "forward": types.MethodType(forward, module)}

    def copy(self):
        return TorchvisionResNetSum()


def _timm_tail(self, x: torch.Tensor, shortcut: torch.Tensor, act: nn.Module) -> torch.Tensor:
    if self.se is not None:
        x = self.se(x)
    if self.drop_path is not None:
        x = self.drop_path(x)
    if self.downsample is not None:
        shortcut = self.downsample(shortcut)
    return act(_sum([x, shortcut], self.canonizer_sum))


def _timm_basic_forward(self, x: torch.Tensor) -> torch.Tensor:
    """timm ``resnet.BasicBlock.forward`` (timm 1.0) with ``x += shortcut`` as a ``Sum`` module."""
    out = self.aa(self.act1(self.drop_block(self.bn1(self.conv1(x)))))
    out = self.bn2(self.conv2(out))
    return _timm_tail(self, out, x, self.act2)


def _timm_bottleneck_forward(self, x: torch.Tensor) -> torch.Tensor:
    """timm ``resnet.Bottleneck.forward`` (timm 1.0) with ``x += shortcut`` as a ``Sum`` module."""
    out = self.act1(self.bn1(self.conv1(x)))
    out = self.aa(self.act2(self.drop_block(self.bn2(self.conv2(out)))))
    out = self.bn3(self.conv3(out))
    return _timm_tail(self, out, x, self.act3)


class TimmResNetSum(PatchAttributes):
    """timm ResNet ``BasicBlock`` / ``Bottleneck``: the residual addition through a ``Sum`` module."""

    def patch(self, name, module):
        try:
            from timm.models.resnet import BasicBlock, Bottleneck
        except ImportError:  # pragma: no cover
            return None
        forward = {BasicBlock: _timm_basic_forward, Bottleneck: _timm_bottleneck_forward}.get(type(module))
        if forward is None or "forward" in vars(module):
            return None
        return {"canonizer_sum": Sum(), "forward": types.MethodType(forward, module)}

    def copy(self):
        return TimmResNetSum()


def _torchvision_densenet_forward(self, x: torch.Tensor) -> torch.Tensor:
    """torchvision ``DenseNet.forward`` with its functional ReLU and average pool as modules."""
    out = self.canonizer_pool(self.canonizer_relu(self.features(x)))
    return self.classifier(torch.flatten(out, 1))


class TorchvisionDenseNetHead(PatchAttributes):
    """torchvision ``DenseNet`` (its own ``forward``): ``F.relu`` and ``F.adaptive_avg_pool2d`` become modules."""

    def patch(self, name, module):
        kind = type(module)
        if (kind.__module__, kind.__name__) != ("torchvision.models.densenet", "DenseNet") or "forward" in vars(module):
            return None
        return {"canonizer_relu": nn.ReLU(), "canonizer_pool": nn.AdaptiveAvgPool2d(1), "forward": types.MethodType(_torchvision_densenet_forward, module)}

    def copy(self):
        return TorchvisionDenseNetHead()


def gazebench_canonizers(merge_pairs=()) -> list[Canonizer]:
    """The canonizers ``LRPMethod`` applies, in order: structure first (heads, residual sums), then batch-norm merges."""
    return [CompositeCanonizer([TorchvisionDenseNetHead(), SkipSum(), TorchvisionResNetSum(), TimmResNetSum()]), MergeTracedBatchNorms(merge_pairs)]
