"""ArduPilot SITL (a real ArduCopter: GPS drivers, EKF3, arming checks) driven from the tests.

The SITL binary lives beside the project (``../shared/sitl``, or ``$GEOLINK_SITL``); the product's
own driver (:mod:`geolink_edge.sim.sitl`) starts it fast-forwarded past the EKF's ~38 s start-up
floor, then in real time, so the runtime under test sends at its real rates and its timeouts mean
what they say. A test reads what ArduPilot itself reports on its first link (UDP) while the runtime
talks to it over TCP.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from geolink_edge.sim.sitl import DEFAULT_SITL, EKF_POS_HORIZ_ABS, SITL_ENV, Sitl

__all__ = ["EKF_POS_HORIZ_ABS", "PARAMS", "hover_flight", "sitl_available", "start_sitl"]

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "runtime" / "params"  # what a user sets for each target
SITL_DIR = Path(os.environ.get(SITL_ENV) or DEFAULT_SITL)


def sitl_available() -> bool:
    return (SITL_DIR / "arducopter").is_file() and (SITL_DIR / "copter.parm").is_file()


def start_sitl(instance: int, home: tuple[float, float, float, float], params: tuple, run_dir: Path) -> Sitl:
    """A started and booted SITL; ``params``: .parm files applied in turn after copter.parm — a name
    beside the binary (the simulation's side), else a path (the integration's own, runtime/params);
    none: the simulated GPS."""
    files = tuple(p if isinstance(p, Path) else SITL_DIR / p for p in params)
    sitl = Sitl(SITL_DIR, instance, home, run_dir, files)
    try:
        sitl.start()
        sitl.boot()
    except BaseException:
        sitl.stop()
        raise
    return sitl


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
