"""``geolink-edge sitl``: a shortened GNSS-denied mission in a real ArduCopter (SITL), closed loop.

Each flight takes off on the simulated GNSS, has it cut at altitude, flies a 100 × 60 m loop (four
turns) back to home and lands there with geolink-edge's position alone, at the runtime's
recommended parameters and ArduPilot's stock EKF and arming settings. The camera is rendered from
the map at SITL's true pose; what is judged is what ArduPilot itself reports, against SIMSTATE. The
two targets fly one after the other on SITL instances 3 and 4, in real time (about two and a half
minutes each, whatever the CPU: SITL at speed-up 1 sets the pace). Run with ``-k sitl -s``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from _runtime_fixtures import build_index
from _sitl_fixtures import sitl_available

pytestmark = pytest.mark.skipif(not sitl_available(), reason="ArduPilot SITL is not beside the project")

ALTITUDE_M = 40.0
FLIGHT_TIMEOUT_S = 480  # the flight itself takes ~150 s of real time
EKF_POS_HORIZ_ABS = 16
BAD_TEXTS = ("glitch", "failsafe", "variance")


@pytest.fixture(scope="module")
def mission_world(tmp_path_factory, tiny_onnx):
    """(orthophoto, index, model): a 307 m synthetic suburb at 0.15 m/px and its tile index."""
    from geolink_edge.sim.landing import suburb_map

    root = tmp_path_factory.mktemp("mission_world")
    ortho = suburb_map(root)
    return ortho, build_index(ortho, tiny_onnx, root / "index"), tiny_onnx


def judged_window(report: dict) -> tuple[float, float]:
    """From 10 s after the cut until the touchdown (the last metres located on keyframes)."""
    cut = report["gnss_cut_unix"]
    return cut + 10.0, cut + report["figures"]["gnss_off_flying_s"]


@pytest.mark.parametrize(
    ("target", "instance"),
    [("gps", 3), ("odometry", 4)],
)
def test_sitl_mission_flies_and_lands_on_geolink_edge_after_the_gnss_cut(
    mission_world, tmp_path, cli, target, instance
):
    ortho, index, model = mission_world
    out = tmp_path / "flight"
    run = cli(
        "sitl", "--map", ortho, "--model", model, "--index", index, "--target", target, "--out", out,
        "--instance", instance, "--altitude", ALTITUDE_M, "--loop", "100,60", "--speed", 8,
        timeout=FLIGHT_TIMEOUT_S,
    )  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    print(f"\n{target}: {json.dumps(report['figures'])}\n{run.stdout[-2500:]}")
    assert run.returncode == 0 and report["ok"], (report["failure"], run.stderr[-2000:])
    assert "EK3_CHECK_SCALE" not in report["integration_params"]  # stock EKF settings
    cut = report["gnss_cut_unix"]
    # the loop's four turns and its way home were flown after the cut
    reached = [row["reached"] for row in report["mission"] if "reached" in row and row["t"] > cut]
    assert len(reached) >= 4, report["mission"]
    # down to the touchdown (the loop and the way home ~55 s, the landing ~40 s): the EKF's absolute
    # position all along, no EKF trouble, and where the autopilot thought it was against the truth
    start, end = judged_window(report)
    rows = [r for r in report["per_second"] if start <= r["t"] <= end]
    assert report["figures"]["ekf_abs_share"] == 1.0
    assert end - start >= 80.0 and all(r["ekf_flags"] & EKF_POS_HORIZ_ABS for r in rows), rows
    texts = [t["text"] for t in report["statustext"] if cut <= t["t"] <= end]
    assert not [t for t in texts if any(bad in t.lower() for bad in BAD_TEXTS)], texts
    errors = np.array([r["autopilot_error_m"] for r in rows])
    assert np.median(errors) <= 3.0 and errors.max() <= 10.0, errors
    fixes = [f for f in report["fixes"] if start <= f["t"] <= end]
    assert np.mean([f["error_m"] <= 2.0 * f["reported_m"] for f in fixes]) >= 0.9
    assert np.median([f["reported_m"] for f in fixes]) <= 5.0
    # it brought the vehicle home, located to the touchdown
    assert report["figures"]["landing_from_home_m"] <= 5.0
    assert not report["figures"]["bad_texts"]
    assert report["figures"]["realtime_ratio"] == pytest.approx(1.0, abs=0.05)


def test_sitl_refuses_bad_inputs_in_one_line(mission_world, tmp_path, cli):
    ortho, index, model = mission_world
    base = ("sitl", "--model", model, "--index", index, "--out", tmp_path / "out")
    for args, message in (
        (("--map", tmp_path / "missing.tif"), "raster not found"),
        (("--map", ortho, "--target", "px4"), "--target"),
        (("--map", ortho, "--loop", "5000,300"), "leaves the map"),
        (("--map", ortho, "--loop", "wide"), "--loop"),
    ):
        run = cli(*base, *args)
        assert run.returncode == 2, run.stderr
        assert len(run.stderr.strip().splitlines()) == 1 and message in run.stderr, run.stderr
        assert not (tmp_path / "out").exists()
