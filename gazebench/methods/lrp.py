"""Layer-wise relevance propagation (Bach et al. 2015; Montavon et al. 2019) with zennit, conserving.

The explained quantity is the target's raw logit f_c(x) (not its sigmoid): relevance starts as
``one_hot(c) * output`` (zennit's ``attr_output``) and is propagated layer by layer to the input
by zennit's ``Gradient`` attributor under a rule *composite* and gazebench's *canonizers*
(``lrp_canonizers.py``).  The raw map [B, C, S, S] is the input relevance, which sums to the
logit; the protocol sums channels and takes the absolute value (``postprocess = "abs"``).

Composites (parameter ``composite``):

============================== =========== ============== ============== ===========================================
``composite``                  first layer convolutions   dense layers   corresponds to
============================== =========== ============== ============== ===========================================
``epsilon_plus_flat`` (default) Flat        z+             Epsilon        zennit ``EpsilonPlusFlat`` (Kohlbrenner et al. 2020)
``epsilon_gamma_box``          ZBox        Gamma          Epsilon        zennit ``EpsilonGammaBox`` (Montavon et al. 2019)
``epsilon_alpha2_beta1_flat``  Flat        AlphaBeta(2,1) Epsilon        zennit ``EpsilonAlpha2Beta1Flat``
``alpha2_beta1``               AlphaBeta   AlphaBeta(2,1) AlphaBeta(2,1) iNNvestigate ``lrp.alpha_2_beta_1`` (SHAMSUL's alpha2-beta1)
``deep_taylor``                ZBox        z+             z+             deep Taylor (Montavon et al. 2017), iNNvestigate ``deep_taylor.bounded``
``z``                          LRP-0       LRP-0          LRP-0          iNNvestigate ``lrp.z`` (SHAMSUL's z rule); Epsilon(1e-6)
``epsilon``                    Epsilon     Epsilon        Epsilon        iNNvestigate ``lrp.epsilon`` (SHAMSUL's epsilon rule)
============================== =========== ============== ============== ===========================================

``epsilon`` (default 1e-6, zennit's) is the Epsilon rule's stabiliser, ``gamma`` (default 0.25,
zennit's; > 0) the Gamma rule's; a composite ignores a parameter it has no rule for.  ZBox's
bounds are the preprocessed black and white images (per channel).  The "first layer" is the first
convolution or linear layer the forward pass runs (traced, not the first one registered).

Conservation (the map sums to the logit) holds because nothing absorbs or loses relevance:

* every rule runs with ``zero_params=["bias"]``: biases (and the batch-norm shifts merged into
  them) take no relevance;
* z+, AlphaBeta and Gamma are zennit's rules made conserving (``ConservingZPlus``,
  ``ConservingAlphaBeta``, ``ConservingGamma``, zennit ``BasicHook`` s): exact division instead of
  zennit's ``+ 1e-6`` stabiliser, and a unit that has no contribution of the kind the rule shares
  by (no positive one for z+, one sign only for alpha-beta, a zero bias-free output for Gamma)
  passes its relevance on by z+ / z- / zennit's Flat rule instead of losing it (zennit's rules
  lose it, or for alpha-beta double it).  Such units are rare in ReLU networks, where z+ is
  zennit's ZPlus up to the stabiliser (tested), but common in EfficientNet's depthwise
  convolutions on SiLU inputs (zennit's ZPlus loses 15 % of the logit on unet_gaze at 64 px).
  Gamma picks its branch by the sign of the bias-free output (zennit's by the output with its
  bias, whose denominator can then vanish: 1e26 errors on unet_gaze);
* batch norms fed by one convolution are merged into it (left an exact identity); the others
  (DenseNet's pre-activation norms after each concatenation) get zennit's ``Pass``: relevance
  goes through unchanged, the z rule of an elementwise map with its shift excluded (zennit's
  default for batch norms); so do timm's ``BatchNormAct2d`` (norm + activation);
* ``nn.ReLU`` and ``nn.SiLU`` get ``Pass`` (SiLU treated like a ReLU, the usual choice for
  EfficientNets); other activation modules (GELU, Sigmoid, Tanh, ...) have no rule: refused;
* squeeze-excitation blocks (timm ``SqueezeExcite`` / ``SEModule``, torchvision
  ``SqueezeExcitation``; out = x * gate(x)) get ``Pass``: the gate is treated as a constant, so
  each output's relevance goes to its input element and none to the gating branch, as for
  multiplicative gates in Arras et al. 2017 and Ali et al. 2022;
* residual additions become zennit ``Sum`` modules (canonizers) with zennit's ``Norm`` rule
  (summands share in proportion to their values); average pools get ``Norm``; concatenations,
  max pooling, reshapes and eval-mode dropout route relevance by their gradient (conserving).

LRP-0 and LRP-epsilon (``z``, ``epsilon``) divide by bias-free pre-activations, which vanish on
deep batch-norm networks (errors of 1e22 on DenseNet-121): ``check_model`` runs one LRP pass on
a probe image and refuses a model whose relevance does not sum to the probe's logit.

Tolerance: ``CONSERVATION_RTOL`` = 1e-3 on |sum(map) - logit| / |logit| per image.  The stabilisers
are absolute, so a network whose activations are themselves near 1e-6 cannot conserve: an untrained
``unet_gaze`` (timm's default initialisation, fresh batch-norm statistics) has a probe logit of
5.5e-5 at 64 px, misses the tolerance by 8 % and is refused; the trained one is accepted.  Measured with
random weights, eval mode, random batch-norm statistics, 64 px (tests/methods/test_lrp.py): at most
4e-6 on DenseNet-121 and 3.4e-5 on unet_gaze's EfficientNet-B0 encoder classifier, over all
conserving composites; what is left comes from zennit's 1e-6 stabilisers (Flat, Norm, Epsilon)
and float32 rounding.  Every call measures it and records a warning (``self.warnings``) for
images above the tolerance.

``check_model`` (once, before any work) refuses in one line naming the module (dotted name and
type) a model with extra inputs, and one whose forward pass applies, outside every module with a
rule, an operation that is neither a rule nor relevance routing (a residual addition the
canonizers do not cover, ``x * gate`` outside a squeeze-excitation block, a functional
``F.relu``, ``nn.GELU``, LayerNorm, attention, upsampling, ...); it also checks that the canonized
model computes the same logits.  Canonizers and hooks are applied for the duration of each call
only: the model's outputs, parameters, state dict and hooks are unchanged after it (tested).
"""

