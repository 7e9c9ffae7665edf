"""A GNSS-denied mission in ArduCopter SITL with geolink-edge closing the loop.

The scenario, driven over MAVLink the way a ground station would: SITL boots with home at the
map's launch point and the integration's parameters; the runtime (the same loop that flies,
``runtime.loop.main``) starts with a simulated camera that renders the map at SITL's true pose;
the vehicle arms (in ALT_HOLD, a mode that needs no position, as a pilot would: ArduCopter checks
each GPS's fix only when arming in a mode that needs a position, and ours has none on the ground),
takes off on the simulated GNSS and flies the AUTO mission; once at altitude,
with our position flowing, the EKF is switched to its source set 2 (``MAV_CMD_SET_EKF_SOURCE_SET``)
and the simulated GNSS off (``SIM_GPS1_ENABLE 0``), and the mission goes on to its landing at home
on geolink-edge alone.

Two variants (``target``), each with the runtime's recommended parameters for flying behind a GNSS
receiver (``runtime/params/<target>2.parm``): ``ardupilot-gps`` sends GPS_INPUT as GPS 2, which
ArduPilot switches to when GPS 1 loses its fix; ``ardupilot-odometry`` sends ODOMETRY as external
navigation.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from geolink_edge import atomic
from geolink_edge.errors import GeolinkError, describe
from geolink_edge.registry import check_name
from geolink_edge.runtime.autopilot import make_output
from geolink_edge.runtime.mount import CameraMount
from geolink_edge.sim.camera import (
    Exposure,
    MapRenderer,
    MapScene,
    SimCamera,
    default_intrinsics,
    intrinsics_yaml,
)
from geolink_edge.sim.mission import MissionPlan
from geolink_edge.sim.sitl import (
    MAV_CMD_COMPONENT_ARM_DISARM,
    MAV_CMD_MISSION_START,
    MAV_CMD_SET_EKF_SOURCE_SET,
    Sitl,
)

TARGETS = {"gps": "ardupilot-gps", "odometry": "ardupilot-odometry"}
GPS_ID = 1  # GPS_INPUT feeds GPS 2; GPS 1 is the simulated receiver that gets cut
# ArduCopter checks every GPS's fix only when arming in a mode that needs a position; GPS 2 (ours)
# has none on the ground. The EKF's own checks (on GPS 1) apply in any mode.
ARM_MODE = "ALT_HOLD"
ARM_TIMEOUT_S = 60.0  # arming takes a few seconds once the EKF (fast-forwarded past its floor) is ready
POSITION_READY_S = 5.0  # our position flowing this long before the cut
READY_TIMEOUT_S = 90.0
LAND_MARGIN_S = 180.0
STOP_RUNTIME_S = 30.0  # the loop ends after the frame in hand, whose search the frame budget bounds


def runtime_target(name: str) -> str:
    """``gps``/``odometry`` or the runtime's own names of them."""
    if name in TARGETS.values():
        return name
    check_name("--target", name, tuple(TARGETS))
    return TARGETS[name]


def recommended_parm(target: str) -> dict[str, float]:
    """The runtime's recommended parameters for ``target`` behind a GNSS receiver (the ``…2.parm``
    beside the runtime; docs/autopilot.md says why each is there)."""
    import geolink_edge.runtime

    path = Path(geolink_edge.runtime.__file__).parent / "params" / f"{target}2.parm"
    params = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, value = line.split()[:2]
            params[name] = float(value)
    return params


def integration_params(target: str, delay_s: float = 0.0) -> dict[str, float]:
    """The autopilot parameters a user sets for this integration, all of them before boot."""
    return {**recommended_parm(target), **make_output(target, GPS_ID).delay_parameters(delay_s)}


@dataclass(frozen=True)
class FlightConf:
    target: str = "ardupilot-gps"
    mission: MissionPlan = field(default_factory=MissionPlan)
    camera_hz: float = 3.0
    size: tuple[int, int] = (640, 480)
    hfov: float = 60.0
    mount: str = "gimbal:90"
    instance: int = 0
    gcs: str | None = None
    home: tuple[float, float] | None = None  # (lat, lon); default: the orthophoto's centre
    exposure: Exposure = field(default_factory=Exposure)


