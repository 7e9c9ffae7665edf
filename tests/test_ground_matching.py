"""Verification at one ground resolution on synthetic flights the old crops struggled with: a map of
another season, a low flight over a coarse map, a camera nothing is known about, and ``--near``."""

from __future__ import annotations

import numpy as np
import pytest
from _runtime_fixtures import synthetic_flight_world

from geolink_edge.cli import main as cli_main
from geolink_edge.runtime import loop
from geolink_edge.runtime.locate import LocateConf
from geolink_edge.runtime.sources import Frame, open_reader

FRAMES = 16  # 2 fps, 10 m/s: 75 m of flight


def _world(root, tiny_onnx, frames: int = FRAMES, area_px: int = 1024, **options):
    flight, index, _ = synthetic_flight_world(root, tiny_onnx, frames, area_px, **options)
    return flight, index


@pytest.fixture(scope="module")
def season(tmp_path_factory, tiny_onnx):
    return _world(tmp_path_factory.mktemp("season"), tiny_onnx, map_season="winter")


@pytest.fixture(scope="module")
def low(tmp_path_factory, tiny_onnx):
    return _world(tmp_path_factory.mktemp("low"), tiny_onnx, flight_altitude=40.0, map_gsd=0.5)


def _fly(
    flight, index, model, conf: loop.RunConf, camera: bool = True, frames: int = FRAMES, blank=()
) -> list[dict]:
    """Every frame of a sim flight through the pipeline; ``camera=False`` hides the intrinsics and
    the attitude, as on a video with no telemetry; the frames numbered in ``blank`` see only grey."""
    from geolink_edge.backends import load_embedder
    from geolink_edge.index.search import TileIndex
    from geolink_edge.runtime.intrinsics import load_intrinsics

    reader = open_reader(f"sim://{flight}")
    intrinsics = load_intrinsics(flight / "camera.yaml") if camera else None
    pipeline = loop.Pipeline(load_embedder(model), TileIndex.load(index), conf, intrinsics)
    records = []
    for i in range(frames):
        raw = reader.read()
        t = raw.timestamp
        telemetry = raw.telemetry if camera else None
        image = np.full_like(raw.image, 128) if i in blank else raw.image
        records.append(pipeline.process(Frame(image, i, t, t, 0.0, raw.truth, telemetry)))
    return records


def _rates(records: list[dict]) -> tuple[float, float]:
    accepted = [r for r in records if r["status"] == "accepted"]
    return len(accepted) / len(records), float(np.median([r["fix_error_m"] for r in accepted]))


def test_another_season_is_localized_through_map_windows(season, tiny_onnx):
    flight, index = season
    records = _fly(flight, index, tiny_onnx, loop.RunConf(realtime=False))
    fix_rate, median = _rates(records)
    assert fix_rate >= 14 / 16  # the first frame only starts the track
    assert median <= 1.5
    fixes = [r["fix"] for r in records if r["fix"]["ok"]]
    assert all(f["window"] is not None and f["consensus"] == "votes" for f in fixes)
    assert {f["window"][3] for f in fixes} == {0.25}  # one matching GSD: half the 0.5 m/px frame


def test_low_flight_over_a_coarse_map_fixes_its_textured_stretch(low, tiny_onnx):
    """40 m above ground, 0.14 m/px frames against a 0.5 m/px map. Over the lawns and scattered
    crowns of the first 10 frames SIFT gathers 4 to 7 agreeing votes, shape-checked or not: the
    bound is on the stretch over roads and roofs (6 of these 16 frames), and on the accuracy of
    what is fixed."""
    flight, index = low
    records = _fly(flight, index, tiny_onnx, loop.RunConf(realtime=False, near=_start(flight, 60.0)))
    fixed = [r for r in records if r["fix"]["ok"]]
    assert len(fixed) >= 5
    # tree crowns 10 m up stand 25 % closer to a 40 m camera: their votes pull the position off
    assert np.median([r["fix_error_m"] for r in fixed]) <= 4.0
    assert max(r["fix_error_m"] for r in fixed) <= 8.0


LONG_LOW_FRAMES = 40  # 200 m over houses, gardens and trees


@pytest.fixture(scope="module")
def long_low(tmp_path_factory, tiny_onnx):
    """The matching benchmark's low flight: 40 m above a 2048-px area mapped at 0.5 m/px."""
    root = tmp_path_factory.mktemp("long_low")
    return _world(root, tiny_onnx, LONG_LOW_FRAMES, 2048, flight_altitude=40.0, map_gsd=0.5)


