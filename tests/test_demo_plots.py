"""The demo's pictures and table count every frame of the flight: seen, dropped and fixed."""

from __future__ import annotations

import json

import cv2
import pytest

from geolink_edge.demo_plots import draw_errors, draw_trajectory, flight_truth, frame_tally
from geolink_edge.runtime.sinks import tally_text

pytest.importorskip("matplotlib")
pytest.importorskip("rasterio")


def _records(truth, dropped, unfixed):
    """What a run logs of the frames it saw: an accepted fix sends an estimate, another status none."""
    records = []
    for frame, (lat, lon) in enumerate(truth):
        if frame in dropped:
            continue
        fixed = frame not in unfixed
        records.append(
            {
                "frame": frame,
                "status": "accepted" if fixed else "no_candidate",
                "truth": {"lat": lat, "lon": lon},
                "estimate": {"lat": lat + 1e-6, "lon": lon} if fixed else None,
                "error_m": 0.1 if fixed else None,
            }
        )
    return records


def test_the_tally_counts_the_whole_flight():
    records = [{"frame": f, "status": "accepted"} for f in (0, 1, 4)] + [{"frame": 5, "status": "gated"}]
    tally = frame_tally(records, 8)
    assert tally == {"seen": [0, 1, 4, 5], "dropped": [2, 3, 6, 7], "fixed": [0, 1, 4], "unfixed": [5]}
    text = tally_text(8, len(tally["seen"]), len(tally["fixed"]))
    assert text == "3 of 8 fixed (37.5 %); 4 seen, 4 dropped; 75.0 % of those seen"


def test_pictures_draw_the_whole_truth_with_dropped_and_unfixed_frames(flight_world, tmp_path):
    flight, _, _ = flight_world
    truth = flight_truth(flight)
    assert len(truth) == json.loads((flight / "flight.json").read_text())["frames"]
    records = _records(truth, dropped=set(range(2, 7)), unfixed={9})
    tally = frame_tally(records, len(truth))
    assert (len(tally["seen"]), len(tally["dropped"]), tally["unfixed"]) == (len(truth) - 5, 5, [9])
    area = json.loads((flight / "flight.json").read_text())["area"]
    ortho = flight.parent / "areas" / area / "ortho.tif"
    for picture in (
        draw_trajectory(records, truth, ortho, tmp_path / "trajectory.png"),
        draw_errors(records, len(truth), tmp_path / "errors.png"),
    ):
        image = cv2.imread(str(picture))
        assert image is not None and min(image.shape[:2]) > 300
