"""VarGrad (Adebayo et al. 2018): the variance of the input gradient over noisy copies of the image."""

from __future__ import annotations

from typing import ClassVar

import torch

from gazebench.errors import UserError
from gazebench.methods.base import Method, repeat_rows
from gazebench.methods.gradient import chunked_gradients, gaussian_noise, input_gradients_only


class VarGrad(Method):
    """VarGrad: Var_n[d logit_target / d x_n] over x_n = x + N(0, (stdev * input range)^2), per input element.

    Adebayo et al., "Local explanation methods for deep neural networks lack sensitivity to
    parameter randomization" (ICLR workshop 2018); in Hooker et al.'s ROAR benchmark (NeurIPS
    2019) VarGrad and SmoothGrad-Squared were the methods that beat a random ranking.  The same
    as Captum's ``NoiseTunnel(Saliency)`` with ``nt_type="vargrad"`` and ``abs=False``
    (E[g^2] - E[g]^2), but each image's noise comes from its own seed, so a map never depends on
    batch size or neighbours.  The raw map is the per-channel variance [B, C, S, S]; the protocol
    sums channels (``abs`` changes nothing).  Defaults as gazebench's SmoothGrad (16 samples,
    noise 15 % of the input range): sized for CPU runs.
    """

    name = "vargrad"
    postprocess = "abs"
    family = "gradient"
    library = "captum"
    default_params: ClassVar[dict] = {"n_samples": 16, "stdev": 0.15}
    param_aliases: ClassVar[dict] = {"nt_samples": "n_samples", "stdevs": "stdev"}  # Captum's NoiseTunnel names
    param_checks: ClassVar[dict] = {
        "n_samples": (lambda n: n >= 2, ">= 2 (a variance needs two samples)"),
        "stdev": (lambda s: s > 0, "> 0 (without noise every sample is the same and the map is zero)"),
    }

    def passes(self):
        return self.params["n_samples"], self.params["n_samples"]

    def check_model(self, adapter):
        """Refuse a model in which a module cuts the gradient to the input (``.detach()``, ``torch.no_grad``)."""
        module = gradient_cut(adapter)
        if module is not None:
            where = f"module {module[0]!r} ({module[1]})" if module[0] else f"its own forward ({module[1]})"
            raise UserError(f"method {self.name} cannot explain model {adapter.name}: {where} cuts the gradient to the input")

    def attribute(self, adapter, inputs, targets, seeds, extra=()):
        n_samples = self.params["n_samples"]
        noisy = inputs.detach().repeat_interleave(n_samples, dim=0) + gaussian_noise(inputs, seeds, n_samples, self.params["stdev"])
        with input_gradients_only(adapter.module):
            gradients = chunked_gradients(adapter.module, noisy, targets.repeat_interleave(n_samples), self.rows_per_pass(), repeat_rows(extra, n_samples))
        per_image = gradients.view(len(inputs), n_samples, *gradients.shape[1:])
        return (per_image**2).mean(dim=1) - per_image.mean(dim=1) ** 2


def gradient_cut(adapter) -> tuple[str, str] | None:
    """(dotted name, type) of the first module whose output loses the input's gradient, on one blank image; None if none does.

    Runs in eval mode (training flags restored) with the parameters frozen.  A model with extra
    inputs cannot be run without a batch: it is not probed.
    """
    if adapter.extra_inputs is not None:
        return None
    names = {module: name for name, module in adapter.module.named_modules()}
    found: list[torch.nn.Module] = []

    def hook(module, args, output):
        outputs = [tensor for tensor in (output if isinstance(output, (tuple, list)) else (output,)) if torch.is_tensor(tensor) and tensor.is_floating_point()]
        if not found and outputs and any(torch.is_tensor(arg) and arg.requires_grad for arg in args) and not any(tensor.requires_grad for tensor in outputs):
            found.append(module)

    modes = {module: module.training for module in adapter.module.modules()}
    parameter = next(adapter.module.parameters(), None)
    blank = torch.zeros(1, 1, adapter.input_size, adapter.input_size, device=parameter.device if parameter is not None else "cpu")
    handles = [module.register_forward_hook(hook) for module in adapter.module.modules()]
    try:
        adapter.module.eval()
        with input_gradients_only(adapter.module), torch.enable_grad():
            adapter.module(adapter.preprocess(blank).requires_grad_(True))
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in modes.items():
            module.training = mode
    return (names[found[0]], type(found[0]).__name__) if found else None
