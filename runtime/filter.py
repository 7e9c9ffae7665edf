"""A constant-velocity Kalman filter on the local ENU plane that turns fixes into a track.

States: ``acquiring`` (no track: fixes are held until ``confirm`` of them agree, so a single wrong
global match never starts a track), ``tracking`` (predict, gate each fix by its Mahalanobis
distance, coast with a growing covariance when a frame has no fix) and back to ``acquiring``
after ``max_misses`` frames without an accepted fix — which sends the locator back to a global search.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CHI2_2DOF_999 = 13.816  # 99.9 % quantile of chi-square with 2 degrees of freedom


@dataclass(frozen=True)
class FilterConf:
    accel_sigma: float = 8.0  # m/s², white-acceleration process noise (drones turn hard)
    gate_chi2: float = CHI2_2DOF_999
    max_misses: int = 8
    confirm: int = 2
    max_speed: float = 40.0  # m/s, bounds how far apart two confirming fixes may be
    confirm_slack_m: float = 15.0
    init_speed_sigma: float = 15.0


@dataclass(frozen=True)
class Update:
    status: str  # "accepted" | "gated" | "acquiring" | "coasting" | "lost"
    mahalanobis2: float | None = None


class TrackFilter:
    def __init__(self, conf: FilterConf = FilterConf()):
        self.conf = conf
        self.x = np.zeros(4)  # east, north, v_east, v_north
        self.P = np.eye(4)
        self.t: float | None = None
        self.tracking = False
        self.misses = 0
        self.resets = 0  # number of track (re)starts: the ODOMETRY reset counter
        self._pending: list[tuple[float, np.ndarray, np.ndarray]] = []

    # -- prediction -----------------------------------------------------------------------
    def _propagate(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        dt = max(0.0, t - self.t) if self.t is not None else 0.0
        f = np.eye(4)
        f[0, 2] = f[1, 3] = dt
        q1 = np.array([[dt**4 / 4, dt**3 / 2], [dt**3 / 2, dt**2]]) * self.conf.accel_sigma**2
        q = np.zeros((4, 4))
        q[np.ix_([0, 2], [0, 2])] = q1
        q[np.ix_([1, 3], [1, 3])] = q1
        return f @ self.x, f @ self.P @ f.T + q

    def predict(self, t: float) -> tuple[np.ndarray, np.ndarray] | None:
        """Predicted (position, 2×2 covariance) at ``t``, or None without a track."""
        if not self.tracking:
            return None
        x, p = self._propagate(t)
        return x[:2], p[:2, :2]

    def search_region(
        self, t: float, sigmas: float = 3.0, floor_m: float = 10.0
    ) -> tuple[float, float, float] | None:
        """(east, north, radius_m) where the drone should be at ``t`` — the locator's prior."""
        pred = self.predict(t)
        if pred is None:
            return None
        pos, cov = pred
        radius = sigmas * float(np.sqrt(np.max(np.linalg.eigvalsh(cov))))
        return float(pos[0]), float(pos[1]), max(radius, floor_m)

    # -- updates -------------------------------------------------------------------------
    def miss(self, t: float) -> Update:
        """A frame without a usable fix: coast on the prediction, or give the track up."""
        if not self.tracking:
            return Update("acquiring")
        self.misses += 1
        if self.misses >= self.conf.max_misses:
            self.tracking = False
            self._pending.clear()
            return Update("lost")
        self.x, self.P = self._propagate(t)
        self.t = t
        return Update("coasting")

    def update(self, t: float, z: np.ndarray, r: np.ndarray) -> Update:
        """Offer a fix (east, north) with covariance ``r`` (2×2)."""
        z, r = np.asarray(z, float)[:2], np.asarray(r, float)[:2, :2]
        if not self.tracking:
            return self._acquire(t, z, r)
        x, p = self._propagate(t)
        h = np.zeros((2, 4))
        h[0, 0] = h[1, 1] = 1.0
        innovation = z - h @ x
        s = h @ p @ h.T + r
        d2 = float(innovation @ np.linalg.solve(s, innovation))
        if d2 > self.conf.gate_chi2:
            update = self.miss(t)
            return Update("lost" if update.status == "lost" else "gated", d2)
        gain = p @ h.T @ np.linalg.inv(s)
        self.x = x + gain @ innovation
        joseph = np.eye(4) - gain @ h  # Joseph form keeps P symmetric positive definite
        self.P = joseph @ p @ joseph.T + gain @ r @ gain.T
        self.t = t
        self.misses = 0
        return Update("accepted", d2)

    def _acquire(self, t: float, z: np.ndarray, r: np.ndarray) -> Update:
        conf = self.conf
        if self._pending:
            t0, z0, _ = self._pending[-1]
            limit = conf.max_speed * max(t - t0, 0.0) + conf.confirm_slack_m + 3.0 * np.sqrt(np.trace(r))
            if np.linalg.norm(z - z0) > limit:
                self._pending.clear()  # disagreeing fixes: start over from this one
        self._pending.append((t, z, r))
        if len(self._pending) < conf.confirm:
            return Update("acquiring")
        (t0, z0, _), (t1, z1, r1) = self._pending[0], self._pending[-1]
        dt = t1 - t0
        velocity = (z1 - z0) / dt if dt > 1e-3 else np.zeros(2)
        self.x = np.concatenate([z1, velocity])
        self.P = np.zeros((4, 4))
        self.P[:2, :2] = r1
        self.P[2:, 2:] = np.eye(2) * conf.init_speed_sigma**2
        self.t = t1
        self.tracking = True
        self.misses = 0
        self.resets += 1
        self._pending.clear()
        return Update("accepted", 0.0)

    @property
    def position(self) -> np.ndarray:
        return self.x[:2].copy()

    @property
    def velocity(self) -> np.ndarray:
        return self.x[2:].copy()

    @property
    def covariance(self) -> np.ndarray:
        return self.P.copy()
