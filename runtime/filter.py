"""A constant-velocity Kalman filter on the local ENU plane that turns fixes into a track.

States: ``acquiring`` (no track: fixes are held until ``confirm`` of them agree, so a single wrong
global match never starts a track), ``tracking`` (predict, gate each fix by its Mahalanobis
distance, coast with a growing covariance when a frame has no fix; gated fixes in a row that agree
with one another start it again where they are, as after a turn the constant-velocity prediction
overshot) and back to ``acquiring`` after ``max_misses`` frames without an accepted fix — when the
locator searches where the lost track could now be (:meth:`TrackFilter.lost_region`), then everywhere.

The autopilot output reads the track from another thread (:meth:`TrackFilter.state`), so every
method holds one lock. ``resets`` counts discontinuities only — a new track that starts where the
old one, predicted forward, could not have been — which is what an ODOMETRY reset counter means.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

CHI2_2DOF_999 = 13.816  # 99.9 % quantile of chi-square with 2 degrees of freedom


@dataclass(frozen=True)
class FilterConf:
    accel_sigma: float = 8.0  # m/s², white-acceleration process noise (drones turn hard)
    gate_chi2: float = CHI2_2DOF_999  # a fix this far from the prediction (squared Mahalanobis) is gated
    max_misses: int = 8  # frames without an accepted fix before the track is lost
    confirm: int = 2  # fixes that agree before a track starts
    max_speed: float = 40.0  # m/s, bounds how far apart two confirming fixes may be
    confirm_slack_m: float = 15.0  # distance confirming fixes may differ beyond max_speed × their interval
    init_speed_sigma: float = 15.0  # when the two confirming fixes are too close in time to tell a speed
    restart_after_gated: int = 2  # gated fixes in a row that agree restart the track there; 0: never
    converged_speed_sigma: float = 1.0  # m/s: a velocity this certain may be told to the autopilot


@dataclass(frozen=True)
class TrackState:
    """The track predicted to one time: what the autopilot output needs."""

    t: float
    position: np.ndarray  # (east, north) m
    velocity: np.ndarray  # (v_east, v_north) m/s
    covariance: np.ndarray  # 4×4 over (east, north, v_east, v_north)
    age_s: float  # time since the last accepted fix
    speed_sigma: float  # 1-sigma of the worst velocity axis, m/s
    converged: bool  # speed_sigma within FilterConf.converged_speed_sigma
    resets: int  # discontinuities so far


@dataclass(frozen=True)
class Update:
    status: str  # "accepted" | "gated" | "acquiring" | "coasting" | "lost"
    mahalanobis2: float | None = None


def propagate(x: np.ndarray, p: np.ndarray, dt: float, accel_sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Constant-velocity prediction of state ``x`` and covariance ``p`` over ``dt`` seconds."""
    f = np.eye(4)
    f[0, 2] = f[1, 3] = dt
    q1 = np.array([[dt**4 / 4, dt**3 / 2], [dt**3 / 2, dt**2]]) * accel_sigma**2
    q = np.zeros((4, 4))
    q[np.ix_([0, 2], [0, 2])] = q1
    q[np.ix_([1, 3], [1, 3])] = q1
    return f @ x, f @ p @ f.T + q


def _region(
    position: np.ndarray, cov: np.ndarray, sigmas: float, floor_m: float
) -> tuple[float, float, float]:
    """A circle of ``sigmas`` along the worst axis of ``cov``, at least ``floor_m`` wide."""
    radius = sigmas * float(np.sqrt(np.max(np.linalg.eigvalsh(cov))))
    return float(position[0]), float(position[1]), max(radius, floor_m)