def test_low_flight_keeps_its_track_over_roofs_and_trees(long_low, tiny_onnx):
    """Over roofs and tree crowns seen from 40 m the ratio test kept almost no true SIFT match
    against the blurred 0.5 m/px map (27 % of frames accepted); north-up views matched by keypoint
    orientation and size accepted 70 %, guided and averaged views 90 % and more (the measured rate:
    benchmarks/matching.py, benchmarks/RESULTS.md). The floor here tells a kept track from a lost one."""
    flight, index = long_low
    conf = loop.RunConf(realtime=False, near=_start(flight, 60.0))
    records = _fly(flight, index, tiny_onnx, conf, frames=LONG_LOW_FRAMES)
    fix_rate, median = _rates(records)
    assert fix_rate >= 0.75
    assert median <= 3.0
    assert max(r["fix_error_m"] for r in records if r["status"] == "accepted") <= 8.0


def test_the_coarser_retry_verifies_the_windows_again(season, tiny_onnx):
    """A frame no window verifies (noise) is matched once more, at the map's own GSD by default."""
    from geolink_edge.backends import load_embedder
    from geolink_edge.index.search import TileIndex
    from geolink_edge.runtime.intrinsics import load_intrinsics

    flight, index = season
    raw = open_reader(f"sim://{flight}").read()
    noise = np.random.default_rng(0).integers(0, 256, raw.image.shape, dtype=np.uint8)

    def fix(**locate) -> dict:
        conf = loop.RunConf(realtime=False, near=_start(flight, 60.0), locate=LocateConf(**locate))
        intrinsics = load_intrinsics(flight / "camera.yaml")
        pipeline = loop.Pipeline(load_embedder(tiny_onnx), TileIndex.load(index), conf, intrinsics)
        return pipeline.process(Frame(noise, 0, 0.0, 0.0, 0.0, raw.truth, raw.telemetry))["fix"]

    once, twice = fix(retry_gsd_factor=1.0), fix()
    assert not once["ok"] and not twice["ok"]
    assert twice["verified"] == 2 * once["verified"] > 0


def test_an_unknown_camera_is_measured_by_its_first_fix(season, tiny_onnx):
    """No intrinsics, no attitude: GSD guesses and homographies until a fix, then the frame's GSD
    and heading from that fix turn the next frames north-up for the position votes."""
    flight, index = season
    conf = loop.RunConf(realtime=False, near=_start(flight, 80.0))
    pipeline_records = _fly(flight, index, tiny_onnx, conf, camera=False)
    fix_rate, median = _rates(pipeline_records)
    assert fix_rate >= 12 / 16
    assert median <= 5.0  # the frame centre, 12 m σ: no nadir pixel without the camera
    assert {r["fix"]["search"] for r in pipeline_records[:1]} == {"area"}
    assert "votes" in {r["fix"]["consensus"] for r in pipeline_records if r["fix"]["ok"]}


def test_near_verifies_every_window_of_the_start_area(season, tiny_onnx):
    flight, index = season
    lat, lon, _ = _start(flight, 0.0)
    far = (lat + 0.01, lon, 50.0)  # 1.1 km north: nothing of the map there
    conf = loop.RunConf(realtime=False, near=far, locate=LocateConf(k_windows=1))
    records = _fly(flight, index, tiny_onnx, conf, frames=4)  # with no fix, every frame the same
    assert {r["fix"]["search"] for r in records} == {"area"}
    assert not any(r["fix"]["ok"] for r in records)


@pytest.mark.parametrize("reacquire_max_m", [200.0, 0.0])
def test_a_lost_track_is_searched_for_where_it_was_going(season, tiny_onnx, reacquire_max_m):
    """Three grey frames lose the track (max_misses 3); the next frame verifies every window where
    the lost track could now be, and two fixes there start it again. Off, a global search."""
    from geolink_edge.runtime.filter import FilterConf

    flight, index = season
    conf = loop.RunConf(realtime=False, filter=FilterConf(max_misses=3), reacquire_max_m=reacquire_max_m)
    records = _fly(flight, index, tiny_onnx, conf, frames=9, blank={4, 5, 6})  # lost at 6, back at 8
    assert [r["status"] for r in records[4:7]] == ["coasting", "coasting", "lost"]
    searches = [r["fix"]["search"] for r in records[7:9]]
    if reacquire_max_m:
        assert searches == ["area", "area"] and records[8]["status"] == "accepted"
        assert records[8]["fix_error_m"] <= 1.5
    else:
        assert searches == ["global", "global"]