from __future__ import annotations

import weakref
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from zennit.attribution import Gradient
from zennit.composites import NameLayerMapComposite
from zennit.core import BasicHook, Hook, ParamMod
from zennit.layer import Sum
from zennit.rules import ClampMod, Epsilon, Flat, GammaMod, NoMod, Norm, Pass, ZBox
from zennit.types import Activation, AvgPool, BatchNorm, Convolution

from gazebench.errors import UserError
from gazebench.methods.base import Method
from gazebench.methods.deeplift import type_name
from gazebench.methods.gradient import gradient_leaf, input_gradients_only
from gazebench.methods.lrp_canonizers import LINEAR_LAYERS, gazebench_canonizers, run_hooked, traced_merge_pairs
from gazebench.methods.module_stack import ModuleStackMode, requires_grad_in
from gazebench.models.base import ModelAdapter
from gazebench.registry import METHODS

# composite -> (first layer rule, convolution rule, dense layer rule); see the module docstring
COMPOSITES = {
    "epsilon_plus_flat": ("flat", "zplus", "epsilon"),
    "epsilon_gamma_box": ("zbox", "gamma", "epsilon"),
    "epsilon_alpha2_beta1_flat": ("flat", "alpha2_beta1", "epsilon"),
    "z": ("z", "z", "z"),
    "epsilon": ("epsilon", "epsilon", "epsilon"),
    "alpha2_beta1": ("alpha2_beta1", "alpha2_beta1", "alpha2_beta1"),
    "deep_taylor": ("zbox", "zplus", "zplus"),
}
STABILIZER = 1e-6  # zennit's default stabiliser of every rule but Epsilon (and LRP-0's)
ZERO_BIAS = ["bias"]  # biases (and merged batch-norm shifts) absorb no relevance
CONSERVATION_RTOL = 1e-3  # |sum(map) - logit| / |logit|, the stated tolerance
PASS_ACTIVATIONS = (nn.ReLU, nn.SiLU)  # relevance passes through unchanged
GATE_NAMES = ("SqueezeExcite", "SEModule", "SqueezeExcitation")  # out = x * gate(x): Pass, gate constant

