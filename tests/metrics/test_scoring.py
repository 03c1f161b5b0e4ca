"""score_maps: chunked scoring with shared work equals each metric called on its own."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gazebench.metrics import map_metrics
from gazebench.metrics.base import NEEDS, GazeTargets
from gazebench.metrics.scoring import CPU_CHUNK, ChunkTargets, score_maps
from gazebench.registry import METRICS
from tests.metrics.reference import REFERENCES, random_arrays

pytestmark = pytest.mark.usefixtures("scoring_path")  # each test on the CPU kernels and on the torch code


def inputs(shape=(7, 12, 12), seed=0, levels=None):
    arrays = random_arrays(shape, seed=seed, levels=levels)
    arrays["maps"][3] = 0.5  # one constant map: NaN for most metrics
    arrays["fixations"][5] = 0.0  # one map without fixations
    maps = torch.as_tensor(arrays["maps"], dtype=torch.float32)
    targets = GazeTargets(**{need: torch.as_tensor(arrays[need], dtype=torch.bool if need == "mask" else torch.float32) for need in NEEDS})
    return maps, targets


@pytest.mark.parametrize("chunk", [1, 3, 7, 100])
def test_scores_equal_each_metric_on_the_whole_batch(chunk):
    maps, targets = inputs()
    metrics = {name: METRICS.get(name)() for name in METRICS.names()}
    scores = score_maps(maps, targets, metrics, chunk=chunk)
    assert set(scores) == set(metrics)
    for name, metric in metrics.items():
        assert scores[name].dtype == torch.float64 and scores[name].device.type == "cpu" and scores[name].shape == (7,)
        expected = metric.compute(maps.double(), GazeTargets(**{need: getattr(targets, need) for need in NEEDS}))
        torch.testing.assert_close(scores[name], expected.double(), rtol=1e-6, atol=1e-7, equal_nan=True, msg=name)


def test_scores_match_the_numpy_references_with_ties():
    maps, targets = inputs(levels=4, seed=1)
    scores = score_maps(maps, targets, {name: METRICS.get(name)() for name in REFERENCES}, chunk=4)
    arrays = {need: getattr(targets, need).double().numpy() for need in ("density", "fixations", "negatives", "centre_bias")}
    for name in REFERENCES:
        arrays["maps"] = maps.double().numpy()
        defined = [i for i in range(7) if i not in (3, 5)]
        expected = [REFERENCES[name](arrays, i) for i in defined]
        np.testing.assert_allclose(scores[name][defined].numpy(), expected, rtol=1e-5, atol=1e-5, err_msg=name)


def test_metrics_see_chunks_of_at_most_chunk_maps_with_a_memo():
    seen = []

    class Spy(map_metrics.CC):
        def compute(self, maps, targets):
            seen.append((len(maps), isinstance(targets, ChunkTargets), targets.fixations is None))
            return super().compute(maps, targets)

    maps, targets = inputs()
    score_maps(maps, targets, {"spy": Spy()}, chunk=3)
    assert seen == [(3, True, True), (3, True, True), (1, True, True)]  # fixations: not needed, not sliced


def test_corrected_metric_reuses_its_base_metric_values(monkeypatch):
    calls = []
    compute = map_metrics.CC.compute

    def counting(self, maps, targets):
        calls.append(maps.stride(0) == 0)  # True for the centre-bias map broadcast to the chunk
        return compute(self, maps, targets)

    monkeypatch.setattr(map_metrics.CC, "compute", counting)
    maps, targets = inputs()
    scores = score_maps(maps, targets, {"cc": METRICS.get("cc")(), "cc_cb": METRICS.get("cc_cb")()}, chunk=7)
    assert calls == [False, True]  # cc once on the maps, once on the centre bias
    assert torch.isfinite(scores["cc_cb"][[0, 1, 2]]).all()


def test_shared_work_does_not_leak_between_metrics_in_any_order():
    maps, targets = inputs()
    targets.negatives[1] = 0.0  # undefined for the shuffled AUC only
    names = ["auc_shuffled", "auc_judd", "kl_cb", "kl", "sim_cb", "sim", "nss_cb", "info_gain", "nss", "cc_cb", "cc"]
    for order in (names, names[::-1]):
        scores = score_maps(maps, targets, {name: METRICS.get(name)() for name in order}, chunk=7)
        for name in order:
            alone = score_maps(maps, targets, {name: METRICS.get(name)()}, chunk=7)[name]
            torch.testing.assert_close(scores[name], alone, rtol=0, atol=0, equal_nan=True, msg=name)
    assert torch.isnan(scores["auc_shuffled"][1]) and torch.isfinite(scores["auc_judd"][1])


def test_default_chunk_and_bad_arguments():
    maps, targets = inputs(shape=(2 * CPU_CHUNK + 1, 12, 12))
    scores = score_maps(maps, targets, {"nss": METRICS.get("nss")()})
    torch.testing.assert_close(scores["nss"], METRICS.get("nss")().compute(maps.double(), targets).double(), equal_nan=True)
    with pytest.raises(ValueError, match="chunk must be at least 1"):
        score_maps(maps, targets, {"nss": METRICS.get("nss")()}, chunk=0)
    with pytest.raises(ValueError, match="metric auc_shuffled needs negatives"):
        score_maps(maps, GazeTargets(density=targets.density, fixations=targets.fixations), {"auc_shuffled": METRICS.get("auc_shuffled")()})


def test_inputs_are_not_modified():
    maps, targets = inputs()
    before = [maps.clone(), *(getattr(targets, need).clone() for need in NEEDS)]
    score_maps(maps, targets, {name: METRICS.get(name)() for name in METRICS.names()}, chunk=4)
    for tensor, copy in zip([maps, *(getattr(targets, need) for need in NEEDS)], before):
        assert torch.equal(tensor, copy)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_scores_equal_cpu_scores():
    maps, targets = inputs()
    metrics = {name: METRICS.get(name)() for name in METRICS.names()}
    on_gpu = GazeTargets(**{need: getattr(targets, need).cuda() for need in NEEDS})
    gpu_scores, cpu_scores = score_maps(maps.cuda(), on_gpu, metrics), score_maps(maps, targets, metrics)
    for name in metrics:
        assert gpu_scores[name].device.type == "cpu"
        torch.testing.assert_close(gpu_scores[name], cpu_scores[name], rtol=1e-5, atol=1e-6, equal_nan=True, msg=name)