@dataclass
class FlightResult:
    """What happened, for the report: times (unix), the mission's progress, the runtime's summary."""

    home: tuple[float, float, float]
    t_armed: float | None = None
    t_takeoff_done: float | None = None
    gnss_cut_unix: float | None = None
    t_landed: float | None = None
    mission_completed: bool = False
    landed: bool = False
    failure: str | None = None
    runtime_summary: dict = field(default_factory=dict)
    render_ms: list[float] = field(default_factory=list)
    params: dict = field(default_factory=dict)
    runtime_stuck: bool = False  # the runtime's thread had not ended STOP_RUNTIME_S after the flight


def write_parm(path: Path, params: dict[str, float]) -> Path:
    return atomic.write_text(path, "".join(f"{name} {value:g}\n" for name, value in params.items()))


def check_route(scene: MapScene, conf: FlightConf) -> None:
    """Every turning point (and home) on the map with room for the camera's footprint: a bad input."""
    plan, home = conf.mission, conf.home or scene.centre()
    margin_m = footprint_m(conf) + 20.0
    for lat, lon in [home, *plan.waypoints(*home)]:
        if not scene.contains(lat, lon, margin_m):
            raise GeolinkError(
                f"the {plan.width:g} x {plan.depth:g} m loop about {home[0]:.6f},{home[1]:.6f} leaves the "
                f"map ({lat:.6f},{lon:.6f} is within {margin_m:.0f} m of its edge): give a smaller --loop"
            )


def footprint_m(conf: FlightConf) -> float:
    """Half the diagonal of a nadir frame's ground footprint at the mission altitude."""
    import math

    w, h = conf.size
    half_w = conf.mission.altitude * math.tan(math.radians(conf.hfov) / 2)
    return half_w * math.hypot(1.0, h / w)


