"""Retrieval metrics on descriptors (numpy only, so exported models can be scored without torch).

Protocols:
- **University-1652** (official): Recall@K is the CMC curve at rank K; Recall@top1% is the CMC at
  0-based rank ``round(0.01 · gallery size)``; AP of one query sums, over its correct gallery items
  ``i`` (0-based) at 0-based rank ``r_i``, ``(old_prec + prec) / 2 / n_good`` with
  ``prec = (i+1)/(r_i+1)`` and ``old_prec = i/r_i`` (1 when ``r_i = 0``). Gallery items whose
  location never appears among the queries (distractors) stay in the ranking by default; the
  ``mask_distractors`` variant drops them, as Sample4Geo-derived code does, and like that code keeps
  the full gallery's size for the top-1% rank.
- **DenseUAV SDM@K**: ``Σ_{i≤K} w_i exp(−5000 d_i) / Σ w_i`` with ``w_i = 1 − (i−1)/K`` and ``d_i``
  the Euclidean distance in degrees between the query's (lon, lat) and the i-th result's.

Queries with no correct item in the gallery are left out of every average and counted.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from geolink_edge.errors import GeolinkError
from geolink_edge.geo import haversine_m

PROTOCOL_KEPT = "university-1652 (distractors kept)"
PROTOCOL_MASKED = "masked (gallery ids absent from the queries removed)"
RECALL_KS = (1, 5, 10)
SDM_KS = (1, 3, 5, 10)


def ranking(
    query_desc: np.ndarray, gallery_desc: np.ndarray, depth: int | None = None, chunk: int = 1024
) -> np.ndarray:
    """Gallery indices sorted by decreasing inner product for every query: (Q, depth or G) int64.

    Ties keep gallery order (stable sort), so hand-made cases have one answer.
    """
    query_desc = np.asarray(query_desc, dtype=np.float32)
    gallery_desc = np.asarray(gallery_desc, dtype=np.float32)
    depth = gallery_desc.shape[0] if depth is None else min(depth, gallery_desc.shape[0])
    out = np.empty((query_desc.shape[0], depth), dtype=np.int64)
    for start in range(0, query_desc.shape[0], chunk):
        sims = query_desc[start : start + chunk] @ gallery_desc.T
        out[start : start + chunk] = np.argsort(-sims, axis=1, kind="stable")[:, :depth]
    return out


def ranked_matches(order: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray) -> np.ndarray:
    """(Q, G) bool: is the gallery item at each rank of each query's ranking a correct match."""
    return gallery_labels[order] == query_labels[:, None]


def average_precision(matches: np.ndarray) -> np.ndarray:
    """University-1652 AP of each row of a (Q, G) bool ranking; NaN for rows with no match."""
    matches = np.asarray(matches, dtype=bool)
    n_good = matches.sum(axis=1)
    hits = np.cumsum(matches, axis=1)  # i + 1 at the rank of the (i+1)-th correct item
    rank = np.arange(matches.shape[1], dtype=np.float64)[None, :]
    prec = hits / (rank + 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        old_prec = np.where(rank == 0, 1.0, (hits - 1) / rank)
    area = np.where(matches, (old_prec + prec) / 2.0, 0.0).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n_good > 0, area / n_good, np.nan)


def first_hit(matches: np.ndarray) -> np.ndarray:
    """0-based rank of the first correct item of each row; -1 for rows with no match."""
    found = matches.any(axis=1)
    return np.where(found, matches.argmax(axis=1), -1)


def recall_at(first: np.ndarray, k: int) -> float:
    """Fraction of (answerable) queries whose first correct item is within the top k."""
    first = first[first >= 0]
    return float(np.mean(first < k)) if first.size else float("nan")


def top1_percent_rank(gallery_size: int) -> int:
    """0-based CMC index used for Recall@top1% by the official University-1652 code."""
    return min(round(0.01 * gallery_size), gallery_size - 1)


def sdm_at(order: np.ndarray, query_lonlat: np.ndarray, gallery_lonlat: np.ndarray, k: int) -> np.ndarray:
    """DenseUAV SDM@K of each query (positions in degrees, (lon, lat))."""
    k = min(k, order.shape[1])
    dist = np.linalg.norm(gallery_lonlat[order[:, :k]] - query_lonlat[:, None, :], axis=2)
    weights = 1.0 - np.arange(k) / k
    return (np.exp(-5000.0 * dist) * weights).sum(axis=1) / weights.sum()


