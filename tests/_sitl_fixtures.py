"""ArduPilot SITL (a real ArduCopter: GPS drivers, EKF3, arming checks) driven from the tests.

The SITL binary lives beside the project (``../shared/sitl``, or ``$GEOLINK_SITL``). It boots at 10×
speed until the EKF's ~38 s start-up floor is behind it, then runs in real time, so the runtime
under test sends at its real rates and its timeouts mean what they say. A test reads what
ArduPilot itself reports on its first link (UDP) while the runtime talks to it over TCP.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from geolink_edge.sim.sitl import end_process

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "runtime" / "params"  # what a user sets for each target
SITL_DIR = Path(os.environ.get("GEOLINK_SITL", REPO.parent / "shared" / "sitl"))
BOOT_FAST_SPEEDUP = 10  # measured stable on 2 shared cores (5× and 10× both keep lockstep)
BOOT_S = 40.0  # the EKF uses no position source before ~38 s after boot
WATCHED = {"GPS_RAW_INT": 24, "EKF_STATUS_REPORT": 193, "GLOBAL_POSITION_INT": 33, "SYSTEM_TIME": 2}
EKF_POS_HORIZ_ABS = 16


@dataclass
class Seen:
    """Every message ArduPilot sent on its first link, with the wall time it arrived."""

    messages: list[tuple[float, object]] = field(default_factory=list)

    def of(self, kind: str, after: float = 0.0) -> list[tuple[float, object]]:
        return [(t, m) for t, m in self.messages if m.get_type() == kind and t >= after]

    def texts(self, after: float = 0.0) -> list[tuple[float, str]]:
        return [(t, m.text) for t, m in self.of("STATUSTEXT", after)]


class Sitl:
    """One SITL instance: started by :meth:`start`, stopped by its process id in :meth:`stop`."""

    def __init__(
        self, instance: int, home: tuple[float, float, float, float], params: tuple[str, ...], run_dir: Path
    ):
        """``params``: .parm files applied in turn after copter.parm — a name beside the binary (the
        simulation's side), else a path (the integration's own, runtime/params); none: the simulated GPS."""
        self.instance, self.home, self.params, self.run_dir = instance, home, params, run_dir
        self.url = f"tcp:127.0.0.1:{5762 + 10 * instance}"  # for the runtime
        self.seen = Seen()
        self.process: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._reader: threading.Thread | None = None

    def start(self, mavutil) -> None:
        env = dict(
            os.environ,
            SITL_INSTANCE=str(self.instance),
            SITL_HOME=",".join(f"{v:.8f}" for v in self.home),
            SITL_SPEEDUP=str(BOOT_FAST_SPEEDUP),
        )
        env.pop("SITL_PARAMS", None)
        if self.params:
            env["SITL_PARAMS"] = ",".join(str(SITL_DIR / name) for name in self.params)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with (self.run_dir / "sitl.out").open("wb") as out:
            self.process = subprocess.Popen(
                [str(SITL_DIR / "start"), str(self.run_dir), "-w"], env=env, stdout=out, stderr=out
            )
        self.link = mavutil.mavlink_connection(f"udpin:127.0.0.1:{14550 + 10 * self.instance}")
        if self.link.wait_heartbeat(timeout=30) is None:
            raise RuntimeError(f"SITL instance {self.instance} sent no heartbeat (see {self.run_dir})")
        for message_id in WATCHED.values():  # MAV_CMD_SET_MESSAGE_INTERVAL, 5 Hz
            self.link.mav.command_long_send(1, 1, 511, 0, message_id, 200_000, 0, 0, 0, 0, 0)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            msg = self.link.recv_match(blocking=True, timeout=0.2)
            if msg is not None and msg.get_type() != "BAD_DATA":
                self.seen.messages.append((time.time(), msg))

    def boot_time_s(self) -> float:
        times = self.seen.of("SYSTEM_TIME")
        return times[-1][1].time_boot_ms / 1000.0 if times else 0.0

    def wait(self, condition, timeout_s: float, what: str) -> None:
        deadline = time.time() + timeout_s
        while not condition():
            if time.time() > deadline:
                raise RuntimeError(f"SITL: {what} not within {timeout_s} s")
            time.sleep(0.1)

    def boot(self) -> None:
        """Fast-forward past the EKF's start-up floor, then run in real time."""
        self.wait(lambda: self.boot_time_s() >= BOOT_S, 30, f"{BOOT_S} s of boot")
        self.set_param("SIM_SPEEDUP", 1.0)

    def set_param(self, name: str, value: float) -> None:
        self.link.mav.param_set_send(1, 1, name.encode(), value, 9)  # MAV_PARAM_TYPE_REAL32

    def stop(self) -> None:
        self._stop.set()
        if self._reader is not None:
            self._reader.join(timeout=2.0)
        end_process(self.process)
        self.link.close()


def sitl_available() -> bool:
    return (SITL_DIR / "start").is_file() and (SITL_DIR / "arducopter").is_file()


def hover_flight(
    flight: Path, out: Path, frame: int, seconds: float, hole: tuple[float, float] | None = None
):
    """A sim flight that hovers where ``flight``'s frame ``frame`` was taken, for ``seconds``; the
    frames of ``hole`` (start, end seconds) are missing, which a paced replay plays as a camera outage.
    Returns ``out`` and that frame's ground-truth row."""
    import csv
    import json

    rows = list(csv.DictReader((flight / "gt.csv").open()))
    row = rows[frame]
    meta = json.loads((flight / "flight.json").read_text())
    fps = float(meta["fps"])
    (out / "frames").mkdir(parents=True)
    source = flight / "frames" / f"{frame:06d}.jpg"
    lines = ["frame,timestamp,lat,lon,alt,yaw,pitch,roll"]
    for i in range(int(seconds * fps)):
        t = i / fps
        lines.append(f"{i},{t:.3f},{row['lat']},{row['lon']},{row['alt']},{row['yaw']},{row['pitch']},0.0")
        if hole is None or not hole[0] <= t < hole[1]:
            os.link(source, out / "frames" / f"{i:06d}.jpg")
    (out / "gt.csv").write_text("\n".join(lines) + "\n")
    (out / "flight.json").write_text(json.dumps({**meta, "frames": len(lines) - 1, "speed_mps": 0.0}))
    shutil.copy(flight / "camera.yaml", out / "camera.yaml")
    return out, {k: float(v) for k, v in row.items()}
