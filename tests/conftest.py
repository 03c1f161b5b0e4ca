"""Shared fixtures: an isolated $GAZEBENCH_HOME, a tiny synthetic dataset, a random checkpoint."""

from pathlib import Path

import pytest
import torch

from gazebench.models.checkpoint import save_checkpoint
from gazebench.models.unet_gaze import build_adapter

CLASSES = ["Normal", "CHF", "pneumonia"]


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch):
    """Never read or write the user's cache from a test."""
    monkeypatch.setenv("GAZEBENCH_HOME", str(tmp_path_factory.mktemp("gazebench_home")))


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory) -> Path:
    """A 12-image synthetic dataset in the EGD layout (generated once per test session)."""
    from gazebench.data import synth

    return synth.generate(tmp_path_factory.mktemp("synth") / "data", n=12, seed=3, progress=False)


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory) -> Path:
    """A unet_gaze checkpoint with random weights at input 64 (fast to run)."""
    torch.manual_seed(0)
    adapter = build_adapter(CLASSES, input_size=64)
    path = tmp_path_factory.mktemp("checkpoints") / "unet_gaze_random.pt"
    return save_checkpoint(path, "unet_gaze", adapter.module.state_dict(), {"model": adapter.config}, CLASSES)