# torch functions that only move values (or are the identity in eval mode): their gradient routes
# relevance without creating or losing any, so they need no rule outside a module that has one.
ROUTING_FUNCTIONS = frozenset((
    "cat", "concat", "concatenate", "stack", "hstack", "vstack", "split", "split_with_sizes", "chunk", "unbind",
    "view", "view_as", "reshape", "reshape_as", "flatten", "unflatten", "permute", "transpose", "t", "movedim",
    "contiguous", "clone", "__getitem__", "narrow", "select", "squeeze", "unsqueeze", "expand", "expand_as", "repeat",
    "max_pool1d", "max_pool2d", "max_pool3d", "max_pool1d_with_indices", "max_pool2d_with_indices",
    "max_pool3d_with_indices", "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
    "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout",
    "pad", "constant_pad_nd", "to", "float", "double", "half", "bfloat16", "type", "type_as", "detach", "apply",
))  # fmt: skip


def is_gate(module: nn.Module) -> bool:
    """A squeeze-excitation block (out = x * gate(x)), recognised by class name (timm, torchvision, smp)."""
    return any(name in type(module).__name__ for name in GATE_NAMES)


NO_EVIDENCE = 1e-12  # |denominator| at or below which a unit has no evidence of the rule's kind: Flat takes over


def _safe(denominator: torch.Tensor, used: torch.Tensor) -> torch.Tensor:
    """The denominator where it is used, 1 elsewhere (exact division: no stabiliser absorbs relevance)."""
    return torch.where(used, denominator, torch.ones_like(denominator))


_POSITIVE, _NEGATIVE = (lambda x: x.clamp(min=0)), (lambda x: x.clamp(max=0))
_SAME = lambda output: output


def _flat_mod() -> ParamMod:
    return ParamMod(lambda param, name: torch.ones_like(param), zero_params=ZERO_BIAS, require_params=False)


class ConservingZPlus(BasicHook):
    """zennit's ``ZPlus`` (z+: each output's relevance shared by the positive contributions x_i w_ij), biases
    zeroed, divided exactly by z+; a unit without positive contribution (z+ <= 1e-12) shares its relevance
    by zennit's ``Flat`` rule (uniformly over its receptive field) instead of losing it."""

    def __init__(self):
        def mapper(out_grad, outputs):
            positive = outputs[0] + outputs[1]
            evidence = positive > NO_EVIDENCE
            share = out_grad * evidence / _safe(positive, evidence)
            return [share, share, out_grad * ~evidence / _safe(outputs[2], outputs[2] > 0)]

        super().__init__(
            input_modifiers=[_POSITIVE, _NEGATIVE, torch.ones_like],
            param_modifiers=[ClampMod(min=0.0, zero_params=ZERO_BIAS), ClampMod(max=0.0, zero_params=ZERO_BIAS), _flat_mod()],
            output_modifiers=[_SAME] * 3,
            gradient_mapper=mapper,
            reducer=lambda inputs, gradients: inputs[0] * gradients[0] + inputs[1] * gradients[1] + gradients[2],
        )


