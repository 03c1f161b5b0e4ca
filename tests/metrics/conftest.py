"""Run the metric tests on both CPU implementations: the fused numba kernels and plain torch."""

import pytest

from gazebench.metrics import cpu_kernels


@pytest.fixture(scope="module", params=["cpu kernels", "torch"])
def scoring_path(request):
    """Score CPU tensors with the kernels (the default) or, inside ``cpu_kernels.disabled()``, with
    the torch code that runs on every other device.  Module-scoped: each module runs once per path."""
    if request.param == "torch":
        with cpu_kernels.disabled():
            yield request.param
    else:
        assert cpu_kernels.enabled(), "GAZEBENCH_CPU_KERNELS=0 is set: the kernels would not be tested"
        yield request.param
