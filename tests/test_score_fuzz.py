"""Fuzzing `gazebench score`: malformed inputs end in one line and exit 2, or a valid CSV whose NaN
the summary counts -- never a traceback.

Hypothesis draws the files: arrays of every dtype (complex, strings, dates, Python objects,
float16 to longdouble, big-endian), with NaN/inf, negative, subnormal and huge values, empty and
mismatched shapes, truncated or random bytes, a .npz in place of a .npy, under non-ASCII names.
Small arrays and a bounded number of examples: it runs in seconds.
"""

from __future__ import annotations

import io
import re
import tempfile
import traceback
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gazebench.cli import main

REAL_DTYPES = ["float64"] * 4 + ["float32", "float16", ">f8", "int64", "int16", "uint8", "bool"]
OTHER_DTYPES = ["complex128", "longdouble", "<U2", "datetime64[s]", "object"]
SPECIAL = [np.nan, np.inf, -np.inf, -1.0, 0.0, 5e-324, 1e-310, 1e300, -1e300]
SIDES = st.sampled_from([1, 5, 11, 12, 13] * 3 + [0])  # 11: SSIM's window
SHAPES = st.tuples(st.sampled_from([1, 2, 3] * 3 + [0]), SIDES, SIDES)
ODD_SHAPES = st.sampled_from([(), (4,), (3, 5), (1, 2, 3, 4)])
BROKEN = ["other shape", "odd shape", "other dtype", "truncated", "random bytes", "npz"]
NAMES = st.text(alphabet=st.characters(codec="utf-8", categories=("L", "N")), min_size=1, max_size=6)
METRIC_SPECS = st.sampled_from(["all"] * 8 + ["cc", "nss,auc_judd", "ssim", "iou,hit_rate", "info_gain,kl_cb", "auc_shuffled,sim,nss_cb"])


@st.composite
def array_file(draw, shape: tuple, profile: str, broken: bool) -> bytes:
    """The bytes of a .npy file of ``shape`` holding real numbers (values mostly of ``profile``), or, when
    ``broken``, of another shape or dtype, truncated, random bytes or a .npz archive."""
    kind = draw(st.sampled_from(BROKEN)) if broken else "array"
    if kind == "random bytes":
        return draw(st.binary(max_size=200))
    if kind in ("other shape", "odd shape"):
        shape = draw(SHAPES if kind == "other shape" else ODD_SHAPES)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    profile = draw(st.sampled_from([profile] * 4 + ["plain", "zeros", "special", "scaled"]))
    values = rng.random(shape) ** 3
    if profile == "binary":
        values = (values > 0.7).astype(np.float64)
    elif profile == "zeros":
        values = np.zeros(shape)
    elif profile == "special" and values.size:
        values.flat[rng.integers(values.size, size=3)] = draw(st.lists(st.sampled_from(SPECIAL), min_size=3, max_size=3))
    elif profile == "scaled":
        values = values * draw(st.sampled_from([1e-300, 1e-200, 1e200, 1e300]))
    dtype = draw(st.sampled_from(OTHER_DTYPES if kind == "other dtype" else REAL_DTYPES))
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        array = np.zeros(shape, dtype) if dtype in ("<U2", "datetime64[s]") else values.astype(dtype)
    buffer = io.BytesIO()
    if kind == "npz":
        np.savez(buffer, array=array)
    else:
        np.save(buffer, array, allow_pickle=True)  # the object arrays are pickled: gazebench must not load them
    data = buffer.getvalue()
    return data[: draw(st.integers(0, len(data) - 1))] if kind == "truncated" else data


@st.composite
def cases(draw) -> tuple[dict[str, tuple[str, bytes]], str, str]:
    """({option: (file name, bytes)}, --metrics, folder name); at most one file broken."""
    shape = draw(SHAPES)
    profiles = {"--saliency": "plain", "--gaze": "plain", "--fixations": "binary", "--masks": "binary", "--centre-bias": "plain"}
    options = ["--saliency", "--gaze", *(option for option in list(profiles)[2:] if draw(st.booleans()))]
    broken = draw(st.sampled_from([None] * len(options) + options))
    files = {}
    for option in options:
        data = draw(array_file(shape[1:] if option == "--centre-bias" else shape, profiles[option], option == broken))
        files[option] = (f"{draw(NAMES)}{option}.npy", data)
    return files, draw(METRIC_SPECS), draw(NAMES)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=cases())
def test_score_ends_in_one_line_or_a_csv_never_a_traceback(case):
    files, metrics, folder_name = case
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary) / folder_name
        folder.mkdir()
        args = ["score", "--metrics", metrics, "--out", str(folder / "résultats.csv")]
        for option, (name, data) in files.items():
            (folder / name).write_bytes(data)
            args += [option, str(folder / name)]
        result = CliRunner().invoke(main, args)
        assert result.exit_code in (0, 2), "".join(traceback.format_exception(result.exception))
        if result.exit_code == 2:
            assert re.fullmatch(r"gazebench: error: [^\n]+\n", result.stderr), result.stderr
            assert not (folder / "résultats.csv").exists()
            return
        table = pd.read_csv(folder / "résultats.csv")
        n_maps = np.load(io.BytesIO(files["--saliency"][1])).shape[0]
        assert list(table["index"]) == list(range(n_maps))
        for name in table.columns.drop("index"):
            n_nan = int(table[name].isna().sum())
            assert re.search(rf"^\| {name} \| \w+ \| [^|]+ \| {n_maps - n_nan} \| {n_nan} \|$", result.stdout, re.MULTILINE), result.stdout
