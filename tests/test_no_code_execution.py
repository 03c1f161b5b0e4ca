"""No code runs from a user's files: checkpoints, weights, caches and arrays are data, never pickled code.

Each test hands gazebench a file whose unpickling would run code (it would create a marker
file) and checks that the marker never appears and that the user gets one line.  The last
tests walk the package's source (ast, like tests/test_architecture.py): every ``torch.load``
passes ``weights_only=True``, every ``np.load`` passes ``allow_pickle=False``, and nothing
calls pickle, ``yaml.load``, ``pandas.read_pickle``, ``torch.jit.load``, ``eval`` or ``exec``.
"""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from gazebench.cli import main
from gazebench.errors import UserError
from gazebench.models.checkpoint import adapter_from_checkpoint, load_checkpoint
from tests.fixtures import egd_layout

PACKAGE = Path(__file__).resolve().parents[1] / "gazebench"


class Payload:
    """Unpickling this runs ``exec``: it writes ``marker`` (what an attacker's file would do, harmlessly)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",)


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "code-ran"


@pytest.fixture(params=["torch.save", "plain pickle"])
def evil_file(request, tmp_path, marker) -> Path:
    """A file that runs code when unpickled: torch's zip format (a checkpoint-shaped dict) or a bare pickle."""
    path = tmp_path / "model.pt"
    if request.param == "torch.save":
        torch.save({"format": "gazebench-checkpoint-1", "model": "unet_gaze", "state_dict": Payload(marker)}, path)
    else:
        path.write_bytes(pickle.dumps(Payload(marker), protocol=2))
    return path


def test_the_payload_really_runs_code_when_unpickled(tmp_path, marker):
    """The control: loading it the unsafe way does create the marker (so its absence below means something)."""
    path = tmp_path / "control.pt"
    torch.save({"state_dict": Payload(marker)}, path)
    torch.load(path, weights_only=False)  # noqa: S614 - the unsafe load, on purpose
    assert marker.read_text() == "code ran"


@pytest.fixture
def egd_root(tmp_path) -> Path:
    root = tmp_path / "egd"
    egd_layout.write_egd(root, n_patients=3)
    return root


def run_args(model: str, checkpoint: Path, root: Path, out: Path) -> list[str]:
    return ["run", "--model", model, "--data", "egd", "--root", str(root), "--split", "all", "--checkpoint", str(checkpoint), "--out", str(out)]


def assert_refused(result, marker: Path, *words: str) -> None:
    assert not marker.exists(), "the file's code ran"
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("gazebench: error: "), result.stderr
    assert all(word in result.stderr for word in words), result.stderr


def test_run_refuses_a_checkpoint_that_would_run_code(evil_file, egd_root, marker, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, run_args("unet_gaze", evil_file, egd_root, out))
    assert_refused(result, marker, f"cannot read checkpoint {evil_file}", "not an intact gazebench checkpoint")
    assert not out.exists()


