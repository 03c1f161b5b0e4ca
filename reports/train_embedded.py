"""Train every seed model with its embedded recipe on the embedded dataset, timed; write the table.

    python reports/train_embedded.py [MODEL ...] [--out reports/embedded_training.yaml] [--device auto|cpu|cuda]

Each model is trained exactly as `gazebench train --model NAME` does (seed 0, checkpoint chosen on
dev, test AUROC with patient-bootstrap 95% CIs) and the result, with the wall time and the
machine, is merged into reports/embedded_training.yaml, which README's model-zoo table quotes.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
from pathlib import Path

import torch
import yaml

from gazebench.device import DEVICE_CHOICES
from gazebench.models.training.jobs import train_job

SEED_MODELS = ["unet_gaze", "effnet_baseline", "temporal_gaze", "heatmap_generator", "densenet121", "densenet_aug", "mimic_guided"]
RESULTS = Path(__file__).resolve().parent / "embedded_training.yaml"


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, {'CUDA' if torch.cuda.is_available() else 'no GPU'}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="*", default=SEED_MODELS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="cpu", help="where to train (the table's times are CPU times)")
    args = parser.parse_args()
    results = yaml.safe_load(args.out.read_text()) if args.out.is_file() else {}
    for model in args.models:
        started = time.perf_counter()
        report = train_job(model, "synth", None, None, None, 0, None, device=args.device)
        clean = lambda v: None if isinstance(v, float) and math.isnan(v) else round(float(v), 3)  # noqa: E731
        results[model] = {
            "command": f"gazebench train --model {model}",
            "recipe": "embedded",
            "minutes": round((time.perf_counter() - started) / 60, 1),
            "best_epoch": report.best_epoch,
            "test_auroc": {name: clean(v) for name, v in report.test_auroc["per_class"].items()},
            "test_auroc_ci95": {name: [clean(lo), clean(hi)] for name, (lo, hi) in report.test_auroc["ci"].items()},
            "test_mean_auroc": clean(report.test_auroc["mean"]),
            "machine": machine(),
        }
        args.out.write_text(yaml.safe_dump(results, sort_keys=False, allow_unicode=True))
        print(report.summary(), flush=True)


if __name__ == "__main__":
    main()
