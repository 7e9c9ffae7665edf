"""ArduCopter SITL as a ground station drives it: start, watch, set parameters, upload, arm, fly.

The SITL binary (``arducopter`` built for SITL, with ArduPilot's ``copter.parm`` beside it) comes
from ``--sitl``, else ``$GEOLINK_SITL``, else a ``shared/sitl`` folder beside the project. Every
link is on loopback; instance N shifts the ports by 10·N (ArduPilot's own convention):

- serial0 sends UDP to 14550+10N: this observer (the ground station's view, and the truth);
- serial1 is a TCP server on 5762+10N: the runtime's link;
- serial2 sends UDP to ``--gcs`` when given: a ground station watching live.

SITL boots fast-forwarded until the EKF's ~38 s start-up floor is behind it, then runs in real time
for the whole flight.
"""

from __future__ import annotations

import math
import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from geolink_edge.errors import GeolinkError
from geolink_edge.runtime.mount import BodyAttitude
from geolink_edge.sim.camera import Pose

SITL_ENV = "GEOLINK_SITL"
DEFAULT_SITL = Path(__file__).resolve().parents[2].parent / "shared" / "sitl"
BOOT_SPEEDUP = 10
BOOT_S = 40.0  # the EKF uses no position source before ~38 s after boot
# message id → rate (Hz) asked of serial0
STREAMS = {
    "SIM_STATE": (108, 25.0),
    "GLOBAL_POSITION_INT": (33, 5.0),
    "EKF_STATUS_REPORT": (193, 5.0),
    "GPS_RAW_INT": (24, 2.0),
    "GPS2_RAW": (124, 2.0),
    "SYSTEM_TIME": (2, 2.0),
    "MISSION_CURRENT": (42, 1.0),
    "EXTENDED_SYS_STATE": (245, 2.0),
    "HOME_POSITION": (242, 0.5),
}
KEPT = {*STREAMS, "STATUSTEXT", "HEARTBEAT", "MISSION_ITEM_REACHED", "COMMAND_ACK", "MISSION_ACK"}
KEPT |= {"MISSION_REQUEST", "MISSION_REQUEST_INT", "PARAM_VALUE"}
MAV_MODE_FLAG_SAFETY_ARMED = 128
AUTOPILOT_COMPONENT = 1
COPTER_MODES = {"STABILIZE": 0, "ALT_HOLD": 2, "AUTO": 3, "GUIDED": 4, "LAND": 9, "RTL": 6}
MAV_CMD_COMPONENT_ARM_DISARM = 400
MAV_CMD_DO_SET_MODE = 176
MAV_CMD_MISSION_START = 300
MAV_CMD_SET_MESSAGE_INTERVAL = 511
MAV_CMD_SET_EKF_SOURCE_SET = 42007
MAV_RESULT_ACCEPTED = 0
MAV_LANDED_STATE_ON_GROUND = 1
EKF_POS_HORIZ_ABS = 16  # EKF_STATUS_REPORT flag


def find_sitl(folder: Path | None) -> Path:
    """The folder holding ``arducopter`` and ``copter.parm``, or a one-line error saying what is missing."""
    chosen = Path(folder or os.environ.get(SITL_ENV) or DEFAULT_SITL)
    for name in ("arducopter", "copter.parm"):
        if not (chosen / name).is_file():
            raise GeolinkError(
                f"{chosen}: no {name} (give --sitl DIR or ${SITL_ENV}: a folder with an ArduCopter SITL "
                "binary and its copter.parm; docs/sitl.md says how to build one)"
            )
    return chosen


@dataclass
class Seen:
    """Every kept message from serial0 with the unix time it arrived (appended by one thread)."""

    messages: list[tuple[float, object]] = field(default_factory=list)

    def of(self, kind: str, after: float = 0.0) -> list[tuple[float, object]]:
        return [(t, m) for t, m in list(self.messages) if m.get_type() == kind and t >= after]

    def texts(self, after: float = 0.0) -> list[tuple[float, str]]:
        return [(t, m.text) for t, m in self.of("STATUSTEXT", after)]

    def last(self, kind: str):
        for _, m in reversed(self.messages):
            if m.get_type() == kind:
                return m
        return None


