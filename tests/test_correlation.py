"""Area correlation (runtime.correlate): a shift recovered to sub-pixel, look-alikes refused, a season
change survived."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from _runtime_fixtures import ortho_affine, textured_ground

from geolink_edge.runtime.correlate import (
    Area,
    CorrelateConf,
    Correlator,
    make_template,
    map_area,
    ncc_surface,
)
from geolink_edge.runtime.edge_fields import FIELDS, edge_field

GSD = 0.5
SIZE = 90  # template side in map pixels (a 45 m footprint at 0.5 m/px)


def view_maker(ground: np.ndarray, centre_px, heading_error_deg: float = 0.0, scale_error: float = 1.0):
    """A ``make(yaw, scale)`` of frames cut from ``ground`` about ``centre_px`` (sub-pixel), as a
    camera whose told heading is ``heading_error_deg`` off and told height ``scale_error`` × true
    would resample them: the template covers ground turned and scaled by the errors left after the
    correction (yaw, scale)."""

    def make(yaw: float, scale: float):
        turn = heading_error_deg + yaw
        zoom = scale_error * scale
        # canvas pixel → ground pixel: about the canvas centre, turned and scaled, onto centre_px
        c, s = math.cos(math.radians(turn)) * zoom, math.sin(math.radians(turn)) * zoom
        half = (SIZE - 1) / 2
        to_ground = np.array([[c, -s, 0.0], [s, c, 0.0]])
        to_ground[:, 2] = np.asarray(centre_px) - to_ground[:, :2] @ [half, half]
        canvas = cv2.warpAffine(
            ground, to_ground, (SIZE, SIZE), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        )
        mask = np.zeros((SIZE, SIZE), np.uint8)
        cv2.circle(mask, (SIZE // 2, SIZE // 2), SIZE // 2 - 3, 255, -1)  # a footprint that is not square
        return make_template(canvas, mask, np.array([half, half]), CorrelateConf())

    return make


def ground_xy(centre_px) -> np.ndarray:
    return ortho_affine(GSD, 0.0, 0.0) @ [*centre_px, 1.0]


def whole(image: np.ndarray, conf: CorrelateConf = CorrelateConf()) -> Area:
    return map_area(image, np.ones(image.shape[:2], bool), ortho_affine(GSD, 0.0, 0.0), conf)


@pytest.fixture(scope="module")
def ground() -> np.ndarray:
    return textured_ground(400, seed=3)


def test_every_field_gives_channels_zero_outside_the_data(ground):
    valid = np.zeros(ground.shape[:2], bool)
    valid[50:350, 50:350] = True
    for kind in FIELDS:
        values = edge_field(ground, valid, kind)
        assert values.shape[:2] == ground.shape[:2] and values.dtype == np.float32
        assert np.all(values[:45] == 0) and np.abs(values[100:300, 100:300]).max() > 0.1


def test_the_surface_peaks_at_the_template_own_placement(ground):
    template = make_template(
        ground[120:200, 140:230], np.full((80, 90), 255, np.uint8), np.zeros(2), CorrelateConf()
    )
    surface = ncc_surface(template, whole(ground), 0.9)
    v, u = np.unravel_index(int(np.nanargmax(surface)), surface.shape)
    assert (u, v) == (140, 120)
    # not exactly 1: the template's field drops its border (an edge of the crop, not of the ground)
    assert 0.95 < surface[v, u] <= 1.0


def test_a_known_shift_is_recovered_to_sub_pixel_with_the_heading_and_scale_refined(ground):
    truth = (213.3, 187.6)
    result = Correlator().search(view_maker(ground, truth, 3.0, 1.04), [whole(ground)], GSD)
    assert result.ok, result.reason
    error_px = np.hypot(*(result.xy - ground_xy(truth))) / GSD
    assert error_px < 0.25
    assert result.yaw_deg == pytest.approx(-3.0, abs=1.0)
    assert result.scale * 1.04 == pytest.approx(1.0, abs=0.035)
    assert result.ratio < 0.6 and result.score > 0.5


def test_a_look_alike_area_is_refused(ground):
    # the same 200 px of ground twice, side by side: two equal peaks, no telling which
    patch = ground[100:300, 100:300]
    twins = np.concatenate([patch, patch], axis=1)
    result = Correlator().search(view_maker(twins, (96.0, 104.0)), [whole(twins)], GSD)
    assert not result.ok
    assert "not distinct" in result.reason
    assert result.ratio > 0.95


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_a_map_of_elsewhere_is_refused(ground, seed):
    # the frame's ground is not in the map: whatever peaks there are, none stands out
    elsewhere = textured_ground(400, seed=seed)
    result = Correlator().search(view_maker(ground, (200.0, 200.0)), [whole(elsewhere)], GSD)
    assert not result.ok
    assert result.ratio > CorrelateConf().max_ratio


def winter(image: np.ndarray, seed: int = 5) -> np.ndarray:
    """The ground in another season: open ground under snow (its dark turned light), colours
    shifted, another exposure, sensor noise."""
    rng = np.random.default_rng(seed)
    smooth = cv2.resize(
        rng.random((8, 8)).astype(np.float32), image.shape[1::-1], interpolation=cv2.INTER_CUBIC
    )
    snow = (smooth > 0.5).astype(np.float32)[..., None]
    values = image.astype(np.float32)
    snowy = 255.0 - 0.5 * values
    tinted = values * np.array([0.8, 1.0, 1.25]) + 20.0
    out = snow * snowy + (1.0 - snow) * tinted
    out = 255.0 * (np.clip(out, 0, 255) / 255.0) ** 1.6 + rng.normal(0.0, 6.0, out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def test_a_season_changed_map_still_places_the_frame(ground):
    truth = (181.4, 222.7)
    result = Correlator().search(view_maker(ground, truth, -2.0), [whole(winter(ground))], GSD)
    assert result.ok, result.reason
    assert np.hypot(*(result.xy - ground_xy(truth))) < 0.5  # metres: a pixel of the map


def _first_frame(flight):
    """(image path, lat, lon, yaw, pitch, altitude) of a synthetic flight's first frame."""
    header, row = (flight / "gt.csv").read_text().splitlines()[:2]
    values = dict(zip(header.split(","), row.split(","), strict=True))
    image = flight / "frames" / f"{int(values['frame']):06d}.jpg"
    return image, *(float(values[k]) for k in ("lat", "lon", "yaw", "pitch", "alt"))