class Flight:
    """One mission: :meth:`run` returns a :class:`FlightResult`; the SITL log is ``sitl.seen``."""

    def __init__(self, conf: FlightConf, scene: MapScene, sitl_folder: Path, model, index, out: Path):
        self.conf, self.scene, self.model, self.index, self.out = conf, scene, model, index, out
        home = conf.home or scene.centre()
        ground = scene.ground_at(*home)
        self.result = FlightResult((home[0], home[1], ground))
        self.result.params = integration_params(conf.target)
        parm = write_parm(out / "integration.parm", self.result.params)
        self.sitl = Sitl(
            sitl_folder, conf.instance, (home[0], home[1], ground, 0.0), out / "sitl", (parm,), conf.gcs
        )
        intrinsics = default_intrinsics(conf.size, conf.hfov)
        self.intrinsics_path = atomic.write_text(out / "camera.yaml", intrinsics_yaml(intrinsics))
        renderer = MapRenderer(scene, intrinsics, CameraMount.parse(conf.mount), conf.size)
        self.camera = SimCamera(renderer, self.sitl.pose, conf.camera_hz, conf.exposure)
        self.log = out / "flight.jsonl"
        self._runtime_error: str | None = None

    def _runtime(self, stop) -> None:
        from geolink_edge.runtime import loop

        link = {
            "url": self.sitl.runtime_url,
            "target": self.conf.target,
            "mount": CameraMount.parse(self.conf.mount),
        }
        if self.conf.target == "ardupilot-gps":
            link["gps_id"] = GPS_ID
        try:
            self.result.runtime_summary = loop.main(
                loop.paced(loop.RunConf()), self.camera, self.model, self.index, self.intrinsics_path, link,
                self.log,
                console=False, stop=stop,
            )  # fmt: skip
        except Exception as exc:  # reported, and the flight goes on to show what the autopilot does
            self._runtime_error = describe(exc)

    def run(self) -> FlightResult:
        from geolink_edge.runtime.health import Stop

        stop = Stop()
        runtime = threading.Thread(target=self._runtime, args=(stop,), name="runtime", daemon=True)
        try:
            self.sitl.start()
            self.sitl.boot()
            runtime.start()
            self._scenario()
        except (TimeoutError, GeolinkError) as exc:
            self.result.failure = str(exc)
        except KeyboardInterrupt:
            self.result.failure = "interrupted"
        finally:
            stop.request("flight over")
            runtime.join(timeout=STOP_RUNTIME_S)
            self.result.runtime_stuck = runtime.is_alive()
            self.sitl.stop()
            self.result.render_ms = list(self.camera.render_ms)
        if self._runtime_error:
            self.result.failure = self.result.failure or f"runtime: {self._runtime_error}"
        if self.result.runtime_stuck:
            stuck = f"the runtime did not stop within {STOP_RUNTIME_S:g} s"
            self.result.failure = self.result.failure or stuck
        return self.result

    def _scenario(self) -> None:
        sitl, plan, result = self.sitl, self.conf.mission, self.result
        sitl.upload_mission(plan.items(*result.home[:2]))
        deadline = time.time() + ARM_TIMEOUT_S
        while not sitl.armed():
            if time.time() > deadline:
                raise TimeoutError(f"arming: refused for {ARM_TIMEOUT_S:.0f} s ({self._last_prearm()})")
            # ALT_HOLD would arm without a position, but AUTO then refuses to start: wait for the EKF's
            if sitl.ekf_has_position() and sitl.set_mode(ARM_MODE):
                sitl.command_acked(MAV_CMD_COMPONENT_ARM_DISARM, 1)
            time.sleep(1.0)
        result.t_armed = time.time()
        if not (sitl.set_mode("AUTO") and sitl.command_acked(MAV_CMD_MISSION_START, 0, 0)):
            raise GeolinkError("the autopilot refused AUTO or the mission start")
        climb_s = plan.altitude / 1.0 + 60.0
        sitl.wait(
            lambda: (
                sitl.mission_seq() >= plan.first_waypoint and sitl.relative_alt_m() >= 0.9 * plan.altitude
            ),
            climb_s,
            "take-off to the mission altitude",
        )
        result.t_takeoff_done = time.time()
        self._wait_for_our_position()
        if not sitl.command_acked(MAV_CMD_SET_EKF_SOURCE_SET, 2):  # the sources without GNSS
            raise GeolinkError("the autopilot refused EKF source set 2 (MAV_CMD_SET_EKF_SOURCE_SET)")
        sitl.set_param("SIM_GPS1_ENABLE", 0)
        result.gnss_cut_unix = time.time()
        route_s = plan.route_m() / plan.speed * 1.6 + plan.altitude / 0.5 + LAND_MARGIN_S
        # landed and disarmed, by the mission's end or by a failsafe's landing anywhere
        sitl.wait(lambda: sitl.on_ground() and not sitl.armed(), route_s, "the mission and the landing")
        result.t_landed, result.landed = time.time(), True
        result.mission_completed = self._flew_to_the_end()

    def _flew_to_the_end(self) -> bool:
        """Every waypoint was flown and the mission's landing began (a failsafe during that landing is
        the report's to tell, in its figures and goals)."""
        seen, cut = self.sitl.seen, self.result.gnss_cut_unix
        return any(m.seq == self.conf.mission.land_item for _, m in seen.of("MISSION_CURRENT", cut))

    def _wait_for_our_position(self) -> None:
        """Our position has flowed for POSITION_READY_S: GPS 2 has a 3D fix, or the runtime's log shows
        estimates (ODOMETRY leaves no trace on the autopilot's side before it is used)."""
        sitl = self.sitl

        def flowing_since() -> float | None:
            if self.conf.target == "ardupilot-gps":
                fixes = sitl.seen.of("GPS2_RAW", time.time() - POSITION_READY_S - 1.0)
                good = [t for t, m in fixes if m.fix_type >= 3]
                return good[0] if good and len(good) == len(fixes) else None
            times = [r["t_done"] for r in read_log(self.log) if "estimate" in r]
            recent = [t for t in times if t >= time.time() - POSITION_READY_S - 1.0]
            return recent[0] if len(recent) >= POSITION_READY_S else None

        def ready() -> bool:
            since = flowing_since()
            return since is not None and time.time() - since >= POSITION_READY_S

        sitl.wait(ready, READY_TIMEOUT_S, "our position before the GNSS cut")

    def _last_prearm(self) -> str:
        texts = [m.text for _, m in self.sitl.seen.of("STATUSTEXT") if "PreArm" in m.text or "Arm:" in m.text]
        return texts[-1] if texts else "no pre-arm message"


def read_log(path: Path) -> list[dict]:
    """The runtime's flight log so far (a line being written is skipped)."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
