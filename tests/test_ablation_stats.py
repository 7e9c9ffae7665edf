"""The ablation benchmark's statistics and splits: comparisons, paired differences with t and
place-bootstrap intervals, the Point-NN/tile distance rank correlation, the held-out places."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from _dataset_fixtures import write_university1652

from geolink_edge.data.datasets import open_dataset

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "ablation.py"


@pytest.fixture(scope="module")
def ablation():
    spec = importlib.util.spec_from_file_location("ablation_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(variant: str, seed: int, r1: float) -> dict:
    return {"variant": variant, "seed": seed, "cross-style d2s R@1": r1}


def test_each_term_is_compared_with_the_baseline_and_with_mme(ablation):
    pairs = ablation.comparisons(list(ablation.VARIANTS))
    assert ("+L_ga", "baseline") in pairs and ("+L_ga", "+MME") in pairs
    assert ("+MME", "baseline") in pairs and ("+MME", "+MME") not in pairs
    # the second-view rows see twice the images per step: also against the compute-matched run
    assert ("+L_sc (second view)", "+MME (2× steps)") in pairs and (
        "full (best forms)",
        "+MME (2× steps)",
    ) in pairs
    assert ("+L_sc (paper: self)", "+MME (2× steps)") not in pairs
    for variant in ablation.VARIANTS:
        if variant not in ("baseline", *ablation.THREE_D_ONLY):
            assert (variant, "+MME") in pairs
    # a reference that was not run is not compared with
    assert ablation.comparisons(["baseline", "+L_ga"]) == [("+L_ga", "baseline")]


def test_paired_differences_and_the_t_interval_by_hand(ablation):
    rows = [_row("baseline", s, v) for s, v in enumerate((10.0, 12.0, 10.0))]
    rows += [_row("+MME", s, v) for s, v in enumerate((12.0, 15.0, 11.0, 30.0))]  # seed 3: no baseline
    seeds, diffs = ablation.paired(rows, "+MME", "baseline", "cross-style d2s R@1")
    assert seeds == [0, 1, 2] and diffs.tolist() == [2.0, 3.0, 1.0]
    # mean 2, std 1, t(0.975, 2 df) = 4.3027: half-width 4.3027/√3
    mean, half = ablation.t_interval(diffs)
    assert mean == 2.0 and half == pytest.approx(4.302653 / np.sqrt(3), rel=1e-5)
    assert ablation.interval_text(mean, half) == "+2.0 [-0.5, +4.5]"
    one = ablation.t_interval(np.array([1.5]))
    assert one[0] == 1.5 and np.isnan(one[1]) and ablation.interval_text(*one) == "+1.5 (1 seed)"


def test_place_bootstrap_by_hand(ablation):
    # two places, two queries each, per-place mean differences 0 and 1: a resample holds (a, a),
    # (a, b) or (b, b) with probabilities 1/4, 1/2, 1/4, so the 95 % interval is [0, 100] points
    diff, places = np.array([0.0, 0.0, 1.0, 1.0]), ["a", "a", "b", "b"]
    assert ablation.place_bootstrap(diff, places) == (0.0, 100.0)
    # one place's queries move together: the interval is that of 4 places, not of 16 queries
    clustered = np.repeat([1.0, 0.0, 0.0, 0.0], 4)
    low, high = ablation.place_bootstrap(clustered, np.repeat(list("abcd"), 4))
    assert low == 0.0 and high >= 75.0
    # identical places: no spread
    assert ablation.place_bootstrap(np.full(6, 0.5), list("aabbcc")) == pytest.approx((50.0, 50.0))


def test_distance_rank_correlation_by_hand(ablation):
    a = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])  # angles 0°, 36.9°, 90°
    # the same arrangement at another scale: ranks agree
    assert ablation.distance_rank_correlation(a, 3 * a) == pytest.approx(1.0)
    # distances (ab, ac, bc) ranked (1, 3, 2) for a; b below: angles 0°, 80°, 90° -> (2, 3, 1)
    b = np.array([[1.0, 0.0], [np.cos(np.radians(80)), np.sin(np.radians(80))], [0.0, 1.0]])
    # Spearman 1 − 6·Σd²/(n(n²−1)), d = (−1, 0, 1): 1 − 12/24
    assert ablation.distance_rank_correlation(a, b) == pytest.approx(0.5)


def test_top1_hits_follow_the_nearest_gallery_item(ablation):
    gallery = np.eye(3)
    queries = np.array([[0.9, 0.1, 0.0], [0.0, 0.2, 0.8], [0.6, 0.4, 0.0]])
    hits = ablation.top1_hits(queries, ["x", "z", "y"], gallery, ["x", "y", "z"])
    assert hits.tolist() == [True, True, False]


def test_in_style_split_holds_training_places_out_of_training(ablation, tmp_path):
    root = write_university1652(tmp_path / "world", train_ids=tuple(f"{i:04d}" for i in range(1, 9)))
    world = open_dataset(root)
    held = ablation.in_style_places(world)
    assert held == ["0001", "0005"]  # every 4th training place
    split = ablation.in_style_split(world, held)
    assert {q.location for q in split.query_drone} == set(held)
    assert len(split.query_drone) == sum(len(world.train_drone[p]) for p in held)
    assert sorted({g.location for g in split.gallery_satellite}) == sorted(world.train_satellite)
    view = ablation.training_view(root, tmp_path / "view", set(held))
    for kind in ("drone", "satellite"):
        kept = sorted(p.name for p in (view / "train" / kind).iterdir())
        assert kept == sorted(set(world.train_drone) - set(held))
    assert not (view / "test").exists()
