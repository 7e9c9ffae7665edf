"""What a SITL mission showed, judged on what the autopilot itself reported against SIMSTATE truth.

``report.json``: the integration's parameters, times (``gnss_cut_unix``, landing), per-second truth
(SIM_STATE), the EKF's position (GLOBAL_POSITION_INT) and flags (EKF_STATUS_REPORT), our fixes with
their reported accuracy and true error, every STATUSTEXT, the mission's progress, and the figures
of :func:`figures`. ``path.png``: truth, our fixes and the autopilot's position over the map.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from geolink_edge.geo import haversine_m
from geolink_edge.sim.sitl import EKF_POS_HORIZ_ABS

BAD_TEXTS = ("glitch", "failsafe", "variance")  # EKF trouble as ArduPilot words it
FLAG_SETTLE_S = 10.0  # the EKF's absolute position is judged from this long after the cut
TOUCHDOWN_M = 0.25  # true height above home that is on the ground (a quad at rest sits ~0.1 m up)


class Truth:
    """SIM_STATE's positions over time, interpolated at any time."""

    def __init__(self, seen):
        from geolink_edge.sim.sitl import pose_of

        poses = [p for p in (pose_of(t, m) for t, m in seen.of("SIM_STATE")) if p is not None]
        self.t = np.array([p.t_unix for p in poses])
        self.lat = np.array([p.lat for p in poses])
        self.lon = np.array([p.lon for p in poses])
        self.alt = np.array([p.alt_msl for p in poses])

    def at(self, t) -> tuple[np.ndarray, np.ndarray]:
        return np.interp(t, self.t, self.lat), np.interp(t, self.t, self.lon)

    def error_m(self, t, lat, lon) -> np.ndarray:
        true_lat, true_lon = self.at(np.asarray(t, float))
        return np.asarray(haversine_m(true_lat, true_lon, np.asarray(lat, float), np.asarray(lon, float)))


def sigma_m(cov) -> float:
    """The worst-direction 1-sigma of a 2×2 covariance: what the stream reports as the accuracy."""
    return float(math.sqrt(max(float(np.max(np.linalg.eigvalsh(np.asarray(cov, float)))), 0.0)))


def our_fixes(records: list[dict], truth: Truth) -> list[dict]:
    """Every estimate the runtime sent after a frame: position, reported accuracy, true error."""
    rows = [r for r in records if "estimate" in r]
    if not rows or not len(truth.t):
        return []
    t = np.array([r["t_capture"] for r in rows])
    errors = truth.error_m(t, [r["estimate"]["lat"] for r in rows], [r["estimate"]["lon"] for r in rows])
    return [
        {
            "t": float(ti),
            "lat": r["estimate"]["lat"],
            "lon": r["estimate"]["lon"],
            "reported_m": sigma_m(r["estimate"]["cov"]),
            "error_m": float(e),
        }
        for ti, r, e in zip(t, rows, errors, strict=True)
    ]


def per_second(seen, truth: Truth) -> list[dict]:
    """One row a second: truth, the autopilot's position and its EKF flags."""
    positions = seen.of("GLOBAL_POSITION_INT")
    flags = seen.of("EKF_STATUS_REPORT")
    if not len(truth.t):
        return []
    rows, p, f = [], 0, 0
    for second in np.arange(math.ceil(truth.t[0]), truth.t[-1]):
        while p + 1 < len(positions) and positions[p + 1][0] <= second:
            p += 1
        while f + 1 < len(flags) and flags[f + 1][0] <= second:
            f += 1
        lat, lon = truth.at(second)
        i = min(int(np.searchsorted(truth.t, second)), len(truth.t) - 1)
        row = {
            "t": float(second),
            "truth": {"lat": float(lat), "lon": float(lon), "alt": float(truth.alt[i])},
        }
        if positions and positions[p][0] <= second:
            t_sent, m = positions[p]
            row["autopilot"] = {"lat": m.lat / 1e7, "lon": m.lon / 1e7, "relative_alt": m.relative_alt / 1e3}
            row["autopilot_error_m"] = float(truth.error_m(t_sent, m.lat / 1e7, m.lon / 1e7))  # at its time
        if flags and flags[f][0] <= second:
            row["ekf_flags"] = int(flags[f][1].flags)
        rows.append(row)
    return rows


