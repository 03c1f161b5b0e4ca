"""The CAM family beyond Grad-CAM, computed by the grad-cam package (pytorch-grad-cam 1.5.7).

Six methods on the adapter's ``cam_layer`` (activations A [C, h, w], gradients G = dy_t/dA of
the target logit y_t), each run through the library's own class:

==================  ==========================================  =============================  ===========
method              paper                                       the map                        passes
==================  ==========================================  =============================  ===========
gradcam_plus_plus   Chattopadhay et al. 2018 (WACV)             sum_k w_k A_k, w_k = sum_ij    (1, 1)
                                                                relu(G) * alpha (eq. 19; the
                                                                library's closed form from G)
scorecam            Wang et al. 2020 (CVPR-W)                   sum_k w_k A_k, w = softmax_k   ("1 + C", 0)
                                                                of y_t(x * norm(up(A_k)))
xgradcam            Fu et al. 2020 (BMVC, Axiom-based Grad-CAM) sum_k w_k A_k, w_k = sum_ij    (1, 1)
                                                                G * A_k / sum_ij A_k
hirescam            Draelos & Carin 2020 (arXiv 2011.08891)     sum_k G_k * A_k (elementwise)  (1, 1)
layercam            Jiang et al. 2021 (IEEE TIP)                sum_k relu(G_k) * A_k          (1, 1)
eigencam            Muhammad & Yeasin 2020 (IJCNN)              A's first principal component  (1, 0)
                                                                (locations x channels, centred)
==================  ==========================================  =============================  ===========

C is the number of ``cam_layer`` channels (1024 for DenseNet-121): Score-CAM scores one masked
copy of the input per channel.  No method has parameters.

Raw maps.  The library's ``cam(input_tensor, targets)`` applies ReLU, a per-image min-max and a
cv2 resize to the input size; the benchmark needs the layer-resolution map *before* all of that,
so that its own post-processing (``postprocess = "relu"``, bilinear resize onto the grid) applies
as for every other method.  ``attribute`` therefore runs the library's pieces as
``BaseCAM.forward`` does, minus the scaling: the hooked forward (``cam.activations_and_grads``),
for gradient methods the backward of ``sum_i ClassifierOutputTarget(t_i)(logits_i)``, then
``cam.get_cam_image(...)`` with ``eigen_smooth=False``.  It returns [B, h, w] float maps on the
input's device; ``ReLU -> per-image min-max -> cv2.resize`` of them is the library's own output
(tests check this to 1e-5).  Differences from ``BaseCAM.forward``, none of which changes a map:
parameters do not require grad during the call (``input_gradients_only``: the input is the
gradient leaf instead, so no ``.grad`` accumulates on the model, and the library's
``model.zero_grad()``, which would wipe a caller's gradients, is left out); gradient-free methods
run their forward without autograd; Score-CAM scores one image at a time (the library loops over
images anyway, but builds all B x C masked inputs at once) with ``cam.batch_size =
rows_per_pass()`` masked inputs per forward pass, and its tqdm progress bars are silenced.

Library behaviour handled here:

* Hooks: the classes are always used through their context manager, which removes the hooks
  (grad-cam issues #132, #195, #483).  ``BaseCAM.__exit__`` swallows an ``IndexError`` (it prints
  it and returns True); one raised inside the block is re-raised as a RuntimeError instead, so a
  failure can never come back as a missing map.  ``BaseCAM`` also calls ``model.eval()``; the
  training flags of all submodules are restored after the call.
* Score-CAM NaN (grad-cam PR #173): channels with max == min gave 0/0 masks; 1.5.7 adds 1e-8 to
  the denominator, but a non-finite score (a model that overflows or divides by zero on a masked
  input) still turns the softmax, hence the whole map, into NaN.  Every method checks that the
  layer's activations, gradients and the raw map are finite and raises a one-line UserError
  naming the model and the image otherwise (the library would zero NaN activations silently in
  EigenCAM's projection).
* Eigen-CAM's sign: the first principal component is defined up to sign, and the library's
  ``get_2d_projection`` (used by ``EigenCAM``) keeps whatever sign LAPACK's SVD returns; after
  its ReLU a flipped projection shows the complement of the salient region.  (Only the library's
  ``SegEigenCAM`` corrects the sign, by |min| > |max|.)  gazebench orients each image's projection
  so that it correlates positively with the channel mean of the activations (the average
  feature map, high where the layer responds) and flips it otherwise (``orient_projection``).
* In-place modification (grad-cam issue #147, torchvision DenseNet's ``F.relu(inplace=True)``
  after ``norm5``): the library's hook keeps ``output.cpu().detach()``, which on CPU shares
  memory with the layer output, so an in-place operation after the layer silently changes the
  stored activations (on GPU it is a copy, so CPU and GPU maps differ).  ``check_model`` runs one
  probe forward and refuses a ``cam_layer`` whose output is modified in place afterwards, is
  used more than once per forward, or is not a 4-D map.  gazebench's ``densenet121`` uses a
  distinct, not in-place ``nn.ReLU`` module as ``cam_layer`` and passes.
* Models with extra inputs are refused: the library calls ``model(x)`` only.

Ablation-CAM (Desai & Ramaswamy 2020) is left out: the library's ``AblationCAM`` swaps the
layer for an ``AblationLayer`` inside the model (restored only when no exception occurs), shares
one ``AblationLayer`` instance across all instances (a mutable default argument), and divides
by the original target score, which inverts the map whenever the logit is negative (common for
sigmoid-output chest X-ray models).
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar

import numpy as np
import pytorch_grad_cam
import pytorch_grad_cam.score_cam as grad_cam_score_cam
import torch
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from gazebench.errors import UserError
from gazebench.methods.base import Method
from gazebench.methods.gradient import gradient_leaf, input_gradients_only
from gazebench.models.base import ModelAdapter
from gazebench.registry import METHODS


def module_label(model: nn.Module, layer: nn.Module) -> str:
    """``dotted.name (Type)`` of ``layer`` inside ``model``."""
    name = next((name for name, module in model.named_modules() if module is layer), None)
    shown = "<not in the model>" if name is None else name or "<the model itself>"
    return f"{shown} ({type(layer).__name__})"


@contextmanager
def training_flags_kept(model: nn.Module) -> Iterator[None]:
    """Restore every submodule's ``training`` flag afterwards (``BaseCAM.__init__`` calls ``model.eval()``)."""
    flags = [(module, module.training) for module in model.modules()]
    try:
        yield
    finally:
        for module, flag in flags:
            module.training = flag


