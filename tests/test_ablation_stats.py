"""The ablation benchmark's statistics: paired differences by seed and the standard errors of R@1."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "ablation.py"


@pytest.fixture(scope="module")
def ablation():
    spec = importlib.util.spec_from_file_location("ablation_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(variant: str, seed: int, r1: float) -> dict:
    return {"variant": variant, "seed": seed, "d2s R@1": r1, "d2s AP": r1, "s2d R@1": r1}


def test_paired_difference_and_its_standard_error_by_hand(ablation):
    rows = [_row("baseline", s, v) for s, v in enumerate((10.0, 12.0, 10.0))]
    rows += [_row("+MME", s, v) for s, v in enumerate((12.0, 15.0, 11.0, 30.0))]  # seed 3: no baseline
    values, base = ablation.paired(rows, "+MME", "d2s R@1")
    np.testing.assert_array_equal(values, [12.0, 15.0, 11.0])
    np.testing.assert_array_equal(base, [10.0, 12.0, 10.0])
    # differences 2, 3, 1: mean 2, std 1, standard error 1/√3
    assert ablation.difference(values, base) == f"+2.0 ± {1 / np.sqrt(3):.1f}"
    assert ablation.mean_std(np.array([10.0, 12.0, 14.0])) == "12.0 ± 2.0"
    table = ablation.table(rows)
    assert "| baseline | 3 | 10.7 ± 1.2 | — |" in table
    assert "| +MME | 4 | 17.0 ± 8.8 | +2.0 ± 0.6 |" in table


def test_binomial_and_place_clustered_standard_errors_by_hand(ablation):
    hits = np.array([1, 1, 0, 0, 1, 0, 0, 0], dtype=bool)
    places = ["a"] * 4 + ["b"] * 4
    binomial, clustered = ablation.standard_errors(hits, places)
    assert binomial == pytest.approx(100 * np.sqrt(3 / 8 * 5 / 8 / 8))
    # per-place hit rates 0.5 and 0.25: std 0.1768, over √2 places
    assert clustered == pytest.approx(100 * 0.125)


def test_top1_hits_follow_the_nearest_gallery_item(ablation):
    gallery = np.eye(3)
    queries = np.array([[0.9, 0.1, 0.0], [0.0, 0.2, 0.8], [0.6, 0.4, 0.0]])
    hits = ablation.top1_hits(queries, ["x", "z", "y"], gallery, ["x", "y", "z"])
    assert hits.tolist() == [True, True, False]
