"""``geolink-edge sitl``: a shortened GNSS-denied mission in a real ArduCopter (SITL), closed loop.

Each flight takes off on the simulated GNSS, has it cut at altitude, flies a 100 × 60 m loop (four
turns) back to home and lands there with geolink-edge's position alone, at the runtime's
recommended parameters and ArduPilot's stock EKF settings. The camera is rendered from the map at
SITL's true pose; what is judged is what ArduPilot itself reports, against SIMSTATE. The two
targets fly one after the other on SITL instances 3 and 4, in real time (about two and a half
minutes each, whatever the CPU: SITL at speed-up 1 sets the pace). Run with ``-k sitl -s``.
"""

from __future__ import annotations

import json

import pytest
from _runtime_fixtures import build_index
from _sitl_fixtures import sitl_available

pytestmark = pytest.mark.skipif(not sitl_available(), reason="ArduPilot SITL is not beside the project")

ALTITUDE_M = 40.0
FLIGHT_TIMEOUT_S = 480  # the flight itself takes ~150 s of real time


@pytest.fixture(scope="module")
def mission_world(tmp_path_factory, tiny_onnx):
    """(orthophoto, index, model): a 307 m synthetic suburb at 0.15 m/px and its tile index."""
    from geolink_edge.data.synthetic import writer

    root = tmp_path_factory.mktemp("mission_world")
    conf = writer.SynthConfig(
        locations=2, views=1, size=64, area_px=2048, gsd=0.15, workers=1, styles=["farmland", "suburb"]
    )
    writer.render_area(conf, writer.AreaPlan(1, "mission-suburb", "suburb", "test"), root)
    ortho = root / "areas" / "mission-suburb" / "ortho.tif"
    return ortho, build_index(ortho, tiny_onnx, root / "index"), tiny_onnx


@pytest.mark.parametrize(("target", "instance"), [("gps", 3), ("odometry", 4)])
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
    figures = report["figures"]
    print(f"\n{target}: {json.dumps(figures)}\n{run.stdout[-2500:]}")
    assert run.returncode == 0 and report["ok"], (report["failure"], run.stderr[-2000:])
    assert report["gnss_cut_unix"] is not None and report["integration_params"]
    assert "EK3_CHECK_SCALE" not in report["integration_params"]  # stock EKF settings
    # the autopilot flew on us: absolute position from 10 s after the cut to touchdown, no EKF trouble
    assert figures["ekf_abs_share"] == 1.0, figures
    assert not figures["bad_texts"], figures["bad_texts"]
    texts = [t["text"] for t in report["statustext"] if t["t"] >= report["gnss_cut_unix"]]
    assert not [t for t in texts if "Glitch" in t or "failsafe" in t.lower()], texts
    # where it thought it was, against the truth; and it came back home
    assert figures["autopilot_error_m"]["median"] <= 3.0 and figures["autopilot_error_m"]["max"] <= 10.0
    assert figures["landing_from_home_m"] <= 5.0
    assert figures["realtime_ratio"] == pytest.approx(1.0, abs=0.05)
    # the loop's four turns were flown after the cut
    cut = report["gnss_cut_unix"]
    reached = [row["reached"] for row in report["mission"] if "reached" in row and row["t"] > cut]
    assert len(reached) >= 4, report["mission"]


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