class ConservingAlphaBeta(BasicHook):
    """zennit's ``AlphaBeta`` (alpha * positive shares - beta * negative shares, alpha - beta = 1), biases zeroed,
    exact division; a unit with contributions of one sign only shares its relevance by those (z+ or z-), one
    with none by ``Flat``, so that every unit passes on exactly its relevance."""

    def __init__(self, alpha: float = 2.0, beta: float = 1.0):
        def mapper(out_grad, outputs):
            positive, negative = outputs[0] + outputs[1], outputs[2] + outputs[3]
            has_positive, has_negative = positive > NO_EVIDENCE, negative < -NO_EVIDENCE
            both = has_positive & has_negative
            weight_positive = torch.where(both, alpha, has_positive.to(out_grad.dtype))
            weight_negative = torch.where(both, -beta, (has_negative & ~has_positive).to(out_grad.dtype))
            share_positive = out_grad * weight_positive / _safe(positive, has_positive)
            share_negative = out_grad * weight_negative / _safe(negative, has_negative)
            flat = out_grad * ~(has_positive | has_negative) / _safe(outputs[4], outputs[4] > 0)
            return [share_positive, share_positive, share_negative, share_negative, flat]

        super().__init__(
            input_modifiers=[_POSITIVE, _NEGATIVE, _POSITIVE, _NEGATIVE, torch.ones_like],
            param_modifiers=[
                ClampMod(min=0.0, zero_params=ZERO_BIAS),
                ClampMod(max=0.0, zero_params=ZERO_BIAS),
                ClampMod(max=0.0, zero_params=ZERO_BIAS),
                ClampMod(min=0.0, zero_params=ZERO_BIAS),
                _flat_mod(),
            ],
            output_modifiers=[_SAME] * 5,
            gradient_mapper=mapper,
            reducer=lambda inputs, gradients: sum(inputs[k] * gradients[k] for k in range(4)) + gradients[4],
        )


class ConservingGamma(BasicHook):
    """zennit's generalised ``Gamma`` (Andeol et al. 2021; contributions c + gamma * c+ for a positive output,
    c + gamma * c- for a negative one), biases zeroed, the branch chosen by the sign of the bias-free output z'
    (zennit's uses the output with its bias, whose sign can differ, so that its denominator can vanish);
    exact division (the denominator is at least |z'|); a unit with z' = 0 shares its relevance by ``Flat``."""

    def __init__(self, gamma: float = 0.25):
        def mapper(out_grad, outputs):
            bias_free = outputs[4]
            up, down = bias_free > NO_EVIDENCE, bias_free < -NO_EVIDENCE
            share_up = out_grad * up / _safe(outputs[0] + outputs[1], up)
            share_down = out_grad * down / _safe(outputs[2] + outputs[3], down)
            flat = out_grad * ~(up | down) / _safe(outputs[5], outputs[5] > 0)
            return [share_up, share_up, share_down, share_down, torch.zeros_like(out_grad), flat]

        super().__init__(
            input_modifiers=[_POSITIVE, _NEGATIVE, _POSITIVE, _NEGATIVE, _SAME, torch.ones_like],
            param_modifiers=[
                GammaMod(gamma, min=0.0, zero_params=ZERO_BIAS),
                GammaMod(gamma, max=0.0, zero_params=ZERO_BIAS),
                GammaMod(gamma, max=0.0, zero_params=ZERO_BIAS),
                GammaMod(gamma, min=0.0, zero_params=ZERO_BIAS),
                NoMod(zero_params=ZERO_BIAS),
                _flat_mod(),
            ],
            output_modifiers=[_SAME] * 6,
            gradient_mapper=mapper,
            reducer=lambda inputs, gradients: sum(inputs[k] * gradients[k] for k in range(4)) + gradients[5],
        )


