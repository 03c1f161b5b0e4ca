"""Shared fixtures: an isolated $GAZEBENCH_HOME, a tiny synthetic dataset, a random checkpoint, the NIH samples."""

import os
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


@pytest.fixture(scope="session")
def nih_samples() -> Path:
    """The two NIH ChestX-ray14 images (no gaze): the only files tests read outside the repository.

    ``$GAZEBENCH_NIH_SAMPLES``, else ``../shared/data/nih_cxr14_samples`` beside the repository
    (where CI has it); tests that use it are skipped, saying why, when it is absent.
    """
    folder = Path(os.environ.get("GAZEBENCH_NIH_SAMPLES") or Path(__file__).resolve().parents[2] / "shared" / "data" / "nih_cxr14_samples")
    if not folder.is_dir():
        pytest.skip(f"the NIH ChestX-ray14 samples are not at {folder} (set GAZEBENCH_NIH_SAMPLES or put the shared data folder beside the repository)")
    return folder

