"""Each method's stage against the bare library call that computes the same raw map (pytest-benchmark; not run by the test suite).

    python -m pytest benchmark/test_methods_vs_library.py --benchmark-only --benchmark-columns=mean,stddev,rounds \\
        --benchmark-json=methods_vs_library.json
    python benchmark/ratios.py methods_vs_library.json

Environment: ``GAZEBENCH_BENCH_BATCH`` (images per call, default 4), ``GAZEBENCH_BENCH_ROUNDS``
(the least number of timed rounds after one warm-up round, default 3; a case whose warm-up took
less than a second gets more, up to 50, so that it is timed for about 10 s: calls of tens of
milliseconds vary by 10-20% from round to round on a busy 2-core CPU), ``GAZEBENCH_BENCH_DEVICE`` (default ``cuda``
when available, else ``cpu``), ``GAZEBENCH_BENCH_SMOKE=1`` (a quick check that the file works:
both models at input 64, batch 2, one round, a few samples/steps per method; its times mean nothing).
``-k "unet_gaze and lime"`` selects pairs.  The whole file took 12 min 51 s on the project's 2-core CPU
(2026-12-04), most of it in the sampling and perturbation methods on DenseNet-121 (LIME: 4 x 64
forward rows at 224 per call, 4 calls per side).

What is compared.  Two models with random weights and batch-norm statistics (seeded), in eval mode: gazebench's
``densenet121`` at input 224 and the embedded ``unet_gaze`` (its recipe's input, 128), a batch of
B smooth random grey images on the 224 scoring grid.  For every registered method that the model
passes (``check_model``; otherwise the pair is skipped with the refusal line) one test times two calls
in alternation (bare, gazebench, bare, gazebench, ...: a busy machine slows both alike):

* ``gazebench``: the method stage as the engine runs it, ``method(adapter, images, targets, seeds,
  224)`` with the method's default parameters: preprocessing, the raw map, the protocol's
  post-processing (channel sum, abs or ReLU, bilinear resize to the grid), per-image seeds, with the
  model's parameters frozen as the engine holds them for a run; pytest-benchmark's own timing;
* ``bare``: the library call a user would write for the same raw map with the same settings on the
  same preprocessed batch (``BARE`` below), nothing around it: no pre-flight, no checks, no
  post-processing, the parameters as a user's model has them; timed in pytest-benchmark's untimed
  ``setup`` before each gazebench round, its times in ``extra_info["bare_seconds"]``.

Same settings means the same samples, steps, windows, baselines (the black image) and the same
model rows per forward pass (``rows_per_pass()``, 16).  Where Captum counts its batch parameter in
copies of the whole batch (``NoiseTunnel``'s ``nt_samples_batch_size``, ``Occlusion``'s
``perturbations_per_eval`` on a batch), it is ``16 // B`` so that a pass still holds 16 rows;
Captum's ``GradientShap`` has no such parameter and runs all B x n_samples rows in one pass.
Captum's noise ``stdevs`` is absolute: the bare calls use gazebench's fraction times the batch's
input range (gazebench: each image's own range; the cost is the same).  LIME and Kernel SHAP: one
call per image (Captum's advice), the global RNG seeded with the image's seed before it (gazebench
draws each image's samples from its seed; other samples change how long the Lasso takes), SLIC
timed with it, on the grid image as gazebench does (the same superpixels, hence the same map; SLIC on the 224-px grid costs about 21 ms per image here, 6.5 ms
on unet_gaze's 128-px input).  Grad-cam classes are called as a user would (``with GradCAMPlusPlus(model,
[layer]) as cam: cam(input_tensor=x, targets=[ClassifierOutputTarget(t), ...])``), which also
scales and resizes the maps with cv2.  LRP: zennit's ``Gradient`` attributor with the composite and
canonizers of gazebench's ``lrp`` (built from gazebench/methods/lrp.py), relevance of the target
logit.  ``model_heatmap``: ``adapter.gaze_head(x).sigmoid()`` under ``torch.no_grad()``.

Where the two sides differ:

* ``scorecam``: the library's ``ScoreCAM`` scores every channel of the layer and cannot keep the
  16 strongest (gazebench's default), so both sides run every channel (``scorecam:channels=0``,
  1 + C forward rows per image, C = 320 on unet_gaze); on DenseNet-121 (C = 1024, 1025 rows per
  image at 224) the pair runs only on a GPU and is skipped on a CPU;
* ``deeplift`` on DenseNet-121: the bare ``DeepLift`` keeps Captum's max-pool rule (captum issue
  #1276) and hooks, where gazebench's map uses its corrected rule; same passes, slightly different map;
* every method has a bare call; ``deeplift`` and ``guided_backprop``/``guided_gradcam`` refuse
  unet_gaze (SiLU and squeeze-excitation), ``model_heatmap`` refuses densenet121 (no gaze head).

Reading the ratio: ``benchmark/ratios.py`` divides each case's time by the images per call
(``extra_info["images"]``) and prints gazebench ms/image over bare ms/image per (model, method).
The goal is gazebench's method stage at least 0.95 times the speed of the bare call, i.e. a ratio
of at most 1 / 0.95 = 1.053; below 1 gazebench is faster (it freezes parameter gradients, chunks,
and skips what the user's call does on top, e.g. grad-cam's weight gradients and cv2 resizing).
"""