def make_rule(kind: str, epsilon: float, gamma: float, low: torch.Tensor | None, high: torch.Tensor | None) -> Hook:
    """One rule (see the module docstring): zennit's Flat, Epsilon and ZBox, the conserving z+, alpha-beta and gamma."""
    if kind == "flat":
        return Flat(stabilizer=STABILIZER, zero_params=ZERO_BIAS)
    if kind == "zplus":
        return ConservingZPlus()
    if kind == "epsilon":
        return Epsilon(epsilon=epsilon, zero_params=ZERO_BIAS)
    if kind == "z":
        return Epsilon(epsilon=STABILIZER, zero_params=ZERO_BIAS)
    if kind == "gamma":
        return ConservingGamma(gamma=gamma)
    if kind == "alpha2_beta1":
        return ConservingAlphaBeta(alpha=2.0, beta=1.0)
    if kind == "zbox":
        return ZBox(low=low, high=high, stabilizer=STABILIZER, zero_params=ZERO_BIAS)
    raise ValueError(f"unknown LRP rule {kind!r}")


def base_layer_map(model: nn.Module) -> list:
    """Rules of the layers every composite shares, matched before the convolution and dense rules."""
    gates = tuple({type(module) for module in model.modules() if is_gate(module)})
    layer_map = [(gates, Pass())] if gates else []
    return layer_map + [
        (Sum, Norm(stabilizer=STABILIZER)),
        (BatchNorm, Pass()),
        (PASS_ACTIVATIONS, Pass()),
        (Activation, None),  # other activation modules: no rule (check_model refuses them)
        (AvgPool, Norm(stabilizer=STABILIZER)),
    ]


def make_composite(model: nn.Module, composite: str, epsilon: float, gamma: float, first_layer: str | None, merge_pairs, low=None, high=None) -> NameLayerMapComposite:
    """zennit composite ``composite`` for ``model``: its rules, the first layer's by name, gazebench's canonizers."""
    first, convolution, dense = COMPOSITES[composite]
    layer_map = base_layer_map(model) + [
        (Convolution, make_rule(convolution, epsilon, gamma, low, high)),
        (nn.Linear, make_rule(dense, epsilon, gamma, low, high)),
    ]
    name_map = [((first_layer,), make_rule(first, epsilon, gamma, low, high))] if first_layer is not None else []
    return NameLayerMapComposite(name_map=name_map, layer_map=layer_map, canonizers=gazebench_canonizers(merge_pairs))


def first_linear_layer(model: nn.Module, probe: torch.Tensor) -> str | None:
    """The dotted name of the first convolution or linear layer the forward pass of ``probe`` runs."""
    names = {id(module): name for name, module in model.named_modules()}
    order: list[str] = []
    handles = [module.register_forward_pre_hook(lambda m, args: order.append(names[id(m)])) for module in model.modules() if isinstance(module, LINEAR_LAYERS)]
    run_hooked(model, probe, handles)
    return order[0] if order else None


class Plan:
    """What a model's composite needs from one traced forward pass: the first layer and the batch-norm merges."""

    def __init__(self, model: nn.Module, probe: torch.Tensor):
        flags = [(module, module.training) for module in model.modules()]
        model.eval()  # the trace must not update batch-norm statistics
        try:
            self.first_layer = first_linear_layer(model, probe)
            self.merge_pairs = traced_merge_pairs(model, probe)
        finally:
            for module, flag in flags:
                module.train(flag)


_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {input shape: Plan}


def plan_for(model: nn.Module, inputs: torch.Tensor) -> Plan:
    """The model's plan for inputs shaped like ``inputs`` (cached per model and shape)."""
    plans = _PLANS.setdefault(model, {})
    key = tuple(inputs.shape[1:])
    if key not in plans:
        plans[key] = Plan(model, inputs[:1].detach())
    return plans[key]