def test_sanity_refuses_a_checkpoint_that_would_run_code(evil_file, egd_root, marker, tmp_path):
    out = tmp_path / "sanity"
    args = ["sanity", "--model", "unet_gaze", "--data", "egd", "--root", str(egd_root), "--split", "all", "--checkpoint", str(evil_file), "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert_refused(result, marker, f"cannot read checkpoint {evil_file}")
    assert not out.exists()


def test_the_checkpoint_api_refuses_a_file_that_would_run_code(evil_file, marker):
    for load in (load_checkpoint, adapter_from_checkpoint):
        with pytest.raises(UserError, match="not an intact gazebench checkpoint"):
            load(evil_file, expected_model="unet_gaze")
    assert not marker.exists()


def test_xrv_weights_that_would_run_code_are_refused(evil_file, egd_root, marker, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, run_args("xrv:densenet121-res224-all", evil_file, egd_root, out))
    assert_refused(result, marker, str(evil_file))
    assert not out.exists()


def test_imagenet_weights_that_would_run_code_are_refused(evil_file, marker):
    from gazebench.models.densenet import imagenet_features

    with pytest.raises(UserError, match="cannot read DenseNet-121 weights"):
        imagenet_features(evil_file)
    assert not marker.exists()


def test_a_training_resume_file_that_would_run_code_is_ignored(evil_file, marker):
    from gazebench.models.training.loop import ResumeFile

    assert ResumeFile(evil_file, "fingerprint").load(None, {}, {}, None) is False
    assert not marker.exists()


def test_a_cache_item_that_would_run_code_is_refused(evil_file, marker):
    from gazebench.data.cache import SampleCache

    cache = SampleCache(evil_file.parent)
    cache.items.mkdir(parents=True)
    evil_file.rename(cache.path("item"))
    with pytest.raises(pickle.UnpicklingError):
        cache.load("item")
    assert not marker.exists()


def test_score_refuses_an_object_array_that_would_run_code(tmp_path, marker):
    saliency, gaze, out = tmp_path / "saliency.npy", tmp_path / "gaze.npy", tmp_path / "scores.csv"
    objects = np.empty((2, 4, 4), dtype=object)
    objects.fill(Payload(marker))
    np.save(saliency, objects, allow_pickle=True)
    np.save(gaze, np.full((2, 4, 4), 1 / 16))
    result = CliRunner().invoke(main, ["score", "--saliency", str(saliency), "--gaze", str(gaze), "--out", str(out), "--device", "cpu"])
    assert_refused(result, marker, f"--saliency {saliency}", "Python objects")
    assert not out.exists()


def test_saved_priors_holding_objects_are_refused(tmp_path, marker):
    """A run directory's gaze_priors.npz is read back on resume, with allow_pickle=False."""
    from gazebench.run.priors import PRIORS_FILE, GazePriors

    np.savez(tmp_path / PRIORS_FILE, centre_bias=np.array([Payload(marker)], dtype=object), fixation_total=np.zeros((4, 4)), source=np.array("x"))
    with pytest.raises(ValueError, match="allow_pickle"):
        GazePriors.load(tmp_path)
    assert not marker.exists()


# ---------------------------------------------------------------------- the source


UNSAFE_CALLS = {
    "pickle.load", "pickle.loads", "pickle.Unpickler", "_pickle.load", "_pickle.loads", "dill.load", "dill.loads",
    "joblib.load", "marshal.load", "marshal.loads", "shelve.open", "pandas.read_pickle", "torch.jit.load",
    "yaml.load", "yaml.load_all", "yaml.unsafe_load", "yaml.unsafe_load_all", "yaml.full_load", "yaml.full_load_all",
    "eval", "exec", "builtins.eval", "builtins.exec",
}  # fmt: skip
REQUIRED_KEYWORDS = {"torch.load": ("weights_only", True), "torch.serialization.load": ("weights_only", True), "numpy.load": ("allow_pickle", False)}


def imported_names(tree: ast.AST) -> dict[str, str]:
    """Local name -> the dotted name it stands for (``np`` -> ``numpy``, ``load`` -> ``torch.load``)."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def dotted(node: ast.AST, names: dict[str, str]) -> str | None:
    """``np.load`` -> ``numpy.load`` (None for calls on anything but a name or an attribute chain)."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([names.get(node.id, node.id), *reversed(parts)])


def unsafe_loads(source: str, where: str = "<source>") -> tuple[list[str], list[str]]:
    """(problems, the loads found) in ``source``: unsafe calls, and loads without their safe keyword."""
    tree = ast.parse(source)
    names = imported_names(tree)
    problems, loads = [], []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = dotted(node.func, names)
        if name in UNSAFE_CALLS:
            problems.append(f"{where}:{node.lineno} calls {name}")
        if name in REQUIRED_KEYWORDS:
            keyword, value = REQUIRED_KEYWORDS[name]
            loads.append(f"{where}:{node.lineno} {name}")
            given = {k.arg: k.value for k in node.keywords}
            if not (isinstance(given.get(keyword), ast.Constant) and given[keyword].value is value):
                problems.append(f"{where}:{node.lineno} calls {name} without {keyword}={value}")
    return problems, loads


def test_every_load_in_the_package_is_safe():
    problems, loads = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        found, seen = unsafe_loads(path.read_text(encoding="utf-8"), str(path.relative_to(PACKAGE.parent)))
        problems += found
        loads += seen
    assert not problems, "\n".join(problems)
    assert sum("torch.load" in load for load in loads) >= 5 and sum("numpy.load" in load for load in loads) >= 2, loads  # the walk sees them


@pytest.mark.parametrize(
    "source, problem",
    [
        ("import torch\ntorch.load(p)", "torch.load without weights_only=True"),
        ("import torch\ntorch.load(p, weights_only=False)", "torch.load without weights_only=True"),
        ("from torch import load\nload(p, map_location='cpu')", "torch.load without weights_only=True"),
        ("import numpy as np\nnp.load(p)", "numpy.load without allow_pickle=False"),
        ("import numpy\nnumpy.load(p, allow_pickle=True)", "numpy.load without allow_pickle=False"),
        ("import pickle\npickle.loads(b)", "calls pickle.loads"),
        ("import yaml\nyaml.load(text, Loader=yaml.Loader)", "calls yaml.load"),
        ("import pandas as pd\npd.read_pickle(p)", "calls pandas.read_pickle"),
        ("eval(text)", "calls eval"),
    ],
)
def test_the_walk_flags_unsafe_loads(source, problem):
    problems, _ = unsafe_loads(source)
    assert len(problems) == 1 and problem in problems[0]


def test_the_walk_accepts_safe_loads():
    source = "import torch, yaml\nimport numpy as np\ntorch.load(p, weights_only=True)\nnp.load(p, mmap_mode='r', allow_pickle=False)\nyaml.safe_load(t)"
    assert unsafe_loads(source) == ([], ["<source>:3 torch.load", "<source>:4 numpy.load"])
