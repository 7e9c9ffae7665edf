"""Fidelity of the reduced-precision ONNX models against FP32, on held-out images, through ONNX Runtime.

The raw cosine between the FP32 and the candidate descriptor of one image flatters: descriptors of
*different* images already share a common component (``cosine_between_images`` of the FP32 row:
0.94 on average for a tiny model trained one epoch with the second-view L_sc, 0.58 for the demo's),
so an error that reorders neighbours can leave it at 0.9999. The report therefore also gives the
cosine after centring both descriptors on the FP32 mean of their own kind (drone queries on the
queries' mean, satellite tiles on the gallery's: the two views do not share a common component),
its mean and a low percentile, the agreement of each query's top-1 and top-5 gallery neighbours,
the queries whose R@1 hit flips either way, and R@1 / AP of drone→satellite retrieval on the whole
test split. An INT8 model that loses more than ``max_r1_drop`` R@1 points, or whose centred cosine
has a mean below ``min_centred_cosine`` or a 1st percentile below ``min_centred_cosine_low`` (a few
images may be damaged while the mean looks fine), fails the export, after the reports are written
and the table printed.
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
from geolink_edge.metrics import evaluate_embeddings, ranking

REPORT_FORMAT = "geolink-edge/fidelity-report/1"
CALIBRATION_FORMAT = "geolink-edge/calibration-report/1"
DEFAULT_MAX_QUERIES = None  # the whole test split
# 0.99: the discriminative (centred) part of a descriptor may move by at most about
# sqrt(2·(1 − 0.99)) ≈ 14 % of its length on average; the demo's INT8 model measures 0.9996
DEFAULT_MIN_CENTRED_COSINE = 0.99
# 0.95 for the worst 1 % of images: their centred part may move by at most about 32 % of its length
# (set from that reading, not from a measured model)
DEFAULT_MIN_CENTRED_COSINE_LOW = 0.95
LOW_PERCENTILE = 1
AGREEMENT_K = 5


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


def held_out_set(data: CrossViewData, max_queries: int | None = DEFAULT_MAX_QUERIES) -> HeldOut:
    """The test split's drone→satellite task: every query, or ``max_queries`` evenly spread."""
    if max_queries is not None and max_queries < 1:
        raise GeolinkError(f"--fidelity-queries must be >= 1, got {max_queries}")
    if not data.query_drone or not data.gallery_satellite:
        raise GeolinkError(
            f"{data.root}: the fidelity check needs test/query_drone and test/gallery_satellite"
        )
    queries = data.query_drone
    if max_queries is not None and len(queries) > max_queries:
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