def stats(values) -> dict | None:
    values = np.asarray(values, float)
    if not values.size:
        return None
    return {
        "median": float(np.median(values)),
        "p90": float(np.percentile(values, 90)),
        "max": float(values.max()),
    }


def touchdown(seen, after: float, truth: Truth, ground_msl: float) -> float | None:
    """When the vehicle first touched the ground after ``after``: its true height above home below
    ``TOUCHDOWN_M`` (SIM_STATE), or the autopilot saying it is on the ground if that comes first
    (its land detector lags the contact by up to ~10 s, during which no position is due)."""
    from geolink_edge.sim.sitl import MAV_LANDED_STATE_ON_GROUND

    states = seen.of("EXTENDED_SYS_STATE", after)
    said = [t for t, m in states if m.landed_state == MAV_LANDED_STATE_ON_GROUND]
    low = (truth.t >= after) & (truth.alt - ground_msl < TOUCHDOWN_M)
    times = said[:1] + ([float(truth.t[low][0])] if low.any() else [])
    return min(times) if times else None


def figures(seen, result, fixes: list[dict], truth: Truth) -> dict:
    """The goal figures of a GNSS-denied flight, from the cut to the touchdown."""
    cut = result.gnss_cut_unix
    if cut is None or not len(truth.t):
        return {"gnss_cut": False}
    home_lat, home_lon, ground_msl = result.home
    down = touchdown(seen, cut, truth, ground_msl) or truth.t[-1]
    flags = [m.flags for t, m in seen.of("EKF_STATUS_REPORT", cut + FLAG_SETTLE_S) if t <= down]
    positions = [(t, m) for t, m in seen.of("GLOBAL_POSITION_INT", cut) if t <= down]
    errors = truth.error_m(
        [t for t, _ in positions], [m.lat / 1e7 for _, m in positions], [m.lon / 1e7 for _, m in positions]
    ) if positions else []  # fmt: skip
    after = [f for f in fixes if cut <= f["t"] <= down]
    within = [f["error_m"] <= 2.0 * f["reported_m"] for f in after]
    texts = [m.text for t, m in seen.of("STATUSTEXT", cut) if t <= down]  # on the ground, no position is due
    end_lat, end_lon = truth.lat[-1], truth.lon[-1]
    out = {
        "gnss_cut": True,
        "gnss_off_flying_s": float(down - cut),
        "landing_from_home_m": float(haversine_m(home_lat, home_lon, end_lat, end_lon)),
        "ekf_abs_share": float(np.mean([bool(f & EKF_POS_HORIZ_ABS) for f in flags])) if flags else 0.0,
        "ekf_abs_gaps": absolute_gaps(seen, cut + FLAG_SETTLE_S, down, cut),
        "last_estimate_to_touchdown_s": float(down - max(f["t"] for f in after)) if after else None,
        "bad_texts": [t for t in texts if any(bad in t.lower() for bad in BAD_TEXTS)],
        "autopilot_error_m": stats(errors),
        "fixes_after_cut": len(after),
        "reported_accuracy_m": stats([f["reported_m"] for f in after]),
        "our_error_m": stats([f["error_m"] for f in after]),
        "within_2x_reported": float(np.mean(within)) if within else None,
        "realtime_ratio": realtime_ratio(seen, cut, down),
    }
    return out


def absolute_gaps(seen, start: float, end: float, cut: float) -> list[dict]:
    """Spans between ``start`` and ``end`` without the EKF's absolute position: when (seconds after
    the cut), how long, and the height the autopilot gave then."""
    heights = seen.of("GLOBAL_POSITION_INT", start)
    gaps, since = [], None
    for t, m in [(t, m) for t, m in seen.of("EKF_STATUS_REPORT", start) if t <= end] + [(end, None)]:
        lost = m is not None and not m.flags & EKF_POS_HORIZ_ABS
        if lost and since is None:
            since = t
        elif not lost and since is not None:
            before = [h for th, h in heights if th <= since]
            height = before[-1].relative_alt / 1e3 if before else None
            gaps.append({"after_cut_s": since - cut, "s": t - since, "height_m": height})
            since = None
    return gaps


