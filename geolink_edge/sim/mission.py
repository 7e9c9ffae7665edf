"""The AUTO mission of ``geolink-edge sitl``: take off, fly a rectangular loop round home, land at home.

The loop is a ``width`` × ``depth`` rectangle centred on home: out to its first corner, once round,
back to home and down. Turns are the autopilot's own (waypoint navigation at its stock acceleration).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geolink_edge.errors import GeolinkError
from geolink_edge.geo import LocalFrame

MAV_FRAME_GLOBAL_RELATIVE_ALT_INT = 6
MAV_CMD_NAV_WAYPOINT = 16
MAV_CMD_NAV_LAND = 21
MAV_CMD_NAV_TAKEOFF = 22
MAV_CMD_DO_CHANGE_SPEED = 178
SPEED_TYPE_GROUND = 1


@dataclass(frozen=True)
class MissionPlan:
    altitude: float = 100.0  # above home, m
    speed: float = 9.0  # ground speed, m/s
    width: float = 500.0  # east–west side of the loop, m
    depth: float = 280.0  # north–south side, m

    def __post_init__(self) -> None:
        if not (5.0 <= self.altitude <= 500.0 and 1.0 <= self.speed <= 20.0):
            raise GeolinkError(
                f"--altitude {self.altitude} m, --speed {self.speed} m/s: need 5–500 m and 1–20 m/s"
            )
        if not (min(self.width, self.depth) >= 10.0):
            raise GeolinkError(f"--loop {self.width:g},{self.depth:g}: each side at least 10 m")

    @property
    def loop_m(self) -> float:
        return 2.0 * (self.width + self.depth)

    def corners_en(self) -> np.ndarray:
        """(east, north) offsets from home of the route's turning points, in flying order."""
        w, d = self.width / 2, self.depth / 2
        return np.array([(w, -d), (w, d), (-w, d), (-w, -d), (w, -d)], float)

    def route_m(self) -> float:
        """Length flown from home back to home."""
        points = np.vstack([[0.0, 0.0], self.corners_en(), [0.0, 0.0]])
        return float(np.hypot(*np.diff(points, axis=0).T).sum())

    def waypoints(self, home_lat: float, home_lon: float) -> list[tuple[float, float]]:
        corners = self.corners_en()
        lat, lon, _ = LocalFrame(home_lat, home_lon).to_geodetic(corners[:, 0], corners[:, 1])
        return [(float(a), float(b)) for a, b in zip(lat, lon, strict=True)]

    def items(self, home_lat: float, home_lon: float) -> list[dict]:
        """MISSION_ITEM_INT fields, item 0 being home (ArduPilot overwrites it)."""

        def item(command: int, lat=0.0, lon=0.0, alt=0.0, p1=0.0, p2=0.0) -> dict:
            return dict(
                frame=MAV_FRAME_GLOBAL_RELATIVE_ALT_INT, command=command, current=0, autocontinue=1,
                param1=p1, param2=p2, param3=0.0, param4=float("nan") if command == MAV_CMD_NAV_LAND else 0.0,
                x=int(round(lat * 1e7)), y=int(round(lon * 1e7)), z=float(alt), mission_type=0,
            )  # fmt: skip

        items = [
            item(MAV_CMD_NAV_WAYPOINT, home_lat, home_lon),
            item(MAV_CMD_NAV_TAKEOFF, home_lat, home_lon, self.altitude),
            item(MAV_CMD_DO_CHANGE_SPEED, p1=SPEED_TYPE_GROUND, p2=self.speed),
        ]
        items += [
            item(MAV_CMD_NAV_WAYPOINT, a, b, self.altitude) for a, b in self.waypoints(home_lat, home_lon)
        ]
        items.append(item(MAV_CMD_NAV_LAND, home_lat, home_lon, 0.0))
        return items

    @property
    def first_waypoint(self) -> int:
        return 3

    @property
    def land_item(self) -> int:
        return 3 + len(self.corners_en())