def _start(flight, radius_m: float) -> tuple[float, float, float]:
    """The flight's first position, as a pilot would give it."""
    first = (flight / "gt.csv").read_text().splitlines()[1].split(",")
    return float(first[2]), float(first[3]), radius_m


@pytest.mark.parametrize("value", ["1,2", "91,8,100", "47,8,-5", "47,eight,100"])
def test_bad_near_is_one_line_and_exit_2(value, capsys, tmp_path):
    image = tmp_path / "photo.png"
    image.write_bytes(b"")
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["locate", str(image), "--model", "m.onnx", "--index", "idx", "--near", value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--near" in err


class _Ticks:
    """A clock that moves one second each time it is read: the budget's decisions then depend on
    how often the locator looks at the time, never on how fast this machine is."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def _locator(flight, index, conf: LocateConf, clock=None):
    from geolink_edge.index.search import TileIndex
    from geolink_edge.runtime.intrinsics import load_intrinsics
    from geolink_edge.runtime.locate import Locator
    from geolink_edge.runtime.retrieval import near_region

    tiles = TileIndex.load(index)
    options = {} if clock is None else {"clock": clock}
    locator = Locator(tiles, conf, load_intrinsics(flight / "camera.yaml"), **options)
    return locator, near_region(tiles, _start(flight, 150.0))


def test_a_spent_budget_answers_no_fix_and_why(season):
    flight, index = season
    locator, area = _locator(flight, index, LocateConf(budget_s=0.0))
    raw = open_reader(f"sim://{flight}").read()
    fix = locator.locate(raw.image, np.zeros(1), area, raw.telemetry, exhaustive=True)
    assert not fix.ok and fix.verified == 0 and fix.windows_left > 1
    assert fix.reason == f"time budget of 0 s spent, {fix.windows_left} window(s) left"


def test_a_frame_too_low_for_the_map_searches_nothing_and_says_why(season):
    """A known camera whose footprint spans fewer than ``min_map_px`` map pixels: no window is read
    or verified, however wide the area (a landing's last metres), and the reason gives the count."""
    from dataclasses import replace

    flight, index = season
    locator, area = _locator(flight, index, LocateConf(keyframe_fallback=False))
    raw = open_reader(f"sim://{flight}").read()
    gsd = raw.telemetry.altitude / locator.intrinsics.fx  # a nadir frame's
    map_px = min(raw.image.shape[:2]) * gsd / locator.index.map_gsd_m
    low = replace(raw.telemetry, altitude=raw.telemetry.altitude * 11.0 / map_px)  # 11 map pixels across
    fix = locator.locate(raw.image, np.zeros(1), area, low, exhaustive=True)
    assert not fix.ok and fix.verified == 0 and fix.windows_left == 0
    assert fix.reason == "the frame spans 11 map pixels, fewer than 12"
    assert locator.windows.extract_s == 0.0  # no window was read
    high = locator.locate(raw.image, np.zeros(1), area, raw.telemetry, exhaustive=True)
    assert high.verified > 0 and locator.windows.extract_s > 0.0  # at its own height it is searched


def test_only_a_fix_two_estimates_agree_on_becomes_the_keyframe(season, monkeypatch):
    """A map fix placed by the homography's point below the camera is kept as the keyframe; the same
    frame placed by the votes alone (the homography disagreeing, or none) is a fix but no keyframe."""
    from dataclasses import replace

    import geolink_edge.runtime.locate as locate

    flight, index = season
    locator, area = _locator(flight, index, LocateConf())
    raw = open_reader(f"sim://{flight}").read()
    fix = locator.locate(raw.image, np.zeros(1), area, raw.telemetry, exhaustive=True)
    assert fix.ok and fix.method == "nadir" and locator.keyframes.candidate is not None
    locator.keyframes.confirm(False)
    place = locate.place
    monkeypatch.setattr(locate, "place", lambda *args: replace(place(*args), method="votes"))
    fix = locator.locate(raw.image, np.zeros(1), area, raw.telemetry, exhaustive=True)
    assert fix.ok and fix.method == "votes" and locator.keyframes.candidate is None


def test_votes_nothing_else_confirms_need_min_votes_alone(season, monkeypatch):
    """A placement by the votes alone (no homography agreeing, PnP failed) is a fix only with
    ``min_votes_alone`` agreeing votes; otherwise no fix, and why."""
    from dataclasses import replace

    import geolink_edge.runtime.locate as locate

    flight, index = season
    place = locate.place
    monkeypatch.setattr(locate, "place", lambda *args: replace(place(*args), method="votes", alt=None))
    raw = open_reader(f"sim://{flight}").read()
    fixes = {}
    for need in (8, 10_000):
        locator, area = _locator(flight, index, LocateConf(min_votes_alone=need, keyframe_fallback=False))
        fixes[need] = locator.locate(raw.image, np.zeros(1), area, raw.telemetry, exhaustive=True)
    assert fixes[8].ok and fixes[8].method == "votes" and fixes[8].inliers >= 8
    weak = fixes[10_000]
    assert not weak.ok and weak.inliers == fixes[8].inliers
    why = f"{weak.inliers} agreeing votes that neither the homography nor PnP confirms (10000 needed)"
    assert weak.reason == why


def test_a_search_cut_by_the_budget_goes_on_with_the_next_frames(season):
    """Each grey frame (nothing verifies) has time for one window; the search walks the area's
    windows across frames, each once, then starts over; a search elsewhere starts afresh."""
    flight, index = season
    locator, area = _locator(flight, index, LocateConf(budget_s=5.0), _Ticks())
    raw = open_reader(f"sim://{flight}").read()
    grey = np.full_like(raw.image, 128)
    fixes = [locator.locate(grey, np.zeros(1), area, raw.telemetry, exhaustive=True) for _ in range(3)]
    total = fixes[0].windows_left + 1
    assert total >= 3 and [f.verified for f in fixes] == [1, 1, 1]
    assert [f.windows_left for f in fixes] == [total - 1, total - 2, total - 3]
    assert all(f.reason.startswith("time budget of 5 s spent") for f in fixes)
    elsewhere = (area[0] + 300.0, area[1], area[2])
    fresh = locator.locate(grey, np.zeros(1), elsewhere, raw.telemetry, exhaustive=True)
    assert fresh.verified == 1 and fresh.windows_left > 0
    again = locator.locate(grey, np.zeros(1), area, raw.telemetry, exhaustive=True)
    assert again.windows_left == total - 1  # the cut search there was dropped: it starts over


def test_new_windows_are_read_beside_the_frames(season):
    """With background reading, a frame never waits for a window: while the map is held up the
    frames check nothing and say so; once read, the search goes on with the windows left."""
    import threading
    import time

    flight, index = season
    gate = threading.Event()
    conf = LocateConf(budget_s=30.0, background_windows=True, retry_gsd_factor=1.0)  # one GSD: no retry
    locator, area = _locator(flight, index, conf)
    read = locator.windows.read
    locator.windows.read = lambda *args: gate.wait() and read(*args)  # the map's reads wait for the gate
    raw = open_reader(f"sim://{flight}").read()
    grey = np.full_like(raw.image, 128)
    first = locator.locate(grey, np.zeros(1), area, raw.telemetry, exhaustive=True)
    assert first.verified == 0 and first.windows_left > 1
    assert first.reason == f"still being read, {first.windows_left} window(s) left"
    gate.set()
    deadline = time.monotonic() + 300.0
    checked = 0
    while checked < first.windows_left and time.monotonic() < deadline:
        later = locator.locate(grey, np.zeros(1), area, raw.telemetry, exhaustive=True)
        checked += later.verified
        assert later.verified + later.windows_left == first.windows_left - (checked - later.verified)
        time.sleep(0.2)
    assert checked == first.windows_left  # every window once, none twice


def test_a_tracks_near_search_reads_its_windows_in_the_frame(season):
    """Background reading is for cold searches: a track's near search, its windows never read before,
    checks them in the frame (within the budget) and fixes it."""
    flight, index = season
    conf = LocateConf(budget_s=30.0, background_windows=True)
    locator, _ = _locator(flight, index, conf)
    raw = open_reader(f"sim://{flight}").read()
    here = locator.index.frame.to_enu(raw.truth.lat, raw.truth.lon)
    fix = locator.locate(raw.image, np.zeros(1), (here[0], here[1], 15.0), raw.telemetry)
    assert fix.search == "near" and fix.verified > 0 and fix.windows_left == 0
    assert fix.ok, fix.reason