def realtime_ratio(seen, start: float, end: float) -> float | None:
    """Simulated seconds per wall-clock second between two times (1.0: real time)."""
    times = [(t, m.time_boot_ms / 1e3) for t, m in seen.of("SYSTEM_TIME", start) if t <= end]
    if len(times) < 2 or times[-1][0] <= times[0][0]:
        return None
    return float((times[-1][1] - times[0][1]) / (times[-1][0] - times[0][0]))


def statustexts(seen) -> list[dict]:
    return [{"t": t, "severity": int(m.severity), "text": m.text} for t, m in seen.of("STATUSTEXT")]


def mission_progress(seen) -> list[dict]:
    reached = [{"t": t, "reached": int(m.seq)} for t, m in seen.of("MISSION_ITEM_REACHED")]
    current, changes = None, []
    for t, m in seen.of("MISSION_CURRENT"):
        if m.seq != current:
            current = m.seq
            changes.append({"t": t, "current": int(m.seq)})
    return sorted(reached + changes, key=lambda row: row["t"])


def goals(out: dict, result) -> dict[str, bool]:
    """The issue's goals, each true or false (nothing loosened: these are the stated bars)."""
    if not out.get("gnss_cut"):
        return {"mission": False}
    ap, acc = out["autopilot_error_m"] or {}, out["reported_accuracy_m"] or {}
    return {
        "mission completed and landed": bool(result.mission_completed and result.landed),
        "GNSS off >= 180 s of flight": out["gnss_off_flying_s"] >= 180.0,
        "landing <= 5 m from home": out["landing_from_home_m"] <= 5.0,
        "EKF flag 16 100 % from cut+10 s": out["ekf_abs_share"] >= 1.0,
        "no glitch/failsafe/variance text": not out["bad_texts"],
        "autopilot error median <= 3 m": ap.get("median", math.inf) <= 3.0,
        "autopilot error max <= 10 m": ap.get("max", math.inf) <= 10.0,
        "reported accuracy median <= 5 m": acc.get("median", math.inf) <= 5.0,
        ">= 90 % of errors within 2x reported": (out["within_2x_reported"] or 0.0) >= 0.9,
        "real time (speed-up 1)": abs((out["realtime_ratio"] or 0.0) - 1.0) <= 0.05,
    }


def draw_path(
    ortho: Path, truth: Truth, fixes: list[dict], rows: list[dict], cut: float | None, path: Path
) -> Path:
    from geolink_edge.demo_plots import _ortho_preview, _pyplot

    plt = _pyplot()
    rgb, to_pixels = _ortho_preview(ortho)
    fig, ax = plt.subplots(figsize=(9, 9))
    ax.imshow(rgb)
    ax.plot(*to_pixels(truth.lat, truth.lon), "-", color="white", lw=2.5, label="truth (SIMSTATE)")
    autopilot = [r["autopilot"] for r in rows if "autopilot" in r]
    if autopilot:
        lat, lon = (np.array([a[k] for a in autopilot]) for k in ("lat", "lon"))
        ax.plot(
            *to_pixels(lat, lon), "-", color="deepskyblue", lw=1.3, label="autopilot (GLOBAL_POSITION_INT)"
        )
    fixes = [f for f in fixes if math.isfinite(f["lat"]) and math.isfinite(f["lon"])]
    if fixes:
        lat, lon = (np.array([f[k] for f in fixes]) for k in ("lat", "lon"))
        ax.plot(*to_pixels(lat, lon), "o", color="red", ms=2.5, label="geolink-edge fixes")
    if cut is not None:
        lat, lon = truth.at(cut)
        ax.plot(*to_pixels(lat, lon), "X", color="yellow", ms=12, label="GNSS cut")
    ax.plot(*to_pixels(truth.lat[:1], truth.lon[:1]), "*", color="orange", ms=14, label="home")
    ax.legend(loc="lower right")
    ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
    return path
