"""CPU latency of the encoder: torch eager FP32, ONNX Runtime FP32 and ONNX Runtime INT8 (Q/DQ), batch 1.

For the tiny preset and the paper's DINOv2-B/14 @ 448 + MixVPR (random weights unless a checkpoint
is given), with the INT8 fidelity: descriptor cosine against FP32 and, when a dataset is given, R@1
and AP of drone→satellite retrieval on its test split. Prints a markdown table.

    python benchmarks/export.py [--checkpoint tiny.pt] [--data DATASET] [--runs 20] [--models tiny,geolink]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from geolink_edge.backends import OnnxEmbedder
from geolink_edge.calib.dataset import calibration_set, iter_batches
from geolink_edge.calib.quantize import quantize_int8
from geolink_edge.calib.report import fidelity_report, held_out_set
from geolink_edge.data.layout import open_dataset
from geolink_edge.export.onnx_export import export_onnx
from geolink_edge.models import ImageEncoder, card_for_preset, load_encoder


def median_ms(fn, runs: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def calibration_batches(card, data, n: int, seed: int = 0):
    if data is not None:
        return list(iter_batches(calibration_set(data, n).paths, card, 8))
    height, width = card.image_size
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((min(8, n - i), 3, height, width)).astype(np.float32) for i in range(0, n, 8)]


def bench_model(name: str, encoder: ImageEncoder, data, runs: int, calib_images: int, method: str, tmp: Path):
    card = encoder.model_card()
    height, width = card.image_size
    x = np.random.default_rng(1).standard_normal((1, 3, height, width)).astype(np.float32)
    with torch.inference_mode():
        torch_ms = median_ms(lambda: encoder(torch.from_numpy(x)), runs)
    fp32_path = export_onnx(encoder, tmp / f"{name}.onnx")
    int8_path = tmp / f"{name}.int8.onnx"
    start = time.perf_counter()
    quantize_int8(fp32_path, int8_path, calibration_batches(card, data, calib_images), method=method)
    calib_s = time.perf_counter() - start
    fp32, int8 = OnnxEmbedder(fp32_path), OnnxEmbedder(int8_path)
    ort_fp32_ms = median_ms(lambda: fp32.run(x), runs)
    ort_int8_ms = median_ms(lambda: int8.run(x), runs)
    row = {
        "model": f"{name} ({card.backbone} @ {height}×{width}, {card.descriptor_dim}-d)",
        "torch": torch_ms,
        "ort_fp32": ort_fp32_ms,
        "ort_int8": ort_int8_ms,
        "calib": f"{method}, {calib_images} images, {calib_s:.0f} s",
    }
    if data is not None:
        report = fidelity_report(fp32_path, {"int8": int8_path}, held_out_set(data), max_r1_drop=1.0)
        m = report["models"]
        row.update(
            cos_mean=m["int8"]["cosine_mean"],
            cos_min=m["int8"]["cosine_min"],
            r1=f"{m['fp32']['R@1']:.2f} → {m['int8']['R@1']:.2f}",
            ap=f"{m['fp32']['AP']:.2f} → {m['int8']['AP']:.2f}",
        )
    else:
        batch = calibration_batches(card, None, 8, seed=7)[0]
        cosine = np.sum(fp32.run(batch) * int8.run(batch), axis=1)
        row.update(cos_mean=float(cosine.mean()), cos_min=float(cosine.min()), r1="n/a", ap="n/a")
    return row


def markdown(rows: list[dict], runs: int) -> str:
    lines = [
        "| model | torch eager FP32 ms | ORT FP32 ms | ORT INT8 ms | INT8 speed-up vs torch | "
        "INT8 cos mean / min | R@1 FP32 → INT8 | AP FP32 → INT8 | calibration |",
        "|---|---:|---:|---:|---:|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['torch']:.1f} | {r['ort_fp32']:.1f} | {r['ort_int8']:.1f} | "
            f"{r['torch'] / r['ort_int8']:.2f}× | {r['cos_mean']:.4f} / {r['cos_min']:.4f} | {r['r1']} | "
            f"{r['ap']} | {r['calib']} |"
        )
    lines.append(f"\nmedian of {runs} runs, batch 1, {torch.get_num_threads()} torch threads, CPU")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="a trained tiny checkpoint (else random weights)")
    parser.add_argument(
        "--data", type=Path, help="dataset root for calibration and R@1/AP (synthetic benchmark)"
    )
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--models", default="tiny,geolink")
    parser.add_argument("--calib-images", type=int, default=128)
    parser.add_argument("--method", default="entropy")
    args = parser.parse_args()
    if args.runs < 20:
        parser.error("--runs must be at least 20")
    data = open_dataset(args.data) if args.data else None
    rows = []
    with tempfile.TemporaryDirectory(prefix="geolink-bench-") as tmp:
        for name in args.models.split(","):
            torch.manual_seed(0)
            if name == "tiny" and args.checkpoint:
                encoder, _ = load_encoder(args.checkpoint)
            else:
                encoder = ImageEncoder(card_for_preset(name))
            big = name == "geolink"  # DINOv2-B @ 448: a few calibration images keep the run in minutes
            calib = min(args.calib_images, 16) if big else args.calib_images
            method = "minmax" if big else args.method
            rows.append(bench_model(name, encoder.eval(), data, args.runs, calib, method, Path(tmp)))
            print(markdown(rows, args.runs), flush=True)


if __name__ == "__main__":
    main()