@contextmanager
def quiet_tqdm() -> Iterator[None]:
    """Silence the progress bar Score-CAM draws for every image (``tqdm.tqdm(range(...))`` in score_cam.py)."""
    original = grad_cam_score_cam.tqdm
    grad_cam_score_cam.tqdm = types.SimpleNamespace(tqdm=lambda iterable, *args, **kwargs: iterable)
    try:
        yield
    finally:
        grad_cam_score_cam.tqdm = original


@contextmanager
def library_cam(cam_class: type[BaseCAM], model: nn.Module, layer: nn.Module) -> Iterator[BaseCAM]:
    """``with cam_class(model=..., target_layers=[layer]) as cam``, re-raising the IndexError that ``BaseCAM.__exit__`` swallows."""
    with training_flags_kept(model), cam_class(model=model, target_layers=[layer]) as cam:
        try:
            yield cam
        except IndexError as error:  # BaseCAM.__exit__ prints an IndexError and returns True
            raise RuntimeError(f"{cam_class.__name__}: {error}") from error


def orient_projection(projection: np.ndarray, activations: np.ndarray) -> np.ndarray:
    """Eigen-CAM projections [B, h, w], each flipped where it correlates negatively with its activations' channel mean [B, C, h, w] -> [B, h, w]."""
    oriented = projection.copy()
    for index, (image_projection, image_activations) in enumerate(zip(projection, activations)):
        mean_map = image_activations.mean(axis=0).astype(np.float64)
        centred = image_projection.astype(np.float64) - image_projection.mean()
        if float((centred * (mean_map - mean_map.mean())).sum()) < 0:
            oriented[index] = -image_projection
    return oriented


def layer_problem(adapter: ModelAdapter) -> str | None:
    """Why the library cannot read ``adapter.cam_layer`` correctly (one probe forward), or None."""
    model, layer = adapter.module, adapter.cam_layer
    if not any(module is layer for module in model.modules()):
        return "is not a submodule of the model, so its hooks never run"
    parameter = next(model.parameters(), None)
    if parameter is None:
        return "belongs to a model without parameters (grad-cam takes its device from the first parameter)"
    outputs: list[tuple[torch.Tensor, int]] = []
    handle = layer.register_forward_hook(lambda module, inputs, output: outputs.append((output, getattr(output, "_version", 0))))
    probe = torch.zeros(1, len(adapter.mean), adapter.input_size, adapter.input_size, device=parameter.device, dtype=parameter.dtype)
    try:
        with torch.no_grad(), training_flags_kept(model):
            model.eval()(probe)
    finally:
        handle.remove()
    if len(outputs) != 1:
        return f"runs {len(outputs)} times per forward pass (grad-cam pairs the first activation with the first gradient); use a module called once"
    output, version = outputs[0]
    if not isinstance(output, torch.Tensor) or output.dim() != 4:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        return f"outputs {shape}, not a [B, C, h, w] map"
    if output._version != version:
        return "has its output modified in place later in the forward pass (e.g. an inplace ReLU after it, grad-cam issue #147), which corrupts the stored activations"
    return None


