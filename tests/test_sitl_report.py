"""What a SITL mission's report makes of the autopilot's messages, on hand-made message streams."""

from __future__ import annotations

import numpy as np
import pytest
from pymavlink.dialects.v20 import ardupilotmega as mavlink

from geolink_edge.sim.report import absolute_gaps
from geolink_edge.sim.sitl import EKF_POS_HORIZ_ABS, Seen

WITH, WITHOUT = 0x1F | EKF_POS_HORIZ_ABS, 0x1F & ~EKF_POS_HORIZ_ABS


def ekf(flags: int):
    return mavlink.MAVLink_ekf_status_report_message(flags, 0.1, 0.1, 0.1, 0.1, 0.1)


def height(metres: float):
    return mavlink.MAVLink_global_position_int_message(0, 0, 0, 0, int(metres * 1e3), 0, 0, 0, 0)


def test_gaps_in_the_absolute_position_say_when_how_long_and_how_high():
    """Flag 16 lost from t = 12 to 15 s (two reports) and again from 19 s to the end of the window."""
    seen = Seen()
    for t in range(10, 22):
        seen.messages.append((float(t), height(30.0 - t)))
        seen.messages.append((t + 0.5, ekf(WITHOUT if 12 <= t < 14 or t >= 19 else WITH)))
    gaps = absolute_gaps(seen, start=11.0, end=21.0, cut=2.0)
    assert [g["after_cut_s"] for g in gaps] == [10.5, 17.5]
    assert [g["s"] for g in gaps] == [2.0, 21.0 - 19.5]
    assert gaps[0]["height_m"] == pytest.approx(18.0) and gaps[1]["height_m"] == pytest.approx(11.0)
    assert absolute_gaps(seen, start=14.0, end=18.9, cut=2.0) == []


def test_touchdown_is_the_first_contact_not_the_land_detectors_word():
    """The vehicle sits on the ground (true height 0.1 m) from t = 20 s; ArduPilot's land detector says
    so at t = 29 s: the touchdown is at 20 s. Without a contact in the truth, the autopilot's word."""
    from types import SimpleNamespace

    from geolink_edge.sim.report import touchdown

    seen = Seen()
    for t in (25.0, 29.0, 30.0):
        state = 1 if t >= 29.0 else 2  # MAV_LANDED_STATE_ON_GROUND, IN_AIR
        seen.messages.append((t, mavlink.MAVLink_extended_sys_state_message(0, state)))
    t = np.arange(0.0, 31.0)
    height = np.clip(40.0 - 2.0 * t, 0.1, None)  # reaches 0.1 m at t = 20 s (the cut was at 0)
    truth = SimpleNamespace(t=t, alt=500.0 + height)
    assert touchdown(seen, 1.0, truth, ground_msl=500.0) == 20.0
    hovering = SimpleNamespace(t=t, alt=np.full_like(t, 510.0))
    assert touchdown(seen, 1.0, hovering, ground_msl=500.0) == 29.0