def _degrees(value: float) -> float:
    """SIM_STATE's float position: degE7 in ArduPilot (a float32 of degrees would lose a metre)."""
    return value / 1e7 if abs(value) > 360 else value


def pose_of(t: float, msg) -> Pose | None:
    """The vehicle's true pose in a SIM_STATE (degE7 position when sent, else float degrees)."""
    lat = msg.lat_int / 1e7 if getattr(msg, "lat_int", 0) else _degrees(msg.lat)
    lon = msg.lon_int / 1e7 if getattr(msg, "lon_int", 0) else _degrees(msg.lon)
    if not (math.isfinite(lat) and math.isfinite(lon)) or (lat == 0 and lon == 0):
        return None
    return Pose(t, float(lat), float(lon), float(msg.alt), BodyAttitude(msg.roll, msg.pitch, msg.yaw))


def end_process(process: subprocess.Popen | None) -> None:
    """Terminate ``process`` if it still runs; killed when it has not ended 5 s later."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class Sitl:
    """One ArduCopter SITL process and the observer's link to it (serial0)."""

    def __init__(
        self,
        folder: Path,
        instance: int,
        home: tuple[float, float, float, float],
        run_dir: Path,
        parm_files: tuple[Path, ...] = (),
        gcs: str | None = None,
    ):
        self.folder, self.instance, self.home, self.run_dir = folder, instance, home, run_dir
        self.parm_files, self.gcs = parm_files, gcs
        self.runtime_url = f"tcp:127.0.0.1:{5762 + 10 * instance}"
        self.seen = Seen()
        self.process: subprocess.Popen | None = None
        self.link = None
        self._pose: Pose | None = None
        self._stop = threading.Event()
        self._reader: threading.Thread | None = None

    def command_line(self) -> list[str]:
        defaults = ",".join(str(p) for p in (self.folder / "copter.parm", *self.parm_files))
        gcs = f"udpclient:{self.gcs}" if self.gcs else "none:2"
        return [
            str(self.folder / "arducopter"), "--model", "quad", "--speedup", str(BOOT_SPEEDUP),
            f"-I{self.instance}", "--home", ",".join(f"{v:.8f}" for v in self.home),
            "--defaults", defaults, "--serial0", f"udpclient:127.0.0.1:{14550 + 10 * self.instance}",
            "--serial1", "tcp:2", "--serial2", gcs, "--sim-address", "127.0.0.1", "-w",
        ]  # fmt: skip

    def start(self) -> None:
        from geolink_edge.runtime.mavlink import load_mavutil

        mavutil = load_mavutil()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # the observer's port is bound before SITL sends to it, so no early message is lost
        self.link = mavutil.mavlink_connection(
            f"udpin:127.0.0.1:{14550 + 10 * self.instance}", source_system=255, source_component=190
        )
        with (self.run_dir / "sitl.out").open("wb") as out:
            self.process = subprocess.Popen(
                self.command_line(), cwd=self.run_dir, stdout=out, stderr=subprocess.STDOUT
            )
        if self.link.wait_heartbeat(timeout=30) is None:
            raise GeolinkError(
                f"SITL instance {self.instance} sent no heartbeat (see {self.run_dir}/sitl.out)"
            )
        for message_id, rate in STREAMS.values():
            self.command(MAV_CMD_SET_MESSAGE_INTERVAL, message_id, 1e6 / rate)
        self._reader = threading.Thread(target=self._read, name="sitl-observer", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            msg = self.link.recv_match(blocking=True, timeout=0.2)
            if msg is None:
                continue
            kind = msg.get_type()
            if kind not in KEPT or (kind == "HEARTBEAT" and msg.get_srcComponent() != AUTOPILOT_COMPONENT):
                continue  # the autopilot routes other components' heartbeats (the runtime's) to every link
            now = time.time()
            if kind == "SIM_STATE":
                self._pose = pose_of(now, msg) or self._pose
            self.seen.messages.append((now, msg))

    def pose(self) -> Pose | None:
        """The newest true pose (what the simulated camera renders from)."""
        return self._pose

    def wait(self, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.time() + timeout_s
        while not condition():
            if self.process is not None and self.process.poll() is not None:
                raise GeolinkError(f"SITL ended while waiting for {what} (see {self.run_dir}/sitl.out)")
            if time.time() > deadline:
                raise TimeoutError(f"{what}: not within {timeout_s:.0f} s")
            time.sleep(0.1)

    def boot_time_s(self) -> float:
        last = self.seen.last("SYSTEM_TIME")
        return last.time_boot_ms / 1000.0 if last is not None else 0.0

    def boot(self) -> None:
        """Fast-forward past the EKF's start-up floor, then run in real time."""
        self.wait(lambda: self.boot_time_s() >= BOOT_S, 60, f"{BOOT_S:.0f} s of boot")
        self.set_param("SIM_SPEEDUP", 1.0)

    def command(self, command: int, *params: float) -> None:
        values = [*params, *([0.0] * (7 - len(params)))]
        self.link.mav.command_long_send(1, 1, command, 0, *values)

    def command_acked(self, command: int, *params: float, timeout_s: float = 3.0) -> bool:
        t0 = time.time()
        self.command(command, *params)
        deadline = t0 + timeout_s
        while time.time() < deadline:
            for _, ack in self.seen.of("COMMAND_ACK", t0):
                if ack.command == command:
                    return ack.result == MAV_RESULT_ACCEPTED
            time.sleep(0.05)
        return False

    def set_param(self, name: str, value: float) -> None:
        self.link.mav.param_set_send(1, 1, name.encode(), float(value), 9)  # MAV_PARAM_TYPE_REAL32

    def set_mode(self, mode: str) -> bool:
        return self.command_acked(MAV_CMD_DO_SET_MODE, 1, COPTER_MODES[mode])

    def armed(self) -> bool:
        heartbeat = self.seen.last("HEARTBEAT")
        return heartbeat is not None and bool(heartbeat.base_mode & MAV_MODE_FLAG_SAFETY_ARMED)

    def ekf_has_position(self) -> bool:
        """The EKF reports an absolute horizontal position (what a mode that needs one asks for)."""
        status = self.seen.last("EKF_STATUS_REPORT")
        return status is not None and bool(status.flags & EKF_POS_HORIZ_ABS)

    def on_ground(self) -> bool:
        state = self.seen.last("EXTENDED_SYS_STATE")
        return state is not None and state.landed_state == MAV_LANDED_STATE_ON_GROUND

    def relative_alt_m(self) -> float:
        position = self.seen.last("GLOBAL_POSITION_INT")
        return position.relative_alt / 1000.0 if position is not None else 0.0

    def mission_seq(self) -> int:
        current = self.seen.last("MISSION_CURRENT")
        return current.seq if current is not None else -1

    def upload_mission(self, items: list[dict], timeout_s: float = 20.0) -> None:
        """MISSION_COUNT, then each MISSION_ITEM_INT the autopilot asks for, until its MISSION_ACK."""
        t0 = time.time()
        self.link.mav.mission_count_send(1, 1, len(items), 0)
        sent: set[tuple[float, int]] = set()
        deadline = t0 + timeout_s
        while time.time() < deadline:
            for _, ack in self.seen.of("MISSION_ACK", t0):
                if ack.type != 0:
                    raise GeolinkError(f"the autopilot refused the mission (MISSION_ACK type {ack.type})")
                return
            for t, request in self.seen.of("MISSION_REQUEST_INT", t0) + self.seen.of("MISSION_REQUEST", t0):
                if (t, request.seq) in sent or request.seq >= len(items):
                    continue
                sent.add((t, request.seq))
                self.link.mav.mission_item_int_send(1, 1, request.seq, **items[request.seq])
            time.sleep(0.05)
        raise TimeoutError("mission upload: no MISSION_ACK")

    def stop(self) -> None:
        self._stop.set()
        if self._reader is not None:
            self._reader.join(timeout=2.0)
        end_process(self.process)
        if self.link is not None:
            self.link.close()