def test_locate_with_correlation_places_a_frame_of_known_camera_without_torch(flight_world, cli):
    import json

    from geolink_edge.geo import haversine_m

    flight, index, model = flight_world
    image, lat, lon, yaw, pitch, alt = _first_frame(flight)
    common = [image, "--model", model, "--index", index, "--near", f"{lat},{lon},60"]
    camera = ["--intrinsics", flight / "camera.yaml", "--heading", yaw, "--pitch", pitch, "--altitude", alt]
    done = cli("locate", *common, *camera, "--verifier", "correlation", block_torch=True)
    assert done.returncode == 0, done.stderr
    fix = json.loads(done.stdout)
    assert fix["ok"] and fix["method"] == "correlation", fix["reason"]
    assert fix["position_of"] == "camera"
    assert haversine_m(lat, lon, fix["lat"], fix["lon"]) < 2.0
    assert fix["correlation"]["second_ratio"] <= 0.7 and fix["cov"][0][0] > 0
    # without the heading and height there is no footprint to correlate: said, not guessed
    blind = json.loads(cli("locate", *common, "--verifier", "correlation", block_torch=True).stdout)
    assert not blind["ok"] and "correlation needs" in blind["reason"]
    # auto: the camera known, correlation answers; unknown, the features do (no correlation ran)
    auto = json.loads(cli("locate", *common, *camera, "--verifier", "auto").stdout)
    assert auto["ok"] and auto["method"] == "correlation"
    assert haversine_m(lat, lon, auto["lat"], auto["lon"]) < 2.0
    features = json.loads(cli("locate", *common, "--verifier", "auto").stdout)
    assert features["method"] != "correlation" and features["correlation"] == {}
