"""The ablation of the paper's Table 5 on a synthetic cross-area set (train styles ≠ test styles).

Variants: baseline (2D InfoNCE drone–satellite), +MME (the 3D branch with its cross-view terms),
+L_ga, +L_sc, +L_rd (each added to +MME), full GeoLink. Each is trained from the same random init
for every seed and scored in both directions (distractors kept). Prints a markdown table of
mean ± std and writes ``ablation.csv`` (one row per run) and ``ablation.md``.

    python benchmarks/ablation.py --out ablation_out            # CPU budget (≤ 60 min on 2 cores)
    python benchmarks/ablation.py --out ablation_out --quick    # a few minutes, 1 seed
    python benchmarks/ablation.py --out ablation_out --gpu      # a larger world on a CUDA device
"""

from __future__ import annotations

import argparse
import csv
import io
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from geolink_edge.atomic import write_text
from geolink_edge.train import evaluate, trainer
from geolink_edge.train.config import resolve_config

VARIANTS: dict[str, dict] = {
    "baseline": {"baseline": True},
    "+MME": {"losses": ["cc"]},
    "+L_ga": {"losses": ["cc", "ga"]},
    "+L_sc": {"losses": ["cc", "sc"]},
    "+L_rd": {"losses": ["cc", "rd"]},
    "GeoLink (full)": {"losses": ["cc", "sc", "ga", "rd"]},
}
METRICS = (
    ("drone->satellite", "R@1"),
    ("drone->satellite", "AP"),
    ("satellite->drone", "R@1"),
    ("satellite->drone", "AP"),
)
# world size and training length of each budget
BUDGETS = {
    "cpu": {
        "synth": ["--locations", "60", "--views", "4", "--size", "128"],
        "seeds": 3,
        "train": {"epochs": 10, "device": "cpu"},
    },
    "quick": {
        "synth": ["--locations", "24", "--views", "4", "--size", "128"],
        "seeds": 1,
        "train": {"epochs": 2, "device": "cpu"},
    },
    "gpu": {
        "synth": ["--locations", "200", "--views", "8", "--size", "256"],
        "seeds": 3,
        "train": {"epochs": 20, "device": "cuda", "batch_size": 16, "workers": 4},
    },
}


def make_world(root: Path, args: list[str]) -> Path:
    if not (root / "dataset.json").is_file():
        cmd = [sys.executable, "-m", "geolink_edge.cli", "synth", str(root), *args, "--force"]
        subprocess.run(cmd, check=True)
    return root


def run_one(data: Path, runs: Path, variant: str, seed: int, train: dict) -> dict:
    conf = resolve_config("tiny", overrides={**train, **VARIANTS[variant], "seed": seed, "val_every": 1000})
    run = trainer.main(conf, data, runs / f"{variant.replace(' ', '_')}-seed{seed}", force=True, quiet=True)
    report = evaluate.main(run / "last.pt", data, device=conf.device, quiet=True)
    row = {"variant": variant, "seed": seed}
    for direction, key in METRICS:
        row[f"{direction} {key}"] = report[direction][key]
    return row


def table(rows: list[dict]) -> str:
    columns = [f"{d} {k}" for d, k in METRICS]
    lines = ["| variant | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for variant in VARIANTS:
        mine = [r for r in rows if r["variant"] == variant]
        if not mine:
            continue
        cells = []
        for column in columns:
            values = np.array([r[column] for r in mine])
            cells.append(f"{values.mean():.1f} ± {values.std():.1f}")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="work folder (world, runs, tables)")
    parser.add_argument("--data", type=Path, help="an existing synthetic dataset (default: make one)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small world, 1 seed, 2 epochs")
    size.add_argument("--gpu", action="store_true", help="larger world and longer training on CUDA")
    parser.add_argument("--seeds", type=int, help="override the number of seeds")
    parser.add_argument("--epochs", type=int, help="override the epochs")
    args = parser.parse_args()
    budget = BUDGETS["quick" if args.quick else "gpu" if args.gpu else "cpu"]
    train = {**budget["train"], **({"epochs": args.epochs} if args.epochs else {})}
    data = args.data or make_world(args.out / "world", budget["synth"])
    rows: list[dict] = []
    started = time.perf_counter()
    for seed in range(args.seeds or budget["seeds"]):
        for variant in VARIANTS:
            t0 = time.perf_counter()
            rows.append(run_one(data, args.out / "runs", variant, seed, train))
            print(f"{variant} seed {seed}: {rows[-1]} ({time.perf_counter() - t0:.0f} s)", flush=True)
    text = table(rows)
    write_text(args.out / "ablation.csv", to_csv(rows))
    write_text(
        args.out / "ablation.md",
        f"{text}\nDataset: {data}; training {train}; {time.perf_counter() - started:.0f} s in all.\n",
    )
    print(text)


if __name__ == "__main__":
    main()