class TrackFilter:
    def __init__(self, conf: FilterConf = FilterConf()):
        self.conf = conf
        self.x = np.zeros(4)  # east, north, v_east, v_north
        self.P = np.eye(4)
        self.t: float | None = None
        self.tracking = False
        self.misses = 0
        self.starts = 0  # tracks started
        self.resets = 0  # tracks that started off the previous one's prediction: discontinuities
        self.t_fix: float | None = None  # time of the last accepted fix
        self._previous: tuple[float, np.ndarray, np.ndarray] | None = None  # (t, x, P) of the lost track
        self._pending: list[tuple[float, np.ndarray, np.ndarray]] = []
        self._lock = threading.RLock()

    # -- prediction -----------------------------------------------------------------------
    def _propagate(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        dt = max(0.0, t - self.t) if self.t is not None else 0.0
        return propagate(self.x, self.P, dt, self.conf.accel_sigma)

    def predict(self, t: float) -> tuple[np.ndarray, np.ndarray] | None:
        """Predicted (position, 2×2 covariance) at ``t``, or None without a track."""
        with self._lock:
            if not self.tracking:
                return None
            x, p = self._propagate(t)
            return x[:2], p[:2, :2]

    def state(self, t: float) -> TrackState | None:
        """The whole track predicted to ``t`` (never before the last update), or None without a track."""
        with self._lock:
            if not self.tracking or self.t_fix is None:
                return None
            x, p = self._propagate(t)
            speed_sigma = float(np.sqrt(max(float(np.max(np.linalg.eigvalsh(p[2:, 2:]))), 0.0)))
            return TrackState(
                t=t,
                position=x[:2],
                velocity=x[2:],
                covariance=p,
                age_s=max(0.0, t - self.t_fix),
                speed_sigma=speed_sigma,
                converged=speed_sigma <= self.conf.converged_speed_sigma,
                resets=self.resets,
            )

    def search_region(
        self, t: float, sigmas: float = 3.0, floor_m: float = 10.0
    ) -> tuple[float, float, float] | None:
        """(east, north, radius_m) where the drone should be at ``t`` — the locator's prior."""
        pred = self.predict(t)
        return None if pred is None else _region(*pred, sigmas, floor_m)

    def lost_region(
        self, t: float, sigmas: float = 3.0, floor_m: float = 10.0
    ) -> tuple[float, float, float] | None:
        """(east, north, radius_m) where the last lost track, predicted on to ``t``, could be: where to
        look again before searching everywhere. None while tracking or before a track was lost."""
        with self._lock:
            if self.tracking or self._previous is None:
                return None
            t0, x0, p0 = self._previous
            x, p = propagate(x0, p0, max(0.0, t - t0), self.conf.accel_sigma)
            return _region(x[:2], p[:2, :2], sigmas, floor_m)

    def pending(self) -> tuple[float, np.ndarray] | None:
        """(t, east/north) of the latest fix awaiting confirmation, if any."""
        with self._lock:
            return (self._pending[-1][0], self._pending[-1][1].copy()) if self._pending else None

    # -- updates -------------------------------------------------------------------------
    def miss(self, t: float) -> Update:
        """A frame without a usable fix: coast on the prediction, or give the track up."""
        with self._lock:
            if self.tracking:
                self._pending.clear()  # gated fixes restart a track only in a row
            return self._coast(t)

    def _coast(self, t: float) -> Update:
        with self._lock:
            if not self.tracking:
                return Update("acquiring")
            self.misses += 1
            if self.misses >= self.conf.max_misses:
                self.tracking = False
                self._previous = (self.t, self.x.copy(), self.P.copy())
                self._pending.clear()
                return Update("lost")
            self.x, self.P = self._propagate(t)
            self.t = t
            return Update("coasting")

    def update(self, t: float, z: np.ndarray, r: np.ndarray) -> Update:
        """Offer a fix (east, north) with covariance ``r`` (2×2)."""
        z, r = np.asarray(z, float)[:2], np.asarray(r, float)[:2, :2]
        with self._lock:
            if not self.tracking:
                return self._acquire(t, z, r)
            x, p = self._propagate(t)
            h = np.zeros((2, 4))
            h[0, 0] = h[1, 1] = 1.0
            innovation = z - h @ x
            s = h @ p @ h.T + r
            d2 = float(innovation @ np.linalg.solve(s, innovation))
            if d2 > self.conf.gate_chi2:
                # fixes the track rejects but that agree with one another (a turn the constant-velocity
                # prediction overshot) start it again there, as agreeing fixes start a new track
                if self.conf.restart_after_gated and self._confirmed(t, z, r, self.conf.restart_after_gated):
                    return Update("accepted", d2)
                update = self._coast(t)
                return Update("lost" if update.status == "lost" else "gated", d2)
            self._pending.clear()
            gain = p @ h.T @ np.linalg.inv(s)
            self.x = x + gain @ innovation
            joseph = np.eye(4) - gain @ h  # Joseph form keeps P symmetric positive definite
            self.P = joseph @ p @ joseph.T + gain @ r @ gain.T
            self.t = self.t_fix = t
            self.misses = 0
            return Update("accepted", d2)

    def start_from_trusted_fix(
        self,
        t: float,
        z: np.ndarray,
        r: np.ndarray,
        v: np.ndarray | None = None,
        r_v: np.ndarray | None = None,
    ) -> Update:
        """Start a track at once from a position trusted like one of our own fixes: no confirming
        fixes needed, and :meth:`state` reports it (so it would reach the autopilot); velocity ``v``
        with covariance ``r_v``, or unknown. While tracking, it is an ordinary :meth:`update`."""
        z, r = np.asarray(z, float)[:2], np.asarray(r, float)[:2, :2]
        with self._lock:
            if self.tracking:
                return self.update(t, z, r)
            self.P = np.zeros((4, 4))
            self.P[:2, :2] = r
            known = v is not None
            self.P[2:, 2:] = np.asarray(r_v, float) if known else np.eye(2) * self.conf.init_speed_sigma**2
            self._start(t, z, r, np.asarray(v, float)[:2] if known else np.zeros(2))
            return Update("accepted", 0.0)

    def _start(self, t: float, z: np.ndarray, r: np.ndarray, velocity: np.ndarray) -> None:
        """Begin tracking at ``z`` (covariance already in ``self.P``)."""
        if not self._continues_previous(t, z, r):
            self.resets += 1
        self.x = np.concatenate([z, velocity])
        self.t = self.t_fix = t
        self.tracking = True
        self.misses = 0
        self.starts += 1
        self._pending.clear()

    def _acquire(self, t: float, z: np.ndarray, r: np.ndarray) -> Update:
        return Update("accepted", 0.0) if self._confirmed(t, z, r, self.conf.confirm) else Update("acquiring")

    def _confirmed(self, t: float, z: np.ndarray, r: np.ndarray, confirm: int) -> bool:
        """Hold the fix with those before it that agree with it; once ``confirm`` of them agree, start
        a track from the first and the last (a tracking one is replaced: a discontinuity if it could
        not have been there)."""
        conf = self.conf
        if self._pending:
            t0, z0, _ = self._pending[-1]
            limit = conf.max_speed * max(t - t0, 0.0) + conf.confirm_slack_m + 3.0 * np.sqrt(np.trace(r))
            if np.linalg.norm(z - z0) > limit:
                self._pending.clear()  # disagreeing fixes: start over from this one
        self._pending.append((t, z, r))
        if len(self._pending) < confirm:
            return False
        if self.tracking:
            self._previous = (self.t, self.x.copy(), self.P.copy())
        (t0, z0, r0), (t1, z1, r1) = self._pending[0], self._pending[-1]
        dt = t1 - t0
        self.P = np.zeros((4, 4))
        self.P[:2, :2] = r1
        if dt > 1e-3:
            # the velocity of two fixes and its exact covariance: their errors divided by the interval
            velocity = (z1 - z0) / dt
            self.P[:2, 2:] = self.P[2:, :2] = r1 / dt
            self.P[2:, 2:] = (r0 + r1) / dt**2
        else:
            velocity = np.zeros(2)
            self.P[2:, 2:] = np.eye(2) * conf.init_speed_sigma**2
        self._start(t1, z1, r1, velocity)
        return True

    def warm_start_search_at(self, t: float, z: np.ndarray, r: np.ndarray) -> None:
        """A warm start that only narrows the search: a track at a position known otherwise (the
        autopilot's GNSS) that holds no fix of ours (``t_fix`` None), so :meth:`state` offers the
        autopilot nothing — never its own GNSS echoed back — until one of our fixes is accepted."""
        with self._lock:
            self.start_from_trusted_fix(t, z, r)
            self.t_fix = None

    def _continues_previous(self, t: float, z: np.ndarray, r: np.ndarray) -> bool:
        """Whether a new track's first position is where the lost track, predicted to ``t``, could be
        (true for the very first track: nothing was told before it)."""
        if self._previous is None:
            return True
        t0, x0, p0 = self._previous
        x, p = propagate(x0, p0, max(0.0, t - t0), self.conf.accel_sigma)
        innovation = z - x[:2]
        d2 = float(innovation @ np.linalg.solve(p[:2, :2] + r, innovation))
        return d2 <= self.conf.gate_chi2

    @property
    def position(self) -> np.ndarray:
        return self.x[:2].copy()

    @property
    def velocity(self) -> np.ndarray:
        return self.x[2:].copy()

    @property
    def covariance(self) -> np.ndarray:
        return self.P.copy()
