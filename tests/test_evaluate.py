"""``geolink-edge eval``: both directions, distractor protocols, GPS metrics, weather, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _train_fixtures import make_dataset

from geolink_edge.data.datasets import open_dataset
from geolink_edge.errors import GeolinkError
from geolink_edge.geo import haversine_m
from geolink_edge.metrics import PROTOCOL_KEPT, PROTOCOL_MASKED, evaluate_embeddings
from geolink_edge.train import evaluate as stage


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("evaldata"), train=2, test=4, distractors=3, views=2)


def test_report_scores_both_directions_with_distractors_kept(tiny_checkpoint, dataset, tmp_path):
    out = tmp_path / "report.json"
    report = stage.main(tiny_checkpoint, dataset, json_out=out, quiet=True)
    saved = json.loads(out.read_text())
    assert saved["protocol"] == PROTOCOL_KEPT
    d2s, s2d = saved["drone->satellite"], saved["satellite->drone"]
    assert (d2s["queries"], d2s["gallery"]) == (8, 7)  # 4 locations × 2 views; 4 + 3 distractor tiles
    assert (s2d["queries"], s2d["gallery"]) == (4, 8)
    for key in ("R@1", "R@5", "R@10", "R@top1%", "AP", "SDM@1", "SDM@3", "SDM@5", "SDM@10"):
        assert 0.0 <= d2s[key] <= 100.0
    assert d2s["R@1"] <= d2s["R@5"] <= d2s["R@10"] == 100.0  # 7 gallery tiles: all within 10
    assert report["model_hash"] == saved["model_hash"]


def test_scores_equal_the_numpy_metrics_on_the_same_descriptors(tiny_checkpoint, tiny_encoder, dataset):
    """The stage is only embedding + metrics: recompute the drone→satellite AP from descriptors."""
    data = open_dataset(dataset)
    card = tiny_encoder.card
    q = stage.embed_paths(tiny_encoder, card, [i.path for i in data.query_drone], quiet=True)
    g = stage.embed_paths(tiny_encoder, card, [i.path for i in data.gallery_satellite], quiet=True)
    expected = evaluate_embeddings(
        q,
        [i.location for i in data.query_drone],
        g,
        [i.location for i in data.gallery_satellite],
        mask_distractors=True,
    )
    got = stage.main(tiny_checkpoint, dataset, mask_distractors=True, quiet=True)["drone->satellite"]
    assert got["protocol"] == PROTOCOL_MASKED and got["gallery"] == 4
    assert got["AP"] == pytest.approx(expected["AP"], abs=1e-4)
    assert np.allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    # the top-1 error in metres: each query's GPS against that of the tile it ranked first
    kept = [i for i, item in enumerate(data.gallery_satellite) if item.location in data.test_locations()]
    first = np.array(kept)[np.argmax(q @ g[kept].T, axis=1)]
    errors = [
        haversine_m(*data.gps[query.location], *data.gps[data.gallery_satellite[j].location])
        for query, j in zip(data.query_drone, first, strict=True)
    ]
    assert max(errors) > 0  # the tiny model misplaces some queries: the figure is not trivially 0
    assert got["top1_error_m"]["median"] == pytest.approx(float(np.median(errors)), abs=0.01)


def test_weather_changes_the_drone_queries_only(tiny_checkpoint, dataset):
    report = stage.main(tiny_checkpoint, dataset, weather=["fog-rain"], quiet=True)
    assert set(report["weather"]) == {"fog-rain"} and report["weather_applied_to"] == "drone queries"
    foggy = report["weather"]["fog-rain"]
    assert foggy["gallery"] == report["drone->satellite"]["gallery"]
    assert foggy != report["drone->satellite"]  # other descriptors, other scores (or at least AP)


def test_unknown_weather_and_bad_batch_size_are_refused(tiny_checkpoint, dataset):
    with pytest.raises(GeolinkError, match="unknown weather 'smog'"):
        stage.parse_weather("fog,smog")
    with pytest.raises(GeolinkError, match="--batch-size"):
        stage.main(tiny_checkpoint, dataset, batch_size=0)


def test_cli_prints_the_protocol_and_refuses_a_corrupt_checkpoint(cli, tiny_checkpoint, dataset, tmp_path):
    ok = cli("eval", str(tiny_checkpoint), str(dataset), "--batch-size", "4")
    assert ok.returncode == 0, ok.stderr[-500:]
    assert "distractors kept" in ok.stdout and "drone->satellite" in ok.stdout
    broken = tmp_path / "broken.pt"
    broken.write_bytes(Path(tiny_checkpoint).read_bytes()[:3000])
    bad = cli("eval", str(broken), str(dataset))
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and bad.stderr.strip().count("\n") == 0
    assert "broken.pt" in bad.stderr