class GradCamLibraryMethod(Method):
    """A CAM method of the grad-cam package on ``adapter.cam_layer``; subclasses set ``cam_class``."""

    cam_class: ClassVar[type[BaseCAM]]
    postprocess = "relu"
    default_params: ClassVar[dict] = {}
    family = "cam"
    library = "grad-cam"

    def check_model(self, adapter: ModelAdapter) -> None:
        if adapter.extra_inputs is not None:
            raise UserError(f"method {self.name} cannot explain model {adapter.name}: it takes extra inputs, and grad-cam calls model(x) with the image only")
        problem = layer_problem(adapter)
        if problem:
            raise UserError(f"method {self.name} cannot explain model {adapter.name}: its cam_layer {module_label(adapter.module, adapter.cam_layer)} {problem}")

    def attribute(self, adapter, inputs, targets, seeds, extra=()):
        if extra:
            raise UserError(f"method {self.name} cannot explain model {adapter.name}: it takes extra inputs, and grad-cam calls model(x) with the image only")
        target_list = [ClassifierOutputTarget(int(target)) for target in targets]
        with library_cam(self.cam_class, adapter.module, adapter.cam_layer) as cam, input_gradients_only(adapter.module):
            x = gradient_leaf(inputs)
            with torch.set_grad_enabled(cam.uses_gradients):
                outputs = cam.activations_and_grads(x)
            if cam.uses_gradients:
                loss = sum(target(output) for target, output in zip(target_list, outputs))
                loss.backward()
            activations, gradients = self.layer_arrays(adapter, cam)
            cam.activations_and_grads.release()  # hooks off before Score-CAM's masked passes (__exit__ releases again: a no-op)
            raw = self.raw_maps(cam, adapter, x.detach(), target_list, activations, gradients)
        self.check_finite(adapter, raw, "map")
        return torch.from_numpy(np.ascontiguousarray(raw, dtype=np.float32)).to(inputs.device)

    def layer_arrays(self, adapter: ModelAdapter, cam: BaseCAM) -> tuple[np.ndarray, np.ndarray | None]:
        """The layer's activations and gradients as the library reads them (``compute_cam_per_layer``), checked."""
        store = cam.activations_and_grads
        label = module_label(adapter.module, adapter.cam_layer)
        if len(store.activations) != 1:
            raise UserError(f"method {self.name} cannot explain model {adapter.name}: its cam_layer {label} ran {len(store.activations)} times in one forward pass")
        activations = store.activations[0].cpu().data.numpy()
        if activations.ndim != 4:
            raise UserError(f"method {self.name} cannot explain model {adapter.name}: its cam_layer {label} outputs {activations.shape}, not a [B, C, h, w] map")
        self.check_finite(adapter, activations, "cam_layer activation")
        if not cam.uses_gradients:
            return activations, None
        if len(store.gradients) != 1:
            raise UserError(f"method {self.name} cannot explain model {adapter.name}: no gradient reached its cam_layer {label} (is the target logit computed from it?)")
        gradients = store.gradients[0].cpu().data.numpy()
        self.check_finite(adapter, gradients, "cam_layer gradient")
        return activations, gradients

    def raw_maps(self, cam: BaseCAM, adapter: ModelAdapter, x: torch.Tensor, targets: list, activations: np.ndarray, gradients: np.ndarray | None) -> np.ndarray:
        """The layer-resolution maps [B, h, w] before ReLU and scaling: the library's ``get_cam_image``."""
        return cam.get_cam_image(x, adapter.cam_layer, targets, activations, gradients, False)

    def check_finite(self, adapter: ModelAdapter, values: np.ndarray, what: str) -> None:
        bad = [index for index, image in enumerate(values) if not np.isfinite(image).all()]
        if bad:
            raise UserError(f"method {self.name} on model {adapter.name}: non-finite {what} (NaN or inf) for batch image(s) {bad}; the model's outputs overflow or divide by zero")


@METHODS.register("gradcam_plus_plus")
class GradCamPlusPlusMethod(GradCamLibraryMethod):
    """Grad-CAM++ (Chattopadhay et al. 2018), grad-cam ``GradCAMPlusPlus``.

    Weights w_k = sum_ij relu(G_kij) * alpha_kij with alpha = G^2 / (2 G^2 + sum_ij(A_k) G^3 + 1e-6)
    (the paper's eq. 19, higher derivatives of exp(y) written with powers of the first one; alpha
    is 0 where G = 0); map sum_k w_k A_k.  One forward and one backward pass per image.
    """

    name = "gradcam_plus_plus"
    cam_class = pytorch_grad_cam.GradCAMPlusPlus


