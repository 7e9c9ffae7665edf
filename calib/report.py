"""Fidelity of the reduced-precision ONNX models against FP32, on held-out images, through ONNX Runtime.

Descriptor cosine (FP32 vs candidate, per image) says how far the numbers moved; R@1 and AP of
drone→satellite retrieval on the test split say whether it matters. A drop of R@1 above
``max_r1_drop`` points fails the export, after the reports are written and the table printed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geolink_edge.backends import OnnxEmbedder
from geolink_edge.calib.dataset import iter_batches
from geolink_edge.data.layout import CrossViewData
from geolink_edge.errors import GeolinkError
from geolink_edge.metrics import evaluate_embeddings

REPORT_FORMAT = "geolink-edge/fidelity-report/1"
CALIBRATION_FORMAT = "geolink-edge/calibration-report/1"
DEFAULT_MAX_QUERIES = 1000


@dataclass
class HeldOut:
    """Drone queries and the satellite gallery of the test split (distractors kept)."""

    query_paths: list[Path]
    query_labels: list[str]
    gallery_paths: list[Path]
    gallery_labels: list[str]

    @property
    def paths(self) -> list[Path]:
        return [*self.query_paths, *self.gallery_paths]


def held_out_set(data: CrossViewData, max_queries: int = DEFAULT_MAX_QUERIES) -> HeldOut:
    """The test split's drone→satellite task; at most ``max_queries`` queries, evenly spread."""
    if max_queries < 1:
        raise GeolinkError(f"--fidelity-queries must be >= 1, got {max_queries}")
    if not data.query_drone or not data.gallery_satellite:
        raise GeolinkError(
            f"{data.root}: the fidelity check needs test/query_drone and test/gallery_satellite"
        )
    queries = data.query_drone
    if len(queries) > max_queries:
        keep = np.linspace(0, len(queries) - 1, max_queries).round().astype(int)
        queries = [queries[i] for i in keep]
    return HeldOut(
        [q.path for q in queries],
        [q.location for q in queries],
        [g.path for g in data.gallery_satellite],
        [g.location for g in data.gallery_satellite],
    )


def onnx_descriptors(onnx_path: Path, held_out: HeldOut, batch_size: int = 16) -> np.ndarray:
    """Descriptors of every held-out image (queries then gallery) through ONNX Runtime on the CPU."""
    embedder = OnnxEmbedder(onnx_path, providers=["CPUExecutionProvider"])
    parts = [embedder.run(batch) for batch in iter_batches(held_out.paths, embedder.card, batch_size)]
    return np.concatenate(parts, axis=0)


def retrieval(desc: np.ndarray, held_out: HeldOut) -> dict[str, float]:
    n = len(held_out.query_paths)
    scores = evaluate_embeddings(desc[:n], held_out.query_labels, desc[n:], held_out.gallery_labels)
    return {"R@1": scores["R@1"], "AP": scores["AP"], "protocol": scores["protocol"]}


def calibration_report(
    quantized: dict[str, Any], calib_set: dict[str, Any], source: Path, source_sha256: str
) -> dict[str, Any]:
    """What went into the INT8 model: images, method, which nodes were quantized and which were not."""
    return {
        "format": CALIBRATION_FORMAT,
        "source_onnx": source.name,
        "source_onnx_sha256": source_sha256,
        "calibration_set": calib_set,
        **quantized,
    }


def fidelity_report(
    fp32_onnx: Path, candidates: dict[str, Path], held_out: HeldOut, max_r1_drop: float
) -> dict[str, Any]:
    """Compare each candidate (``{"int8": path, "fp16": path}``) with the FP32 model."""
    reference = onnx_descriptors(fp32_onnx, held_out)
    base = retrieval(reference, held_out)
    models: dict[str, Any] = {"fp32": {"file": fp32_onnx.name, "R@1": base["R@1"], "AP": base["AP"]}}
    passed = True
    for precision, path in candidates.items():
        desc = onnx_descriptors(path, held_out)
        cosine = np.sum(desc * reference, axis=1)
        scores = retrieval(desc, held_out)
        r1_drop = base["R@1"] - scores["R@1"]
        models[precision] = {
            "file": path.name,
            "R@1": scores["R@1"],
            "AP": scores["AP"],
            "R@1_drop": r1_drop,
            "AP_drop": base["AP"] - scores["AP"],
            "cosine_mean": float(cosine.mean()),
            "cosine_min": float(cosine.min()),
        }
        passed &= precision != "int8" or r1_drop <= max_r1_drop
    return {
        "format": REPORT_FORMAT,
        "held_out": {
            "split": "test",
            "task": "drone→satellite",
            "queries": len(held_out.query_paths),
            "gallery": len(held_out.gallery_paths),
            "protocol": base["protocol"],
        },
        "runtime": "onnxruntime CPUExecutionProvider",
        "models": models,
        "max_r1_drop": max_r1_drop,
        "passed": bool(passed),
    }


def fidelity_table(report: dict[str, Any]):
    """A rich table of the report: one row per precision."""
    from rich.table import Table

    held = report["held_out"]
    table = Table(
        title=f"fidelity vs FP32 ({held['queries']} drone queries, {held['gallery']} tiles; "
        f"max R@1 drop {report['max_r1_drop']:g} pt)"
    )
    for column in ("model", "R@1 %", "AP %", "ΔR@1 pt", "ΔAP pt", "cos mean", "cos min"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for precision, row in report["models"].items():
        delta = "R@1_drop" in row
        failed = precision == "int8" and row.get("R@1_drop", 0.0) > report["max_r1_drop"]
        table.add_row(
            f"{precision} ({row['file']})",
            f"{row['R@1']:.2f}",
            f"{row['AP']:.2f}",
            f"{0.0 - row['R@1_drop']:+.2f}" if delta else "—",
            f"{0.0 - row['AP_drop']:+.2f}" if delta else "—",
            f"{row['cosine_mean']:.5f}" if delta else "—",
            f"{row['cosine_min']:.5f}" if delta else "—",
            style="red" if failed else None,
        )
    return table