def box_bounds(adapter: ModelAdapter, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ZBox's bounds [1, C, 1, 1]: the preprocessed black and white images, per channel."""
    mean = torch.tensor(adapter.mean, device=like.device, dtype=like.dtype).view(1, -1, 1, 1)
    std = torch.tensor(adapter.std, device=like.device, dtype=like.dtype).view(1, -1, 1, 1)
    black, white = (0 - mean) / std, (1 - mean) / std
    return torch.minimum(black, white), torch.maximum(black, white)


def one_hot_logits(targets: torch.Tensor):
    """zennit ``attr_output``: the output with every logit but the target's zeroed (relevance starts at the logit)."""

    def attr_output(output: torch.Tensor) -> torch.Tensor:
        return F.one_hot(targets, output.shape[1]).to(output.dtype) * output

    return attr_output


def hooked(module: nn.Module) -> bool:
    """Whether a zennit rule is registered on ``module`` (zennit's hooks are bound methods of ``Hook`` objects)."""
    return any(isinstance(getattr(hook, "__self__", None), Hook) for hook in module._forward_pre_hooks.values())


class UnruledOperations(ModuleStackMode):
    """While active: torch functions that produce input-dependent tensors outside every module with a rule,
    other than relevance routing (``ROUTING_FUNCTIONS``), as {(module name, module type, function)}; also
    the squeeze-excitation blocks whose output shape is not their input's (Pass would be wrong)."""

    prepend_hooks = True

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self.found: dict[tuple[str, type, str], None] = {}
        self.bad_gates: list[tuple[str, type]] = []

    def left(self, module: nn.Module, args: tuple, output) -> None:
        if is_gate(module) and args and isinstance(args[0], torch.Tensor) and (not isinstance(output, torch.Tensor) or output.shape != args[0].shape):
            self.bad_gates.append((self.names[id(module)], type(module)))

    def seen(self, module: nn.Module, function: str, args: tuple, kwargs: dict, result) -> None:
        if function not in ROUTING_FUNCTIONS and requires_grad_in(result) and not any(hooked(running) for running in self.stack):
            self.found.setdefault((self.names[id(module)], type(module), function), None)


def describe(name: str, kind: type) -> str:
    return f"module {name!r} ({type_name(kind)})" if name else f"the model itself ({type_name(kind)})"


@METHODS.register("lrp")
class LRPMethod(Method):
    """Layer-wise relevance propagation with zennit (see the module docstring): rule ``composite``,
    gazebench's canonizers, relevance of the raw target logit, conserved within ``CONSERVATION_RTOL``."""

    name = "lrp"
    postprocess = "abs"
    default_params: ClassVar[dict] = {"composite": "epsilon_plus_flat", "epsilon": 1e-6, "gamma": 0.25}
    family = "relevance"
    library = "zennit"
    param_checks: ClassVar[dict] = {
        "composite": (lambda c: c in COMPOSITES, f"one of {', '.join(COMPOSITES)}"),
        "epsilon": (lambda e: e > 0, "> 0"),
        "gamma": (lambda g: g > 0, "> 0"),
    }

    def passes(self):
        return 1, 1

    def composite_for(self, adapter: ModelAdapter, inputs: torch.Tensor) -> NameLayerMapComposite:
        """The zennit composite this method applies to ``adapter`` for inputs shaped like ``inputs``."""
        plan = plan_for(adapter.module, inputs)
        low, high = box_bounds(adapter, inputs)
        params = self.params
        return make_composite(adapter.module, params["composite"], params["epsilon"], params["gamma"], plan.first_layer, plan.merge_pairs, low, high)

    def check_model(self, adapter: ModelAdapter) -> None:
        """One LRP pass on a probe (a black image and a seeded noise image): refuses, in one line naming the module,
        a model with extra inputs or an operation without a conserving rule, one whose canonized logits differ, and
        one whose relevance does not sum to the noise image's logit within ``CONSERVATION_RTOL``."""
        prefix = f"method lrp cannot explain model {adapter.name}:"
        if adapter.extra_inputs is not None:
            raise UserError(f"{prefix} it takes extra inputs besides the image, which zennit's attributor cannot pass")
        model = adapter.module
        parameter = next(model.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        size = adapter.input_size
        noise = torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            probe = adapter.preprocess(torch.cat([torch.zeros_like(noise), noise]).to(device))
            original = model(probe)
        targets = original[1].abs().argmax().repeat(2)
        leaf = gradient_leaf(probe)
        with input_gradients_only(model), torch.enable_grad(), self.composite_for(adapter, probe).context(model):
            with UnruledOperations(model) as unruled:
                output = model(leaf)
            self.refuse_unruled(prefix, unruled)
            (relevance,) = torch.autograd.grad(output, leaf, grad_outputs=one_hot_logits(targets)(output))
        change = (output.detach() - original).abs().max().item()
        if not change <= 1e-4 * max(original.abs().max().item(), 1.0):
            raise UserError(f"{prefix} its canonized form (batch norms merged into the preceding layers, residual sums as modules) changes its logits by {change:.3g}")
        logit = output[1:, targets[0]].detach()
        error = conservation_error(relevance[1:].detach(), logit).item()
        if not error <= CONSERVATION_RTOL:
            raise UserError(
                f"{prefix} with composite {self.params['composite']} its relevance sums to the logit ({logit.item():.3g}) only within {error:.3g} "
                f"(relative, tolerance {CONSERVATION_RTOL:g}) on a probe image: the rules' denominators vanish on this network (LRP-0 and "
                "LRP-epsilon divide by bias-free pre-activations; use a composite with z+, alpha-beta or gamma rules for convolutions, default "
                "epsilon_plus_flat), or its activations are so small (untrained weights) that the rules' 1e-6 stabilisers absorb the relevance"
            )

    @staticmethod
    def refuse_unruled(prefix: str, unruled: UnruledOperations) -> None:
        """The one-line refusal for the first operation (or squeeze-excitation block) that has no conserving rule."""
        if unruled.bad_gates:
            name, kind = unruled.bad_gates[0]
            raise UserError(f"{prefix} {describe(name, kind)} looks like squeeze-excitation (out = x * gate) but changes its input's shape, so the pass rule for gates does not apply")
        if unruled.found:
            (name, kind, function), *rest = unruled.found
            more = f" (and {len(rest)} more operations)" if rest else ""
            raise UserError(
                f"{prefix} {describe(name, kind)} applies {function} to input-dependent tensors outside every layer with an LRP rule{more}; "
                "relevance would not be conserved there (rules exist for convolutions, linear layers, batch norms, ReLU, SiLU, average pools, "
                "squeeze-excitation and the residual blocks of torchvision/timm ResNets and timm EfficientNets)"
            )

    def attribute(self, adapter, inputs, targets, seeds, extra=()):
        model = adapter.module
        composite = self.composite_for(adapter, inputs)
        with input_gradients_only(model), torch.enable_grad():
            attributor = Gradient(model, composite, attr_output=one_hot_logits(targets))
            output, relevance = attributor(gradient_leaf(inputs))
        self.check_conservation(adapter, relevance.detach(), output.detach().gather(1, targets[:, None])[:, 0])
        return relevance.detach()

    def check_conservation(self, adapter: ModelAdapter, relevance: torch.Tensor, logits: torch.Tensor) -> None:
        """Records a warning when an image's relevance does not sum to its logit within ``CONSERVATION_RTOL``."""
        error = conservation_error(relevance, logits)
        bad = ~(error <= CONSERVATION_RTOL)  # NaN counts as bad
        if bool(bad.any()):
            line = (
                f"lrp on {adapter.name}: relevance sums to the explained logit only within {error.nan_to_num(float('inf')).max().item():.3g} (relative) "
                f"for {int(bad.sum())} image(s) of a batch (tolerance {CONSERVATION_RTOL:g}; composite {self.params['composite']}, epsilon {self.params['epsilon']:g})"
            )
            self.warnings.append(line)


def conservation_error(relevance: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """|sum(map) - logit| / |logit| per image (relevance [B, ...], logits [B])."""
    total = relevance.flatten(1).sum(dim=1).to(logits.dtype)
    return (total - logits).abs() / logits.abs().clamp_min(torch.finfo(logits.dtype).tiny)
