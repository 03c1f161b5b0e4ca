"""A Markdown table of gazebench's method stage against the bare library call, from a pytest-benchmark JSON.

    python -m pytest benchmark/test_methods_vs_library.py --benchmark-only --benchmark-json=methods_vs_library.json
    python benchmark/ratios.py methods_vs_library.json [--stat median|mean|min|max]

One row per (model, method): bare ms/image, gazebench ms/image (the statistic over the timed rounds,
the gazebench call's from pytest-benchmark's stats, the bare call's from ``extra_info["bare_seconds"]``,
divided by the images per call, ``extra_info["images"]``) and the ratio gazebench / bare.  The goal
is gazebench at least 0.95 times the bare call's speed: a ratio of at most 1 / 0.95 = 1.053.  Skipped
pairs (a refusal) and pairs selected away with ``-k`` have no row.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

GOAL = 1 / 0.95  # the largest ratio gazebench / bare that meets the goal


def statistic(seconds: list[float], stat: str) -> float:
    """``stat`` of a list of round times, as pytest-benchmark computes it."""
    ordered = sorted(seconds)
    if stat == "median":
        middle = len(ordered) // 2
        return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    return {"mean": sum(ordered) / len(ordered), "min": ordered[0], "max": ordered[-1]}[stat]


def per_image_ms(benchmarks: list[dict], stat: str) -> dict[tuple[str, str], dict[str, float]]:
    """{(model, method): {"gazebench": ms per image, "bare": ms per image}} from the benchmarks of test_methods_vs_library.py."""
    times: dict[tuple[str, str], dict[str, float]] = {}
    for entry in benchmarks:
        info = entry.get("extra_info", {})
        if not {"model", "method", "images", "bare_seconds"} <= set(info):
            continue  # another benchmark file's entry
        times[(info["model"], info["method"])] = {
            "gazebench": 1000 * entry["stats"][stat] / info["images"],
            "bare": 1000 * statistic(info["bare_seconds"], stat) / info["images"],
        }
    return times


def table(times: dict[tuple[str, str], dict[str, float]]) -> tuple[list[str], list[str]]:
    """The Markdown lines, and the pairs whose ratio misses the goal."""

    def shown(value: float | None) -> str:
        return "–" if value is None else f"{value:.3g}" if value < 100 else f"{value:.0f}"

    lines = ["| model | method | bare ms/image | gazebench ms/image | ratio (gazebench / bare) |", "|---|---|---|---|---|"]
    missed = []
    for (model, method), kinds in sorted(times.items()):
        bare, ours = kinds.get("bare"), kinds.get("gazebench")
        ratio = ours / bare if bare and ours is not None else None
        if ratio is not None and ratio > GOAL:
            missed.append(f"{model}/{method} ({ratio:.3f})")
        lines.append(f"| {model} | `{method}` | {shown(bare)} | {shown(ours)} | {'–' if ratio is None else f'{ratio:.2f}'} |")
    return lines, missed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, help="the file written by pytest --benchmark-json")
    parser.add_argument("--stat", default="median", choices=("mean", "median", "min", "max"), help="statistic over the timed rounds (default: median)")
    args = parser.parse_args(argv)
    data = json.loads(args.json.read_text())
    benchmarks = data.get("benchmarks", [])
    times = per_image_ms(benchmarks, args.stat)
    if not times:
        raise SystemExit(f"{args.json}: no benchmarks of benchmark/test_methods_vs_library.py")
    first = next(entry["extra_info"] for entry in benchmarks if "bare_seconds" in entry.get("extra_info", {}))
    rounds = sorted({entry["stats"]["rounds"] for entry in benchmarks if "bare_seconds" in entry.get("extra_info", {})})
    shown_rounds = f"{rounds[0]}" if len(rounds) == 1 else f"{rounds[0]}-{rounds[-1]}"
    print(f"{first['images']} images per call on {first.get('device', '?')}, {args.stat} of {shown_rounds} timed rounds per pair{' (SMOKE: times mean nothing)' if first.get('smoke') else ''}")
    print()
    lines, missed = table(times)
    print("\n".join(lines))
    pairs = sum(1 for kinds in times.values() if len(kinds) == 2)
    print()
    print(f"{pairs - len(missed)} of {pairs} pairs meet the goal (ratio <= {GOAL:.3f})" + (f"; missed: {', '.join(missed)}" if missed else ""))


if __name__ == "__main__":
    main()