from __future__ import annotations

import functools
import math
import os
import time
import warnings
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import (
    DeepLift,
    GradientShap,
    GuidedBackprop,
    GuidedGradCam,
    InputXGradient,
    IntegratedGradients,
    KernelShap,
    LayerConductance,
    LayerGradCam,
    Lime,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from pytorch_grad_cam import EigenCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, ScoreCAM, XGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from skimage.segmentation import slic
from zennit.attribution import Gradient

from gazebench.errors import UserError
from gazebench.methods.base import DEFAULT_ROWS_PER_PASS, image_seed
from gazebench.methods.gradient import make_baseline
from gazebench.methods.lrp import box_bounds, make_composite, one_hot_logits, plan_for
from gazebench.models import unet_gaze
from gazebench.registry import METHODS, MODELS
from tests.fixtures.tiny_models import random_batch_norms

GRID = 224
CLASSES = ["Normal", "CHF", "pneumonia"]
SMOKE = os.environ.get("GAZEBENCH_BENCH_SMOKE", "") not in ("", "0")
BATCH = 2 if SMOKE else int(os.environ.get("GAZEBENCH_BENCH_BATCH", "4"))
ROUNDS = 1 if SMOKE else int(os.environ.get("GAZEBENCH_BENCH_ROUNDS", "3"))  # the least number of timed rounds
MIN_SECONDS, MAX_ROUNDS = 10.0, 50  # short calls get more rounds (rounds_for)
GRID_SUPERPIXELS = ("lime", "kernelshap")  # bare calls that also take the grid images (SLIC runs on them) and the image seeds
DEVICE = torch.device(os.environ.get("GAZEBENCH_BENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu"))
ROWS = DEFAULT_ROWS_PER_PASS  # model rows per forward/backward pass, both sides
MODEL_NAMES = ("densenet121", "unet_gaze")

# parameters that differ from the defaults: scorecam scores every channel (the library cannot keep a subset)
PARAMS: dict[str, dict] = {"scorecam": {"channels": 0}}
if SMOKE:
    PARAMS.update(
        smoothgrad={"n_samples": 2},
        gradshap={"n_samples": 2},
        conductance={"n_steps": 2},
        integrated_gradients={"n_steps": 2},
        lime={"n_samples": 8, "n_segments": 8},
        kernelshap={"n_samples": 8, "n_segments": 8},
        occlusion={"window": 0.5, "stride": 0.5},
    )


@functools.cache
def params(name: str) -> dict:
    """The method's parameters in this benchmark (defaults plus ``PARAMS``), shared by both sides."""
    return METHODS.get(name)(**PARAMS.get(name, {})).params


# ----------------------------------------------------------------------------- the bare library calls


def leaf(x: torch.Tensor) -> torch.Tensor:
    return x.detach().requires_grad_(True)


def black(adapter, x: torch.Tensor, name: str) -> torch.Tensor:
    """The method's baseline [1, C, S, S] (the preprocessed black image by default)."""
    return make_baseline(adapter, x, params(name)["baseline"])


def batch_copies(x: torch.Tensor) -> int:
    """Captum parameters counted in copies of the whole batch, so that one pass holds ``ROWS`` rows."""
    return max(1, ROWS // len(x))


def batch_stdev(x: torch.Tensor, fraction: float) -> float:
    return fraction * float(x.max() - x.min())


def smoothgrad(adapter, x, targets):
    p = params("smoothgrad")
    tunnel = NoiseTunnel(Saliency(adapter.module))
    return tunnel.attribute(leaf(x), nt_type="smoothgrad", nt_samples=p["n_samples"], nt_samples_batch_size=batch_copies(x), stdevs=batch_stdev(x, p["stdev"]), target=targets, abs=False)


def gradshap(adapter, x, targets):
    p = params("gradshap")
    return GradientShap(adapter.module).attribute(leaf(x), baselines=black(adapter, x, "gradshap"), n_samples=p["n_samples"], stdevs=batch_stdev(x, p["stdev"]), target=targets)


def conductance(adapter, x, targets):
    p = params("conductance")
    return LayerConductance(adapter.module, adapter.cam_layer).attribute(
        leaf(x), baselines=black(adapter, x, "conductance").expand_as(x), target=targets, n_steps=p["n_steps"], internal_batch_size=max(ROWS, 2 * len(x))
    )


def integrated_gradients(adapter, x, targets):
    p = params("integrated_gradients")
    return IntegratedGradients(adapter.module).attribute(
        leaf(x), baselines=black(adapter, x, "integrated_gradients").expand_as(x), target=targets, n_steps=p["n_steps"], method=p["method"], internal_batch_size=ROWS
    )


def occlusion(adapter, x, targets):
    p, side, channels = params("occlusion"), x.shape[-1], x.shape[1]
    window = max(1, round(p["window"] * side))
    stride = min(window, max(1, round(p["stride"] * side)))
    return Occlusion(adapter.module).attribute(
        x,
        sliding_window_shapes=(channels, window, window),
        strides=(channels, stride, stride),
        baselines=black(adapter, x, "occlusion"),
        target=targets,
        perturbations_per_eval=batch_copies(x),
    )


def superpixel_explainer(explainer: type, name: str):
    """LIME / Kernel SHAP: per image, SLIC on the grid image (as gazebench, so that the superpixels and the map are the same),
    the labels resized to the model input (nearest) and numbered 0..K-1, then Captum's explainer on them."""

    def call(adapter, x, targets, grid_images, seeds):
        p = params(name)
        baseline = black(adapter, x, name)
        maps = []
        for image, grid_image, target, seed in zip(x, grid_images, targets, seeds):
            torch.manual_seed(seed)  # the image's samples, as gazebench draws them (a different draw changes the Lasso's work)
            labels = slic(grid_image[0].cpu().double().numpy(), n_segments=p["n_segments"], compactness=p["compactness"], channel_axis=None, start_label=0)
            resized = F.interpolate(torch.from_numpy(labels.astype(np.float32))[None, None], size=x.shape[-2:], mode="nearest-exact")
            mask = torch.unique(resized.long(), return_inverse=True)[1].to(x.device)
            maps.append(explainer(adapter.module).attribute(image[None], baselines=baseline, target=int(target), feature_mask=mask, n_samples=p["n_samples"], perturbations_per_eval=ROWS))
        return torch.cat(maps)

    return call


def grad_cam_call(cam_class: type, batch_size: int | None = None):
    """A grad-cam class as its README shows: ``with CAM(model, [layer]) as cam: cam(input_tensor=x, targets=[...])``."""

    def call(adapter, x, targets):
        with cam_class(model=adapter.module, target_layers=[adapter.cam_layer]) as cam:
            if batch_size is not None:
                cam.batch_size = batch_size
            return cam(input_tensor=x, targets=[ClassifierOutputTarget(int(target)) for target in targets])

    return call


def guided_backprop(adapter, x, targets):
    return GuidedBackprop(adapter.module).attribute(leaf(x), target=targets)


def guided_gradcam(adapter, x, targets):
    return GuidedGradCam(adapter.module, adapter.cam_layer).attribute(leaf(x), target=targets, interpolate_mode="bilinear")


def deeplift(adapter, x, targets):
    return DeepLift(adapter.module).attribute(leaf(x), baselines=black(adapter, x, "deeplift").expand_as(x), target=targets)


def lrp(adapter, x, targets):
    """zennit's ``Gradient`` with gazebench's composite and canonizers (the traced plan is cached after the first call, as in gazebench)."""
    p, model = params("lrp"), adapter.module
    plan = plan_for(model, x)
    low, high = box_bounds(adapter, x)
    composite = make_composite(model, p["composite"], p["epsilon"], p["gamma"], plan.first_layer, plan.merge_pairs, low, high)
    with Gradient(model, composite) as attributor:
        _, relevance = attributor(leaf(x), one_hot_logits(targets))
    return relevance


def model_heatmap(adapter, x, targets):
    with torch.no_grad():
        return adapter.gaze_head(x).sigmoid()


BARE = {
    "saliency": lambda adapter, x, targets: Saliency(adapter.module).attribute(leaf(x), target=targets, abs=False),
    "smoothgrad": smoothgrad,
    "gradshap": gradshap,
    "gradcam": lambda adapter, x, targets: LayerGradCam(adapter.module, adapter.cam_layer).attribute(leaf(x), target=targets, relu_attributions=True),
    "conductance": conductance,
    "deeplift": deeplift,
    "integrated_gradients": integrated_gradients,
    "input_x_gradient": lambda adapter, x, targets: InputXGradient(adapter.module).attribute(leaf(x), target=targets),
    "guided_backprop": guided_backprop,
    "guided_gradcam": guided_gradcam,
    "gradcam_plus_plus": grad_cam_call(GradCAMPlusPlus),
    "scorecam": grad_cam_call(ScoreCAM, batch_size=ROWS),
    "xgradcam": grad_cam_call(XGradCAM),
    "hirescam": grad_cam_call(HiResCAM),
    "layercam": grad_cam_call(LayerCAM),
    "eigencam": grad_cam_call(EigenCAM),
    "occlusion": occlusion,
    "lime": superpixel_explainer(Lime, "lime"),
    "kernelshap": superpixel_explainer(KernelShap, "kernelshap"),
    "lrp": lrp,
    "model_heatmap": model_heatmap,
}

# pairs not run, with the reason
SKIPPED = {
    ("densenet121", "scorecam"): "scorecam on densenet121 scores all 1024 channels (1025 forward rows per image at 224): run only on a GPU",
}


# ----------------------------------------------------------------------------- models and batch


@dataclass
class Setup:
    adapter: object
    images: torch.Tensor  # grid images [B, 1, GRID, GRID] in [0, 1]
    inputs: torch.Tensor  # the preprocessed batch the bare calls get
    targets: torch.Tensor
    seeds: list[int]


def build(model: str):
    """The model with seeded random weights and batch-norm statistics, in eval mode, on ``DEVICE``."""
    torch.manual_seed(0)
    if model == "densenet121":
        adapter = MODELS.get("densenet121").build_adapter(class_names=CLASSES, input_size=64 if SMOKE else 224)
    else:
        recipe = unet_gaze.load_recipe("embedded")["model"]
        adapter = unet_gaze.build_adapter(tuple(CLASSES), **{**recipe, **({"input_size": 64} if SMOKE else {})})
    random_batch_norms(adapter.module)
    return adapter.eval().to(DEVICE)


@functools.cache
def prepared(model: str) -> Setup:
    adapter = build(model)
    generator = torch.Generator().manual_seed(1)
    coarse = torch.rand(BATCH, 1, 6, 6, generator=generator)  # smooth structure, so that SLIC finds its superpixels
    images = (F.interpolate(coarse, size=(GRID, GRID), mode="bicubic", align_corners=False) + 0.02 * torch.randn(BATCH, 1, GRID, GRID, generator=generator)).clamp(0, 1)
    images = images.to(DEVICE)
    with torch.no_grad():
        inputs = adapter.preprocess(images).detach()
    targets = (torch.arange(BATCH) % len(CLASSES)).to(DEVICE)
    return Setup(adapter, images, inputs, targets, [image_seed(0, str(i)) for i in range(BATCH)])


@functools.cache
def refusal(model: str, name: str) -> str | None:
    """Why the pair is not run (the method's pre-flight refusal line, or ``SKIPPED``), or None."""
    if (model, name) in SKIPPED and DEVICE.type != "cuda":
        return SKIPPED[(model, name)]
    try:
        METHODS.get(name)(**PARAMS.get(name, {})).check_model(prepared(model).adapter)
    except UserError as error:
        return str(error)
    return None


def rounds_for(seconds: float) -> int:
    """Timed rounds for a pair whose two calls took ``seconds``: at least ``ROUNDS``, more for short calls, so that
    each pair is timed for about ``MIN_SECONDS`` (a call of tens of milliseconds varies by 10-20% from round to round here)."""
    if SMOKE:
        return 1
    return max(ROUNDS, min(MAX_ROUNDS, math.ceil(MIN_SECONDS / max(seconds, 1e-6))))


def synchronised(function):
    """``function`` followed by a device synchronisation, so that GPU work is inside the timing."""

    def run():
        result = function()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize(DEVICE)
        return result

    return run


CASES = [pytest.param(model, name, id=f"{model}-{name}") for model in MODEL_NAMES for name in METHODS.fixed_names()]


def test_bare_covers_every_method():
    assert set(BARE) == set(METHODS.fixed_names())


@pytest.mark.parametrize(("model", "name"), CASES)
def test_method_vs_library(benchmark, model, name):
    """One pair, interleaved: before each timed gazebench call, the bare call is timed (pytest-benchmark's untimed
    ``setup``), so that both sides see the same machine; the bare times go to ``extra_info["bare_seconds"]``.

    The gazebench call runs with the model's parameters frozen, as the engine holds the model for a whole run
    (``input_gradients_only`` around the batch loop); the bare call with the parameters as a user's model has
    them (requiring grad).  Freezing and unfreezing happen outside both timings.
    """
    reason = refusal(model, name)
    if reason:
        pytest.skip(reason)
    bench = prepared(model)
    method = METHODS.get(name)(**PARAMS.get(name, {}))
    ours = synchronised(lambda: method(bench.adapter, bench.images, bench.targets, bench.seeds, GRID))
    bare_call = BARE[name]
    grid = {"grid_images": bench.images, "seeds": bench.seeds} if name in GRID_SUPERPIXELS else {}
    bare = synchronised(lambda: bare_call(bench.adapter, bench.inputs, bench.targets, **grid))
    parameters = [parameter for parameter in bench.adapter.module.parameters() if parameter.requires_grad]
    bare_seconds: list[float] = []

    def time_bare_then_freeze():
        for parameter in parameters:
            parameter.requires_grad_(True)
        start = time.perf_counter()
        result = bare()
        bare_seconds.append(time.perf_counter() - start)
        assert len(result) == BATCH
        for parameter in parameters:
            parameter.requires_grad_(False)

    benchmark.group = f"{model}/{name}"
    benchmark.extra_info.update(images=BATCH, model=model, method=name, input_size=bench.adapter.input_size, device=str(DEVICE), rows_per_pass=ROWS, params=params(name), smoke=SMOKE)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Captum's hook and batch warnings, repeated every round
            time_bare_then_freeze()  # the warm-up round of both sides, timed to choose the number of rounds
            start = time.perf_counter()
            ours()
            rounds = rounds_for(time.perf_counter() - start + bare_seconds.pop())
            result = benchmark.pedantic(ours, setup=time_bare_then_freeze, rounds=rounds, iterations=1, warmup_rounds=0)
    finally:
        for parameter in parameters:
            parameter.requires_grad_(True)
    benchmark.extra_info.update(rounds=rounds, bare_seconds=bare_seconds)
    assert tuple(result.shape) == (BATCH, GRID, GRID)
