"""CPU latency of the encoder: torch eager FP32, ONNX Runtime FP32 and INT8 (Q/DQ) configurations, batch 1.

INT8 configurations (``--configs``): ``linears`` (the default export: the blocks' Linears in INT8,
attention products FP32) and ``attention`` (also QKᵀ and AV in INT8, ``--int8-attention``). Each is
calibrated with every activation method of ``--methods`` (per-tensor symmetric scales; weights
are per output channel in every configuration). Timings are interleaved (one run of each model in
turn, repeated) so that a shared, busy CPU slows every model alike; the median is reported.

Fidelity needs a trained model: with ``--checkpoint`` (a tiny-preset run) and ``--data``, the
fidelity report of the export (R@1 and AP on the whole test split, raw and centred cosine, top-5
agreement) is computed for every INT8 configuration. The paper-size model (random weights unless
``--checkpoint`` fits it) is timed only; its cosine on random inputs is given for what it is.
The goal column checks INT8 ≥ 2.5× torch eager, R@1 drop ≤ 0.5 point, centred cosine ≥ 0.99.

    python benchmarks/export.py [--models tiny,geolink] [--checkpoint tiny.pt --data DATASET]
        [--configs linears,attention] [--methods minmax] [--runs 20]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from _results import publish_tables  # a sibling module: tables into RESULTS.md

from geolink_edge.backends import OnnxEmbedder
from geolink_edge.calib.dataset import calibration_set, iter_batches
from geolink_edge.calib.quantize import METHODS, quantize_int8
from geolink_edge.calib.report import fidelity_report, held_out_set
from geolink_edge.data.datasets import open_dataset
from geolink_edge.export.onnx_export import export_onnx
from geolink_edge.models import ImageEncoder, card_for_preset, load_encoder

CONFIGS = {"linears": False, "attention": True}  # name → INT8 attention products
GOAL = {"speedup": 2.5, "max_r1_drop": 0.5, "min_centred_cosine": 0.99}


def interleaved_medians(
    models: dict[str, Callable[[], object]], runs: int, warmup: int = 2
) -> dict[str, float]:
    """Median milliseconds of each callable, timed in turn ``runs`` times after ``warmup`` rounds."""
    times: dict[str, list[float]] = {name: [] for name in models}
    for round_ in range(warmup + runs):
        for name, fn in models.items():
            start = time.perf_counter()
            fn()
            if round_ >= warmup:
                times[name].append((time.perf_counter() - start) * 1000.0)
    return {name: statistics.median(t) for name, t in times.items()}


def calibration_batches(card, data, n: int, seed: int = 0) -> list[np.ndarray]:
    if data is not None:
        return list(iter_batches(calibration_set(data, n).paths, card, 8))
    height, width = card.image_size
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((min(8, n - i), 3, height, width)).astype(np.float32) for i in range(0, n, 8)]


def int8_variants(fp32_path: Path, card, data, args, big: bool, tmp: Path) -> dict[str, dict]:
    """Every (configuration, method) INT8 model: its path and calibration time."""
    # ViT-B @ 448: the calibrator holds ~1.2 GB of attention maps per image; its timing needs no more
    images = min(args.calib_images, 2) if big else args.calib_images
    batches = calibration_batches(card, data, images)
    made = {}
    for config in args.configs.split(","):
        for method in args.methods.split(","):
            name = f"{config}/{method}"
            path = tmp / f"{fp32_path.stem}.{config}.{method}.int8.onnx"
            start = time.perf_counter()
            quantize_int8(fp32_path, path, batches, method=method, attention=CONFIGS[config])
            made[name] = {"path": path, "calib": f"{images} images, {time.perf_counter() - start:.0f} s"}
            print(f"  calibrated {name} ({made[name]['calib']})", flush=True)
    return made


def fidelity(fp32_path: Path, variants: dict[str, dict], data, card) -> dict[str, dict]:
    """Per INT8 model: R@1 FP32 → INT8, drop, raw/centred cosine, top-5 agreement."""
    if data is None:
        batch = calibration_batches(card, None, 8, seed=7)[0]
        reference = OnnxEmbedder(fp32_path).run(batch)
        out = {}
        for name, v in variants.items():
            cosine = np.sum(OnnxEmbedder(v["path"]).run(batch) * reference, axis=1)
            out[name] = {"cos": f"{cosine.mean():.4f} / {cosine.min():.4f} (random inputs)"}
        return out
    candidates = {name: v["path"] for name, v in variants.items()}
    report = fidelity_report(fp32_path, candidates, held_out_set(data), max_r1_drop=GOAL["max_r1_drop"])
    base = report["models"]["fp32"]["R@1"]
    out = {}
    for name in variants:
        m = report["models"][name]
        out[name] = {
            "r1": f"{base:.2f} → {m['R@1']:.2f}",
            "drop": m["R@1_drop"],
            "cos": f"{m['cosine_mean']:.4f} / {m['cosine_min']:.4f}",
            "centred": m["centred_cosine_mean"],
            "centred_text": f"{m['centred_cosine_mean']:.4f} / {m['centred_cosine_min']:.4f}",
            "top5": f"{m['top5_agreement']:.3f}",
        }
    return out


def bench_model(name: str, encoder: ImageEncoder, calib_data, scored_data, args, tmp: Path) -> list[dict]:
    """Time torch, ORT FP32 and every INT8 model; score the INT8 ones on ``scored_data`` when given."""
    card = encoder.model_card()
    height, width = card.image_size
    big = name == "geolink"
    fp32_path = export_onnx(encoder, tmp / f"{name}.onnx")
    variants = int8_variants(fp32_path, card, calib_data, args, big, tmp)
    x = np.random.default_rng(1).standard_normal((1, 3, height, width)).astype(np.float32)
    tensor = torch.from_numpy(x)
    sessions = {"ort_fp32": OnnxEmbedder(fp32_path)} | {
        k: OnnxEmbedder(v["path"]) for k, v in variants.items()
    }
    with torch.inference_mode():
        timed = {"torch": lambda: encoder(tensor)} | {k: (lambda s=s: s.run(x)) for k, s in sessions.items()}
        ms = interleaved_medians(timed, args.runs)
    quality = fidelity(fp32_path, variants, scored_data, card)
    label = f"{name} ({card.backbone} @ {height}×{width}, {card.descriptor_dim}-d)"
    rows = [{"model": label, "config": "torch eager FP32", "ms": ms["torch"]}]
    rows.append({"model": label, "config": "ORT FP32", "ms": ms["ort_fp32"]})
    for variant, info in variants.items():
        q = quality[variant]
        speedup = ms["torch"] / ms[variant]
        meets = (
            speedup >= GOAL["speedup"]
            and q.get("drop", float("inf")) <= GOAL["max_r1_drop"]
            and q.get("centred", -1.0) >= GOAL["min_centred_cosine"]
        )
        rows.append(
            {
                "model": label,
                "config": f"ORT INT8 {variant}",
                "ms": ms[variant],
                "speedup": speedup,
                "calib": info["calib"],
                **q,
                "goal": "yes" if meets else "no",
            }
        )
    return rows


def markdown(rows: list[dict], runs: int, threads: int) -> str:
    lines = [
        "| model | configuration | ms | × torch | R@1 FP32 → INT8 | cos mean / min | centred cos mean / min "
        "| top-5 agree | calibration | goal |",
        "|---|---|---:|---:|---|---|---|---|---|---|",
    ]
    for r in rows:
        speedup = f"{r['speedup']:.2f}×" if "speedup" in r else "—"
        lines.append(
            f"| {r['model']} | {r['config']} | {r['ms']:.1f} | {speedup} | {r.get('r1', '—')} | "
            f"{r.get('cos', '—')} | {r.get('centred_text', '—')} | {r.get('top5', '—')} | "
            f"{r.get('calib', '—')} | {r.get('goal', '—')} |"
        )
    lines.append(
        f"\nmedian of {runs} interleaved runs, batch 1, {torch.get_num_threads()} torch and "
        f"{threads or 'default'} ORT threads, CPU. "
        f"goal: ≥ {GOAL['speedup']}× torch eager, R@1 drop ≤ {GOAL['max_r1_drop']} point, centred "
        f"cosine ≥ {GOAL['min_centred_cosine']} (needs --checkpoint and --data)."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="a trained tiny checkpoint (else random weights)")
    parser.add_argument("--data", type=Path, help="dataset root for calibration and the fidelity report")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--models", default="tiny,geolink")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"of: {', '.join(CONFIGS)}")
    parser.add_argument(
        "--methods", default="minmax", help=f"activation calibration, of: {', '.join(METHODS)}"
    )
    parser.add_argument("--calib-images", type=int, default=128)
    parser.add_argument(
        "--threads", type=int, default=0, help="torch and ORT threads (0: their defaults); 1 on a busy CPU"
    )
    args = parser.parse_args()
    publish_tables("Encoder latency and INT8, batch 1")
    if args.runs < 5:
        parser.error("--runs must be at least 5")
    if any(c not in CONFIGS for c in args.configs.split(",")):
        parser.error(f"--configs: choose from {', '.join(CONFIGS)}")
    if any(m not in METHODS for m in args.methods.split(",")):
        parser.error(f"--methods: choose from {', '.join(METHODS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    data = open_dataset(args.data) if args.data else None
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="geolink-bench-") as tmp:
        for name in args.models.split(","):
            torch.manual_seed(0)
            if name == "tiny" and args.checkpoint:
                encoder, _ = load_encoder(args.checkpoint)
            else:
                encoder = ImageEncoder(card_for_preset(name))
            # the paper-size model has random weights: its fidelity on the dataset would mean nothing
            scored = data if (name == "tiny" and args.checkpoint) else None
            rows += bench_model(name, encoder.eval(), data, scored, args, Path(tmp))
            print(markdown(rows, args.runs, args.threads), flush=True)


if __name__ == "__main__":
    main()