def top1_error_m(order: np.ndarray, query_latlon: np.ndarray, gallery_latlon: np.ndarray) -> np.ndarray:
    """Great-circle distance (m) between each query and its top-1 gallery item."""
    best = gallery_latlon[order[:, 0]]
    return haversine_m(query_latlon[:, 0], query_latlon[:, 1], best[:, 0], best[:, 1])


def _check_pair(desc: np.ndarray, labels: np.ndarray, what: str) -> None:
    if desc.ndim != 2 or desc.shape[0] == 0:
        raise GeolinkError(f"{what}: expected a non-empty (N, D) descriptor array, got shape {desc.shape}")
    if labels.shape != (desc.shape[0],):
        raise GeolinkError(f"{what}: {labels.shape[0]} labels for {desc.shape[0]} descriptors")


def evaluate_embeddings(
    query_desc: np.ndarray,
    query_labels: Sequence,
    gallery_desc: np.ndarray,
    gallery_labels: Sequence,
    *,
    mask_distractors: bool = False,
    query_latlon: np.ndarray | None = None,
    gallery_latlon: np.ndarray | None = None,
    recall_ks: Sequence[int] = RECALL_KS,
    sdm_ks: Sequence[int] = SDM_KS,
) -> dict:
    """Score one retrieval direction. Descriptors are L2-normalised rows; labels are location ids.

    Returns percentages ``R@K``, ``R@top1%``, ``AP`` and, when both GPS arrays (degrees, (lat, lon)
    per row) are given, ``SDM@K`` (percent) and ``top1_error_m`` (mean / median / p90), plus the
    protocol, the gallery size and the number of queries used and skipped.
    """
    query_desc, gallery_desc = np.asarray(query_desc), np.asarray(gallery_desc)
    query_labels, gallery_labels = np.asarray(query_labels), np.asarray(gallery_labels)
    _check_pair(query_desc, query_labels, "queries")
    _check_pair(gallery_desc, gallery_labels, "gallery")
    if query_desc.shape[1] != gallery_desc.shape[1]:
        raise GeolinkError(
            f"descriptor sizes differ: queries {query_desc.shape[1]}, gallery {gallery_desc.shape[1]}"
        )
    with_gps = query_latlon is not None and gallery_latlon is not None
    top1_percent = top1_percent_rank(gallery_labels.shape[0])
    if mask_distractors:
        keep = np.isin(gallery_labels, query_labels)
        gallery_desc, gallery_labels = gallery_desc[keep], gallery_labels[keep]
        gallery_latlon = gallery_latlon[keep] if with_gps else None

    order = ranking(query_desc, gallery_desc)
    matches = ranked_matches(order, query_labels, gallery_labels)
    ap = average_precision(matches)
    first = first_hit(matches)
    answerable = first >= 0
    size = gallery_labels.shape[0]
    result: dict = {
        "protocol": PROTOCOL_MASKED if mask_distractors else PROTOCOL_KEPT,
        "queries": int(answerable.sum()),
        "queries_without_match": int((~answerable).sum()),
        "gallery": int(size),
    }
    for k in recall_ks:
        result[f"R@{k}"] = 100.0 * recall_at(first, k)
    result["R@top1%"] = 100.0 * recall_at(first, min(top1_percent, size - 1) + 1)
    result["AP"] = 100.0 * float(np.nanmean(ap)) if answerable.any() else float("nan")
    if with_gps:
        q_ll = np.asarray(query_latlon, dtype=np.float64)
        g_ll = np.asarray(gallery_latlon, dtype=np.float64)
        for k in sdm_ks:
            result[f"SDM@{k}"] = 100.0 * float(np.mean(sdm_at(order, q_ll[:, ::-1], g_ll[:, ::-1], k)))
        err = top1_error_m(order, q_ll, g_ll)
        result["top1_error_m"] = {
            "mean": float(err.mean()),
            "median": float(np.median(err)),
            "p90": float(np.percentile(err, 90)),
        }
    return result