@METHODS.register("scorecam")
class ScoreCamMethod(GradCamLibraryMethod):
    """Score-CAM (Wang et al. 2020), grad-cam ``ScoreCAM``: gradient-free.

    Each channel A_k is upsampled bilinearly to the input size, min-max normalised (+1e-8) and
    multiplies the input; the weights are the softmax over channels of the target logits of these
    C masked inputs; map sum_k w_k A_k.  Cost: 1 + C forward passes per image (C = the
    ``cam_layer``'s channels, 1024 for DenseNet-121), ``rows_per_pass()`` masked inputs per pass
    (the library's ``batch_size``; its default is 16).  One image's C masked inputs are built at
    once (C x 3 x S x S floats: 0.8 GB for DenseNet-121 at 256 px).

    ``channels``: the default 16 keeps, per image, the 16 channels with the highest mean activation
    (the softmax and the sum run over them only): 17 forward passes per image instead of 1 + C
    (321 on unet_gaze, 1025 on DenseNet-121), a CPU-sized default for the embedded data;
    ``scorecam:channels=0`` uses every channel, as the paper does.
    """

    name = "scorecam"
    cam_class = pytorch_grad_cam.ScoreCAM
    default_params: ClassVar[dict] = {"channels": 16}
    param_checks: ClassVar[dict] = {"channels": (lambda n: n >= 0, ">= 0 (0: every channel)")}

    def passes(self):
        return ("1 + C" if self.params["channels"] == 0 else f"1 + min(C, {self.params['channels']})"), 0

    def raw_maps(self, cam, adapter, x, targets, activations, gradients):
        cam.batch_size = self.rows_per_pass()
        maps = []
        with quiet_tqdm(), torch.no_grad():
            for index in range(len(x)):
                image_activations = activations[index : index + 1]
                keep = self.params["channels"]
                if 0 < keep < image_activations.shape[1]:
                    strongest = np.sort(np.argsort(-image_activations[0].mean(axis=(1, 2)), kind="stable")[:keep])
                    image_activations = image_activations[:, strongest]
                maps.append(cam.get_cam_image(x[index : index + 1], adapter.cam_layer, targets[index : index + 1], image_activations, None, False))
        return np.concatenate(maps)


@METHODS.register("xgradcam")
class XGradCamMethod(GradCamLibraryMethod):
    """XGrad-CAM (Fu et al. 2020), grad-cam ``XGradCAM``.

    Weights w_k = sum_ij G_kij * A_kij / (sum_ij A_kij + 1e-7) (activation-weighted gradients, from
    the sensitivity and conservation axioms); map sum_k w_k A_k.  One forward and one backward pass.
    """

    name = "xgradcam"
    cam_class = pytorch_grad_cam.XGradCAM


@METHODS.register("hirescam")
class HiResCamMethod(GradCamLibraryMethod):
    """HiResCAM (Draelos & Carin 2020), grad-cam ``HiResCAM``.

    Map sum_k G_k * A_k, elementwise: no spatial averaging of the gradients, so for a model whose
    logit is a linear function of the layer's pooled output the map is exactly each location's
    contribution to the logit (the paper's faithfulness guarantee).  One forward, one backward.
    """

    name = "hirescam"
    cam_class = pytorch_grad_cam.HiResCAM


@METHODS.register("layercam")
class LayerCamMethod(GradCamLibraryMethod):
    """LayerCAM (Jiang et al. 2021), grad-cam ``LayerCAM``.

    Map sum_k relu(G_k) * A_k: location-wise weights, positive gradients only.  The paper fuses
    several layers; here it is the one ``cam_layer``.  One forward and one backward pass.
    """

    name = "layercam"
    cam_class = pytorch_grad_cam.LayerCAM


@METHODS.register("eigencam")
class EigenCamMethod(GradCamLibraryMethod):
    """Eigen-CAM (Muhammad & Yeasin 2020), grad-cam ``EigenCAM``: class-agnostic and gradient-free.

    The activations as a (h*w) x C matrix, centred per channel, projected on their first right
    singular vector: the map along the layer's main direction of variation, the same for every
    target.  The library keeps SVD's arbitrary sign; gazebench orients each projection to
    correlate positively with the activations' channel mean (``orient_projection``, see the module
    docstring).  One forward pass, no backward.
    """

    name = "eigencam"
    cam_class = pytorch_grad_cam.EigenCAM

    def passes(self):
        return 1, 0

    def raw_maps(self, cam, adapter, x, targets, activations, gradients):
        return orient_projection(super().raw_maps(cam, adapter, x, targets, activations, gradients), activations)