def centred_cosine(desc: np.ndarray, reference: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Per-row cosine of ``desc`` and ``reference`` after subtracting ``centre`` (one row for all,
    or one per row) from both."""
    a, b = desc - centre, reference - centre
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.sum(a * b, axis=1) / np.maximum(norms, 1e-12)


def neighbour_agreement(
    desc: np.ndarray, reference: np.ndarray, n_queries: int, k: int = AGREEMENT_K
) -> float:
    """Mean share of each query's top-k gallery items that the candidate and FP32 have in common."""
    ours = ranking(desc[:n_queries], desc[n_queries:], depth=k)
    theirs = ranking(reference[:n_queries], reference[n_queries:], depth=k)
    common = [len(set(a) & set(b)) for a, b in zip(ours, theirs, strict=True)]
    return float(np.mean(common)) / ours.shape[1]


def view_centres(reference: np.ndarray, n_queries: int) -> np.ndarray:
    """One centre per row: the FP32 mean of the drone queries for queries, of the gallery for tiles."""
    centres = np.empty_like(reference)
    centres[:n_queries] = reference[:n_queries].mean(axis=0)
    centres[n_queries:] = reference[n_queries:].mean(axis=0)
    return centres


def top1_changes(desc: np.ndarray, reference: np.ndarray, held_out: HeldOut) -> dict[str, Any]:
    """Share of queries whose nearest tile is the FP32 one, and the queries whose R@1 hit flips:
    ``lost`` (FP32 right, candidate wrong) and ``gained`` (the reverse), as ``location/file``."""
    n = len(held_out.query_paths)
    ours = ranking(desc[:n], desc[n:], depth=1)[:, 0]
    theirs = ranking(reference[:n], reference[n:], depth=1)[:, 0]
    labels, gallery = np.asarray(held_out.query_labels), np.asarray(held_out.gallery_labels)
    hit_ours, hit_theirs = gallery[ours] == labels, gallery[theirs] == labels

    def names(mask: np.ndarray) -> list[str]:
        return [f"{labels[i]}/{held_out.query_paths[i].name}" for i in np.flatnonzero(mask)]

    return {
        "top1_agreement": float(np.mean(ours == theirs)),
        "r1_lost": names(hit_theirs & ~hit_ours),
        "r1_gained": names(hit_ours & ~hit_theirs),
    }


def cosine_between_images(desc: np.ndarray) -> float:
    """Mean cosine between the descriptors of two different images (rows are unit vectors)."""
    n = desc.shape[0]
    total = desc.sum(axis=0, dtype=np.float64)
    return float((total @ total - n) / max(n * (n - 1), 1))


def _gate_failures(
    row: dict[str, Any], max_r1_drop: float, min_centred_cosine: float, min_centred_cosine_low: float
) -> list[str]:
    failures = []
    if row["R@1_drop"] > max_r1_drop:
        failures.append(f"R@1 drop {row['R@1_drop']:.2f} points exceeds --max-r1-drop {max_r1_drop:g}")
    centred = row["centred_cosine_mean"]
    if centred < min_centred_cosine:
        failures.append(f"centred cosine {centred:.4f} is below --min-centred-cosine {min_centred_cosine:g}")
    low = row[f"centred_cosine_p{LOW_PERCENTILE}"]
    if low < min_centred_cosine_low:
        failures.append(
            f"centred cosine's {LOW_PERCENTILE}st percentile {low:.4f} is below {min_centred_cosine_low:g}"
        )
    return failures


def fidelity_report(
    fp32_onnx: Path,
    candidates: dict[str, Path],
    held_out: HeldOut,
    max_r1_drop: float,
    min_centred_cosine: float = DEFAULT_MIN_CENTRED_COSINE,
    min_centred_cosine_low: float = DEFAULT_MIN_CENTRED_COSINE_LOW,
) -> dict[str, Any]:
    """Compare each candidate (``{"int8": path, "fp16": path}``) with the FP32 model; only INT8 gates."""
    reference = onnx_descriptors(fp32_onnx, held_out)
    n_queries = len(held_out.query_paths)
    centre = view_centres(reference, n_queries)
    base = retrieval(reference, held_out)
    models: dict[str, Any] = {
        "fp32": {
            "file": fp32_onnx.name,
            "R@1": base["R@1"],
            "AP": base["AP"],
            "cosine_between_images": cosine_between_images(reference),
        }
    }
    failures: list[str] = []
    for precision, path in candidates.items():
        desc = onnx_descriptors(path, held_out)
        cosine = np.sum(desc * reference, axis=1)
        centred = centred_cosine(desc, reference, centre)
        scores = retrieval(desc, held_out)
        row = models[precision] = {
            "file": path.name,
            "R@1": scores["R@1"],
            "AP": scores["AP"],
            "R@1_drop": base["R@1"] - scores["R@1"],
            "AP_drop": base["AP"] - scores["AP"],
            "cosine_mean": float(cosine.mean()),
            "cosine_min": float(cosine.min()),
            "centred_cosine_mean": float(centred.mean()),
            f"centred_cosine_p{LOW_PERCENTILE}": float(np.percentile(centred, LOW_PERCENTILE)),
            "centred_cosine_min": float(centred.min()),
            f"top{AGREEMENT_K}_agreement": neighbour_agreement(desc, reference, n_queries),
            **top1_changes(desc, reference, held_out),
        }
        if precision == "int8":
            gates = _gate_failures(row, max_r1_drop, min_centred_cosine, min_centred_cosine_low)
            failures += [f"INT8 {f}" for f in gates]
    return {
        "format": REPORT_FORMAT,
        "held_out": {
            "split": "test",
            "task": "drone→satellite",
            "queries": n_queries,
            "gallery": len(held_out.gallery_paths),
            "protocol": base["protocol"],
            "centre": "FP32 mean of the drone queries (queries), of the gallery (tiles)",
        },
        "runtime": "onnxruntime CPUExecutionProvider",
        "models": models,
        "max_r1_drop": max_r1_drop,
        "min_centred_cosine": min_centred_cosine,
        f"min_centred_cosine_p{LOW_PERCENTILE}": min_centred_cosine_low,
        "passed": not failures,
        "failures": failures,
    }


def fidelity_table(report: dict[str, Any]):
    """A rich table of the report: one row per precision."""
    from rich.table import Table

    held = report["held_out"]
    fp32 = report["models"]["fp32"]
    table = Table(
        title=f"fidelity vs FP32 ({held['queries']} drone queries, {held['gallery']} tiles; gates: "
        f"R@1 drop ≤ {report['max_r1_drop']:g} pt, centred cosine mean ≥ {report['min_centred_cosine']:g}, "
        f"p{LOW_PERCENTILE} ≥ {report[f'min_centred_cosine_p{LOW_PERCENTILE}']:g}; "
        f"FP32 cosine between different images {fp32['cosine_between_images']:.3f})"
    )
    columns = (
        "model",
        "R@1 %",
        "AP %",
        "ΔR@1 pt",
        "ΔAP pt",
        "cos mean/min",
        f"centred mean/p{LOW_PERCENTILE}/min",
        "top-1 / top-5 agree",
        "R@1 flips −/+",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "model" else "right")
    for precision, row in report["models"].items():
        if "R@1_drop" not in row:
            table.add_row(f"{precision} ({row['file']})", f"{row['R@1']:.2f}", f"{row['AP']:.2f}", *["—"] * 6)
            continue
        failed = precision == "int8" and not report["passed"]
        table.add_row(
            f"{precision} ({row['file']})",
            f"{row['R@1']:.2f}",
            f"{row['AP']:.2f}",
            f"{0.0 - row['R@1_drop']:+.2f}",
            f"{0.0 - row['AP_drop']:+.2f}",
            f"{row['cosine_mean']:.4f} / {row['cosine_min']:.4f}",
            f"{row['centred_cosine_mean']:.4f} / {row[f'centred_cosine_p{LOW_PERCENTILE}']:.4f} / "
            f"{row['centred_cosine_min']:.4f}",
            f"{row['top1_agreement']:.3f} / {row[f'top{AGREEMENT_K}_agreement']:.3f}",
            f"{len(row['r1_lost'])} / {len(row['r1_gained'])}",
            style="red" if failed else None,
        )
    return table
