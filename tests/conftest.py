"""Shared fixtures: an isolated $GAZEBENCH_HOME, a tiny synthetic dataset, a random checkpoint, the NIH samples,
the trained embedded model."""

import os
from pathlib import Path

import pytest
import torch

from gazebench.models.checkpoint import save_checkpoint
from gazebench.models.unet_gaze import build_adapter

CLASSES = ["Normal", "CHF", "pneumonia"]
NIH_IMAGES = ["00000001_000.png", "00027426_000.png"]


def pytest_collection_modifyitems(items):
    """A test that needs the trained embedded model takes minutes: it is ``slow`` even unmarked, so ``-m "not slow"`` leaves it out."""
    for item in items:
        if "trained_unet_gaze_home" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


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
    """The two NIH ChestX-ray14 images (no gaze), shipped in tests/data/nih_cxr14_samples/ with their notice.

    ``$GAZEBENCH_NIH_SAMPLES`` points the tests at another copy; tests that use it are skipped,
    saying why, when that folder does not hold both images.
    """
    folder = Path(os.environ.get("GAZEBENCH_NIH_SAMPLES") or Path(__file__).parent / "data" / "nih_cxr14_samples")
    missing = [name for name in NIH_IMAGES if not (folder / name).is_file()]
    if missing:
        pytest.skip(f"the NIH ChestX-ray14 samples {', '.join(missing)} are not in {folder} (set GAZEBENCH_NIH_SAMPLES to a folder that holds them)")
    return folder


@pytest.fixture(scope="session")
def trained_unet_gaze_home(tmp_path_factory) -> Path:
    """A $GAZEBENCH_HOME holding the embedded dataset and `unet_gaze` trained on it, as `gazebench run` trains it.

    Trained once per session (minutes); ``$GAZEBENCH_TRAINED_HOME`` names a home that already
    holds them (e.g. ``~/.cache/gazebench`` after the main command), and then nothing is trained.
    """
    from gazebench.models.training.jobs import adapter_for_run

    home = Path(os.environ.get("GAZEBENCH_TRAINED_HOME") or tmp_path_factory.mktemp("trained_home"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GAZEBENCH_HOME", str(home))
        adapter_for_run("unet_gaze", None, "synth", None, None)
    return home
