"""Fault injection into the safety filter: one test per rule, plus the forward kinematics."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from robota.edge.kinematics import UR5E_CHAIN, DHChain
from robota.edge.safety import Reason, SafetyConfig, SafetyFilter
from robota.spec import UR5E

RATE_HZ = 10.0
# A pose with the tool 0.3 m above the table, well inside the default box.
HOME_RAD = np.array([2.896648, -1.966792, 2.017901, -1.621908, -1.570789, -1.815746])


def make_filter(**changes) -> SafetyFilter:
    config = SafetyConfig.default_for(UR5E)
    if changes:
        config = SafetyConfig(**{**config.__dict__, **changes})
    safety = SafetyFilter(UR5E, config, RATE_HZ, clock=lambda: 0.0)
    safety.reset(HOME_RAD, gripper_command=0.0)
    return safety


def action(joints, gripper=0.0) -> np.ndarray:
    return np.append(np.asarray(joints, dtype=np.float64), gripper)


def test_fk_matches_twin_tcp() -> None:
    mujoco = pytest.importorskip("mujoco")
    from robota.sim.twin import load_twin_model

    model, index = load_twin_model()
    data = mujoco.MjData(model)
    rng = np.random.default_rng(0)
    for q in rng.uniform(-3.0, 3.0, size=(8, 6)):
        data.qpos[index.arm_qpos] = q
        mujoco.mj_kinematics(model, data)
        np.testing.assert_allclose(UR5E_CHAIN.tool_points_base(q), data.site_xpos[index.tcp_site], atol=1e-9)


def test_fk_zero_pose_is_ur5e_reach() -> None:
    # At q = 0 the UR5e is stretched along -x: x = a2 + a3, y = -(d4 + d6 + tool), z = d1 - d5.
    point = UR5E_CHAIN.tool_points_base(np.zeros(6))
    np.testing.assert_allclose(point, [-0.8172, -(0.1333 + 0.0996 + 0.135), 0.1625 - 0.0997], atol=1e-12)


def test_dh_chain_rejects_ragged_table() -> None:
    with pytest.raises(ValueError, match="one per joint"):
        DHChain((0.1, 0.2), (0.0,), (0.0, 0.0))


def test_in_limits_action_passes_unchanged() -> None:
    safety = make_filter()
    target = action(HOME_RAD + 0.01, gripper=1.0)
    result = safety.filter(target)
    np.testing.assert_allclose(result.command, target)
    assert result.reasons == ()
    assert not result.held


def test_position_limit_clamps() -> None:
    safety = make_filter()
    safety.reset(np.array([0.0, -1.0, math.pi - 0.01, -1.5, -1.5, 0.0]))
    result = safety.filter(action([0.0, -1.0, math.pi + 0.5, -1.5, -1.5, 0.0]))
    assert Reason.POSITION_LIMIT in result.reasons
    assert result.command[2] <= math.pi
    assert safety.counts[Reason.POSITION_LIMIT] == 1


def test_velocity_limit_clamps_step() -> None:
    safety = make_filter(acceleration_limit_rad_s2=(1e6,) * 6)
    target = HOME_RAD.copy()
    target[0] += 1.0  # 10 rad/s at 10 Hz, above the 3.14 rad/s limit
    result = safety.filter(action(target))
    assert Reason.VELOCITY_LIMIT in result.reasons
    assert result.command[0] - HOME_RAD[0] == pytest.approx(math.pi / RATE_HZ)


def test_acceleration_limit_clamps_step_change() -> None:
    safety = make_filter()
    target = HOME_RAD.copy()
    target[0] += 0.5
    result = safety.filter(action(target))
    assert Reason.ACCELERATION_LIMIT in result.reasons
    # From rest, one period may change the step by at most a * dt^2 = 8 * 0.01 rad.
    assert result.command[0] - HOME_RAD[0] == pytest.approx(8.0 / RATE_HZ**2)
    second = safety.filter(action(target))
    assert second.command[0] - result.command[0] == pytest.approx(2 * 8.0 / RATE_HZ**2)


def test_gripper_command_clamped() -> None:
    safety = make_filter()
    result = safety.filter(action(HOME_RAD, gripper=1.7))
    assert result.command[-1] == 1.0
    assert result.reasons == (Reason.GRIPPER_RANGE,)


def test_workspace_cuts_step_at_box() -> None:
    # A box whose floor is 5 cm below the home tool point; a command that lowers the tool by
    # 20 cm along the path must stop at the floor.
    home_point = UR5E_CHAIN.tool_points_base(HOME_RAD)
    floor = home_point[2] - 0.05
    safety = make_filter(
        acceleration_limit_rad_s2=(1e6,) * 6,
        workspace_lower_m=(-0.9, -0.9, floor),
        workspace_upper_m=(0.9, 0.9, 1.0),
    )
    lowered = HOME_RAD.copy()
    lowered[1] += 0.25  # shoulder lift down
    lowered[2] += 0.0
    assert UR5E_CHAIN.tool_points_base(lowered)[2] < floor
    result = safety.filter(action(lowered))
    assert Reason.WORKSPACE in result.reasons
    kept_point = UR5E_CHAIN.tool_points_base(result.command[:6])
    assert kept_point[2] >= floor
    assert kept_point[2] < home_point[2]  # it still moved towards the target


def test_workspace_outside_start_moves_back_only() -> None:
    home_point = UR5E_CHAIN.tool_points_base(HOME_RAD)
    safety = make_filter(
        acceleration_limit_rad_s2=(1e6,) * 6,
        workspace_lower_m=(-0.9, -0.9, home_point[2] + 0.05),
        workspace_upper_m=(0.9, 0.9, 1.0),
    )
    lower = HOME_RAD.copy()
    lower[1] += 0.05
    result = safety.filter(action(lower))
    assert result.reasons == (Reason.WORKSPACE,)
    np.testing.assert_allclose(result.command[:6], HOME_RAD)
    higher = HOME_RAD.copy()
    higher[1] -= 0.05
    assert safety.filter(action(higher)).reasons == ()


def test_no_kinematics_skips_workspace() -> None:
    safety = make_filter(kinematics=None, acceleration_limit_rad_s2=(1e6,) * 6)
    lowered = HOME_RAD.copy()
    lowered[1] += 0.3
    assert Reason.WORKSPACE not in safety.filter(action(lowered)).reasons


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_action_holds(bad: float, caplog: pytest.LogCaptureFixture) -> None:
    safety = make_filter()
    target = action(HOME_RAD + 0.005)
    safety.filter(target)
    corrupt = target.copy()
    corrupt[3] = bad
    with caplog.at_level(logging.WARNING, logger="robota.edge.safety"):
        result = safety.filter(corrupt)
    assert result.held
    assert result.reasons == (Reason.NON_FINITE_ACTION,)
    np.testing.assert_allclose(result.command, target)
    assert safety.counts[Reason.NON_FINITE_ACTION] == 1
    assert "non_finite_action" in caplog.text


def test_missing_action_holds() -> None:
    safety = make_filter()
    result = safety.filter(None)
    assert result.held
    assert safety.counts[Reason.NO_ACTION] == 1


def test_wrench_limit_latches_stop() -> None:
    safety = make_filter()
    pushing = np.array([0.0, 0.0, -150.0, 0.0, 0.0, 0.0])
    for _ in range(2):  # below the 3-reading debounce the arm keeps moving
        assert not safety.filter(action(HOME_RAD + 0.005), wrench=pushing).held
    result = safety.filter(action(HOME_RAD + 0.005), wrench=pushing)
    assert result.held
    assert result.reasons == (Reason.WRENCH_LIMIT,)
    assert "3 consecutive readings" in safety.protective_stop

    calm = np.zeros(6)
    assert safety.filter(action(HOME_RAD + 0.005), wrench=calm).reasons == (Reason.PROTECTIVE_STOP,)
    safety.release()
    assert not safety.filter(action(HOME_RAD + 0.005), wrench=calm).held


def test_one_reading_force_spike_passes() -> None:
    safety = make_filter()
    spike = np.array([0.0, 0.0, -130.0, 0.0, 0.0, 0.0])
    calm = np.array([0.0, 0.0, -11.0, 0.0, 0.0, 0.0])
    for wrench in (calm, spike, calm, spike, spike, calm):
        assert not safety.filter(action(HOME_RAD), wrench=wrench).held
    assert safety.protective_stop is None
    assert safety.counts[Reason.WRENCH_LIMIT] == 0


def test_transient_force_limit_stops_at_once() -> None:
    safety = make_filter()
    result = safety.filter(action(HOME_RAD), wrench=np.array([0.0, 0.0, -201.0, 0, 0, 0]))
    assert result.reasons == (Reason.WRENCH_LIMIT,)
    assert "transient limit 200.0 N" in safety.protective_stop


def test_torque_limit_stops() -> None:
    safety = make_filter(wrench_debounce_samples=1)
    result = safety.filter(action(HOME_RAD), wrench=np.array([0, 0, 0, 0, 12.0, 0]))
    assert result.reasons == (Reason.WRENCH_LIMIT,)


def test_transient_torque_limit_stops_at_once() -> None:
    safety = make_filter()
    assert not safety.filter(action(HOME_RAD), wrench=np.array([0, 0, 0, 0, 12.0, 0])).held
    result = safety.filter(action(HOME_RAD), wrench=np.array([0, 0, 0, 0, 21.0, 0]))
    assert result.reasons == (Reason.WRENCH_LIMIT,)


def test_wrench_stop_holds_measured_joints() -> None:
    safety = make_filter(wrench_debounce_samples=1)
    safety.filter(action(HOME_RAD + 0.05, gripper=1.0))
    measured = HOME_RAD + 0.02  # the arm lags its command while pushing
    pushing = np.array([0.0, 0.0, -150.0, 0.0, 0.0, 0.0])

    proposed = action(HOME_RAD + 0.08, 1.0)
    stop = safety.filter(proposed, wrench=pushing, joint_positions_rad=measured)
    later = safety.filter(proposed, wrench=pushing, joint_positions_rad=HOME_RAD)

    np.testing.assert_allclose(stop.command, action(measured, gripper=1.0))
    np.testing.assert_allclose(later.command, action(measured, gripper=1.0))


def test_old_manifest_stops_on_one_reading() -> None:
    data = SafetyConfig.default_for(UR5E).to_dict()
    for key in ("wrench_debounce_samples", "max_transient_force_n", "max_transient_torque_n_m"):
        del data[key]
    config = SafetyConfig.from_dict(data)
    assert config.wrench_debounce_samples == 1
    assert config.max_transient_force_n == 100.0
    assert config.max_transient_torque_n_m == 10.0


def test_config_rejects_transient_below_sustained() -> None:
    with pytest.raises(ValueError, match="at least the sustained"):
        SafetyConfig((1.0,) * 6, max_force_n=100.0, max_transient_force_n=50.0)


def test_config_rejects_zero_debounce() -> None:
    with pytest.raises(ValueError, match="wrench_debounce_samples"):
        SafetyConfig((1.0,) * 6, wrench_debounce_samples=0)


@pytest.mark.parametrize("source", ["joint_states", "camera/wrist", "wrench"])
def test_watchdog_holds_on_stale_source(source: str) -> None:
    safety = make_filter()
    now_s = 100.0
    stamps = {"joint_states": now_s - 0.01, "camera/wrist": now_s - 0.05, "wrench": now_s - 0.01}
    assert not safety.filter(action(HOME_RAD), stamps_s=stamps, now_s=now_s).held

    stamps[source] = now_s - 0.6  # 6 periods at 10 Hz, above the 5-period limit
    result = safety.filter(action(HOME_RAD + 0.005), stamps_s=stamps, now_s=now_s)
    assert result.held
    assert result.reasons == (Reason.WATCHDOG,)
    assert source in safety.events[-1].detail


def test_watchdog_holds_before_first_message() -> None:
    safety = make_filter()
    result = safety.filter(action(HOME_RAD), stamps_s={"joint_states": None}, now_s=1.0)
    assert result.reasons == (Reason.WATCHDOG,)
    assert "never received" in safety.events[-1].detail


def test_repeated_interventions_log_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    safety = make_filter()
    with caplog.at_level(logging.WARNING, logger="robota.edge.safety"):
        for tick in range(20):
            safety.filter(None, now_s=tick * 0.1)
    assert safety.counts[Reason.NO_ACTION] == 20
    # One line at 0 s, one each second after: at 1.0 s (maybe 1.1 s by rounding) and later.
    assert 2 <= len(caplog.records) <= 3


def test_filter_before_reset_raises() -> None:
    safety = SafetyFilter(UR5E, SafetyConfig.default_for(UR5E), RATE_HZ)
    with pytest.raises(RuntimeError, match="reset"):
        safety.filter(action(HOME_RAD))


def test_config_round_trips_through_dict() -> None:
    config = SafetyConfig.default_for(UR5E)
    assert SafetyConfig.from_dict(config.to_dict()) == config


def test_config_rejects_inverted_box() -> None:
    with pytest.raises(ValueError, match="lower below upper"):
        SafetyConfig((1.0,) * 6, workspace_lower_m=(0, 0, 1), workspace_upper_m=(1, 1, 0))
