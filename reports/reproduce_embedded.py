"""Reproduce the seed studies on the embedded dataset, timed, and keep their small outputs in reports/<study>/.

    python reports/reproduce_embedded.py [STUDY ...] [--work DIR] [--device auto|cpu|cuda]

Each study runs exactly as `gazebench reproduce STUDY --out WORK/STUDY` does (the embedded models
come from $GAZEBENCH_HOME's model cache and are trained there first when missing).  Its tables
(Markdown, CSV, LaTeX) and figures (PNG only, reduced to 256 colours, to keep the repository
small) are copied into reports/<study>/, and the wall time and the machine are merged into reports/reproduce_times.yaml.
The run directories, the PDFs and the HTML report stay in WORK (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from PIL import Image

from gazebench.paths import home
from gazebench.studies import study_names

REPORTS = Path(__file__).resolve().parent
TIMES = REPORTS / "reproduce_times.yaml"


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, {'CUDA' if torch.cuda.is_available() else 'no GPU'}"


def small_png(source: Path, target: Path) -> None:
    """The figure reduced to 256 colours (about a third of the bytes; smooth maps show some banding): the repository stays small."""
    image = Image.open(source).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    image.save(target, "PNG", optimize=True)


def cached_checkpoints() -> set[Path]:
    """The model cache's checkpoints (models/<model>/<dataset>/<recipe>.pt under $GAZEBENCH_HOME)."""
    return set((home() / "models").rglob("*.pt"))


def copy_outputs(out: Path, target: Path) -> None:
    """The study's tables and its figures as small PNGs, replacing what ``target`` held."""
    shutil.rmtree(target, ignore_errors=True)
    (target / "tables").mkdir(parents=True)
    (target / "figures").mkdir()
    for path in sorted((out / "tables").iterdir()):
        shutil.copy(path, target / "tables" / path.name)
    for path in sorted((out / "figures").glob("*.png")):
        small_png(path, target / "figures" / path.name)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("studies", nargs="*", default=study_names())
    parser.add_argument("--work", type=Path, help="where the runs go (default: a temporary folder, deleted after)")
    parser.add_argument("--device", default="cpu", help="the table's times are CPU times")
    parser.add_argument("--outputs-only", action="store_true", help="refresh the outputs of studies already reproduced in --work (their runs are reused) without recording the time")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="gazebench-reports-"))
    times = yaml.safe_load(TIMES.read_text()) if TIMES.is_file() else {}
    for study in args.studies:
        out = work / study
        command = ["gazebench", "reproduce", study, "--out", str(out), "--device", args.device]
        before = cached_checkpoints()
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        minutes = round((time.perf_counter() - started) / 60, 1)
        copy_outputs(out, REPORTS / study)
        if args.outputs_only:
            continue
        times[study] = {
            "command": f"gazebench reproduce {study} --out DIR",
            "minutes": minutes,
            "trained_first": sorted(path.parent.parent.name for path in cached_checkpoints() - before),  # models the time includes training of
            "machine": machine(),
        }
        TIMES.write_text(yaml.safe_dump(times, sort_keys=False))
        print(f"{study}: {minutes} min -> {REPORTS / study}", file=sys.stderr, flush=True)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
