"""Retrieval metrics against values computed by hand on tiny rankings."""

from __future__ import annotations

import math

import numpy as np
import pytest

from geolink_edge.errors import GeolinkError
from geolink_edge.metrics import (
    PROTOCOL_KEPT,
    PROTOCOL_MASKED,
    average_precision,
    evaluate_embeddings,
    ranking,
    top1_percent_rank,
)


def _gallery_in_order(n: int) -> np.ndarray:
    """n unit 2-D descriptors whose similarity to the query (1, 0) decreases with the index."""
    angles = np.linspace(0.0, 1.5, n)
    return np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)


QUERY = np.array([[1.0, 0.0]], np.float32)


def test_ranking_sorts_by_similarity_and_is_stable_on_ties():
    gallery = np.array([[0.0, 1.0], [1.0, 0.0], [0.6, 0.8], [1.0, 0.0]], np.float32)
    assert ranking(QUERY, gallery).tolist() == [[1, 3, 2, 0]]


@pytest.mark.parametrize("rank", [1, 2, 5])
def test_one_correct_item_at_rank_r_gives_ap_one_over_two_r_plus_one(rank):
    # prec = 1/(r+1), old_prec = 0/r = 0 → AP = 1/(2(r+1)) for r > 0
    matches = np.zeros((1, 8), bool)
    matches[0, rank] = True
    assert average_precision(matches)[0] == pytest.approx(1.0 / (2 * (rank + 1)))


def test_correct_item_first_gives_ap_one():
    assert average_precision(np.array([[True, False, False]]))[0] == pytest.approx(1.0)


def test_two_correct_items_at_ranks_zero_and_two():
    # i=0, r=0: (1 + 1)/2 = 1; i=1, r=2: (1/2 + 2/3)/2 = 7/12; AP = (1 + 7/12) / 2 = 19/24
    assert average_precision(np.array([[True, False, True, False]]))[0] == pytest.approx(19 / 24)


def test_query_without_match_is_nan_and_skipped():
    assert math.isnan(average_precision(np.array([[False, False]]))[0])
    labels_g = ["a", "b", "c"]
    out = evaluate_embeddings(np.vstack([QUERY, QUERY]), ["b", "zz"], _gallery_in_order(3), labels_g)
    assert out["queries"] == 1 and out["queries_without_match"] == 1
    assert out["AP"] == pytest.approx(25.0)  # 'b' at rank 1 → 1/4


def test_recall_at_k_and_ap_from_descriptors():
    gallery = _gallery_in_order(12)
    labels = [f"g{i}" for i in range(12)]
    queries = np.vstack([QUERY] * 3)
    # correct item at ranks 0, 4 and 9 → R@1 = 1/3, R@5 = 2/3, R@10 = 3/3
    out = evaluate_embeddings(queries, ["g0", "g4", "g9"], gallery, labels)
    assert out["R@1"] == pytest.approx(100 / 3)
    assert out["R@5"] == pytest.approx(200 / 3)
    assert out["R@10"] == pytest.approx(100.0)
    assert out["AP"] == pytest.approx(100 * (1.0 + 1 / 10 + 1 / 20) / 3)
    assert out["protocol"] == PROTOCOL_KEPT and out["gallery"] == 12


def test_recall_top1_percent_uses_the_official_rank():
    assert top1_percent_rank(150) == 2  # round(1.5) → 2: the top 3 count
    assert top1_percent_rank(951) == 10
    assert top1_percent_rank(40) == 0
    gallery = _gallery_in_order(150)
    labels = np.arange(150)
    hit = evaluate_embeddings(QUERY, [2], gallery, labels)
    miss = evaluate_embeddings(QUERY, [3], gallery, labels)
    assert hit["R@top1%"] == 100.0 and miss["R@top1%"] == 0.0


def test_masked_recall_top1_percent_keeps_the_full_gallery_size():
    # 300 items ranked in order, the last 150 distractors: the top 1% is rank 3 (the top 4) with or
    # without the mask (Sample4Geo's form), not round(1.5) = 2 of the masked 150
    gallery, labels = _gallery_in_order(300), np.arange(300)
    queries = np.vstack([QUERY] * 150)
    kept = evaluate_embeddings(queries, np.arange(150), gallery, labels)
    masked = evaluate_embeddings(queries, np.arange(150), gallery, labels, mask_distractors=True)
    assert masked["gallery"] == 150 and kept["gallery"] == 300
    assert masked["R@top1%"] == pytest.approx(100 * 4 / 150) == kept["R@top1%"]


def test_distractors_kept_by_default_and_masked_on_request():
    gallery = _gallery_in_order(3)
    labels = ["distractor", "a", "b"]
    queries = np.vstack([QUERY, QUERY])
    kept = evaluate_embeddings(queries, ["a", "a"], gallery, labels)
    masked = evaluate_embeddings(queries, ["a", "a"], gallery, labels, mask_distractors=True)
    assert kept["R@1"] == 0.0 and kept["AP"] == pytest.approx(25.0) and kept["gallery"] == 3
    assert masked["R@1"] == 100.0 and masked["AP"] == pytest.approx(100.0) and masked["gallery"] == 1
    assert masked["protocol"] == PROTOCOL_MASKED


def test_sdm_and_top1_error_from_gps():
    gallery = _gallery_in_order(3)
    # gallery positions (lat, lon): ranks 0, 1, 2 at 1e-4, 2e-4 and 0 degrees east of the query
    g_ll = np.array([[0.0, 1e-4], [0.0, 2e-4], [0.0, 0.0]])
    out = evaluate_embeddings(
        QUERY,
        ["c"],
        gallery,
        ["a", "b", "c"],
        query_latlon=np.array([[0.0, 0.0]]),
        gallery_latlon=g_ll,
        sdm_ks=(1, 3),
    )
    assert out["SDM@1"] == pytest.approx(100 * math.exp(-0.5))
    # weights 1, 2/3, 1/3 (sum 2); distances 1e-4, 2e-4, 0 degrees
    expected = (math.exp(-0.5) + 2 / 3 * math.exp(-1.0) + 1 / 3) / 2
    assert out["SDM@3"] == pytest.approx(100 * expected)
    # 1e-4 degree of longitude on the equator = R · 1e-4 · π/180 ≈ 11.12 m
    assert out["top1_error_m"]["mean"] == pytest.approx(6371008.8 * math.radians(1e-4), rel=1e-9)


def test_bad_shapes_are_one_line_errors():
    with pytest.raises(GeolinkError, match="2 labels for 1 descriptors"):
        evaluate_embeddings(QUERY, ["a", "b"], _gallery_in_order(2), ["a", "b"])
    with pytest.raises(GeolinkError, match="descriptor sizes differ"):
        evaluate_embeddings(QUERY, ["a"], np.ones((2, 3), np.float32), ["a", "b"])
    with pytest.raises(GeolinkError, match="non-empty"):
        evaluate_embeddings(QUERY, ["a"], np.zeros((0, 2), np.float32), [])
