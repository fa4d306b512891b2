"""Our Panda-class arm file against Franka's published kinematics, limits and a held payload."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import mujoco
import numpy as np
import pytest

from robota.spec import PANDA

PANDA_ARM_XML = Path(str(resources.files("robota.sim").joinpath("assets", "panda_arm.xml")))
JOINTS = tuple(f"joint{i}" for i in range(1, 8))

# Franka's modified (Craig) DH parameters, one row per joint and a last row for the flange:
# frame i-1 to frame i is Rx(alpha) Tx(a) Rz(theta) Tz(d), in m and rad.
MDH_A = (0.0, 0.0, 0.0, 0.0825, -0.0825, 0.0, 0.088, 0.0)
MDH_D = (0.333, 0.0, 0.316, 0.0, 0.384, 0.0, 0.0, 0.107)
MDH_ALPHA = (0.0, -np.pi / 2, np.pi / 2, np.pi / 2, -np.pi / 2, np.pi / 2, np.pi / 2, 0.0)

# Franka's published limits: position (rad), velocity (rad/s) and torque (N*m) per joint.
LOWER_RAD = (-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973)
UPPER_RAD = (2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973)
VELOCITY_LIMIT_RAD_S = (2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61)
TORQUE_LIMIT_NM = (87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0)

# Tool centre point of robota's gripper, along the flange z axis.
TCP_OFFSET_M = 0.135
# Home: the TCP at HOME_TCP_BASE_M pointing straight down, the flange x axis (the gripper's
# closing axis) along the base x axis. Solved by damped least squares on mj_jacSite.
HOME_QPOS_RAD = (0.227622, -0.617545, -0.078867, -2.646363, -0.050908, 2.029772, 0.185847)
HOME_TCP_BASE_M = (0.35, 0.05, 0.30)

# robota's gripper (0.9 kg, centre of mass 0.05 m out of the flange) and the heaviest part it
# carries (0.2 kg at the TCP).
GRIPPER_KG = 0.9
GRIPPER_COM_M = 0.05
PART_KG = 0.2
TIMESTEP_S = 0.002


def mdh_flange(q: np.ndarray) -> np.ndarray:
    """Flange pose `(4, 4)` in the base frame from the modified DH chain."""
    transform = np.eye(4)
    for theta, d, a, alpha in zip((*q, 0.0), MDH_D, MDH_A, MDH_ALPHA):
        ct, st, ca, sa = np.cos(theta), np.sin(theta), np.cos(alpha), np.sin(alpha)
        transform = transform @ np.array(
            [
                [ct, -st, 0.0, a],
                [st * ca, ct * ca, -sa, -sa * d],
                [st * sa, ct * sa, ca, ca * d],
                [0.0, 0.0, 0.0, 1.0],
            ]
        )
    return transform


def load_arm_spec(*, payload: bool = False) -> mujoco.MjSpec:
    """Load the arm file as a spec at 2 ms implicitfast, optionally with gripper and part masses.

    The payload bodies have no gravity compensation, so the servos alone must hold their weight.
    """
    spec = mujoco.MjSpec.from_file(str(PANDA_ARM_XML))
    spec.option.timestep = TIMESTEP_S
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    if payload:
        flange_m = MDH_D[-1]
        link7 = spec.body("link7")
        link7.add_body(
            name="gripper_mass",
            pos=[0.0, 0.0, flange_m + GRIPPER_COM_M],
            mass=GRIPPER_KG,
            inertia=[0.0015, 0.0015, 0.001],
        )
        link7.add_body(
            name="part_mass",
            pos=[0.0, 0.0, flange_m + TCP_OFFSET_M],
            mass=PART_KG,
            inertia=[1e-5, 1e-5, 1e-5],
        )
    return spec


@pytest.fixture(scope="module")
def arm():
    model = load_arm_spec().compile()
    return model, mujoco.MjData(model)


def test_arm_file_compiles_standalone(arm):
    model, _ = arm
    assert model.nq == 7
    assert tuple(model.joint(i).name for i in range(model.njnt)) == JOINTS
    assert tuple(model.actuator(i).name for i in range(model.nu)) == JOINTS
    for name in JOINTS:
        assert model.actuator(name).trnid[0] == model.joint(name).id
    assert model.site("flange").id >= 0
    assert model.nmesh == 0
    assert model.ntex == 0
    assert model.nlight == 0


def test_links_collide_with_cell_only(arm):
    model, _ = arm
    assert set(model.geom_contype) == {2}
    assert set(model.geom_conaffinity) == {0}
    for body in range(1, model.nbody):
        assert model.body_gravcomp[body] == 1.0


def test_flange_matches_modified_dh(arm):
    model, data = arm
    site = model.site("flange").id
    rng = np.random.default_rng(2024)
    for q in rng.uniform(LOWER_RAD, UPPER_RAD, (20, 7)):
        data.qpos[:] = q
        mujoco.mj_kinematics(model, data)
        expected = mdh_flange(q)
        np.testing.assert_allclose(data.site_xpos[site], expected[:3, 3], atol=1e-9)
        np.testing.assert_allclose(data.site_xmat[site].reshape(3, 3), expected[:3, :3], atol=1e-9)


def test_limits_match_franka(arm):
    model, _ = arm
    np.testing.assert_array_equal(model.jnt_range[:, 0], LOWER_RAD)
    np.testing.assert_array_equal(model.jnt_range[:, 1], UPPER_RAD)
    np.testing.assert_array_equal(model.actuator_ctrlrange, model.jnt_range)
    np.testing.assert_array_equal(model.actuator_forcerange[:, 1], TORQUE_LIMIT_NM)
    np.testing.assert_array_equal(model.jnt_actfrcrange[:, 1], TORQUE_LIMIT_NM)
    assert PANDA.joint_names == JOINTS
    assert PANDA.lower_rad == LOWER_RAD
    assert PANDA.upper_rad == UPPER_RAD
    assert PANDA.velocity_limit_rad_s == VELOCITY_LIMIT_RAD_S


def test_home_points_tool_down(arm):
    model, data = arm
    data.qpos[:] = HOME_QPOS_RAD
    mujoco.mj_kinematics(model, data)
    site = model.site("flange").id
    rotation = data.site_xmat[site].reshape(3, 3)
    tcp = data.site_xpos[site] + TCP_OFFSET_M * rotation[:, 2]
    np.testing.assert_allclose(tcp, HOME_TCP_BASE_M, atol=1e-5)
    np.testing.assert_allclose(rotation[:, 2], [0.0, 0.0, -1.0], atol=1e-5)
    np.testing.assert_allclose(rotation[:, 0], [1.0, 0.0, 0.0], atol=1e-5)
    assert np.all(np.asarray(HOME_QPOS_RAD) > np.asarray(LOWER_RAD) + 0.2)
    assert np.all(np.asarray(HOME_QPOS_RAD) < np.asarray(UPPER_RAD) - 0.2)


def test_home_held_with_payload():
    model = load_arm_spec(payload=True).compile()
    data = mujoco.MjData(model)
    data.qpos[:] = HOME_QPOS_RAD
    data.ctrl[:] = HOME_QPOS_RAD

    max_error_rad = 0.0
    for _ in range(round(2.0 / TIMESTEP_S)):
        mujoco.mj_step(model, data)
        max_error_rad = max(max_error_rad, np.abs(data.qpos - HOME_QPOS_RAD).max())
    assert max_error_rad < 1e-3


def test_servos_track_small_step():
    model = load_arm_spec().compile()
    data = mujoco.MjData(model)
    data.qpos[:] = HOME_QPOS_RAD
    target = np.asarray(HOME_QPOS_RAD) + 0.05
    data.ctrl[:] = target

    overshoot_rad = 0.0
    for _ in range(round(0.5 / TIMESTEP_S)):
        mujoco.mj_step(model, data)
        overshoot_rad = max(overshoot_rad, (data.qpos - target).max())
    assert np.abs(data.qpos - target).max() < 1e-4
    assert overshoot_rad < 1e-3


def test_large_jump_near_velocity_limits():
    """A saturated servo coasts at about Franka's velocity limit rather than speeding up."""
    model = load_arm_spec(payload=True).compile()
    data = mujoco.MjData(model)
    data.qpos[:] = HOME_QPOS_RAD
    target = np.asarray(HOME_QPOS_RAD) + 0.8
    assert np.all(target < UPPER_RAD)
    data.ctrl[:] = target

    peak_velocity_rad_s = np.zeros(7)
    for _ in range(round(1.5 / TIMESTEP_S)):
        mujoco.mj_step(model, data)
        peak_velocity_rad_s = np.maximum(peak_velocity_rad_s, np.abs(data.qvel))
    assert np.all(peak_velocity_rad_s < 1.25 * np.asarray(VELOCITY_LIMIT_RAD_S))
    assert np.abs(data.qpos - target).max() < 1e-3


def test_attaches_under_prefix():
    parent = mujoco.MjSpec()
    frame = parent.worldbody.add_frame(pos=[0.1, 0.0, 0.0])
    parent.attach(mujoco.MjSpec.from_file(str(PANDA_ARM_XML)), prefix="arm/", frame=frame)
    model = parent.compile()
    standalone = load_arm_spec().compile()

    assert model.actuator("arm/joint1").trnid[0] == model.joint("arm/joint1").id
    np.testing.assert_array_equal(model.actuator_gainprm, standalone.actuator_gainprm)
    np.testing.assert_array_equal(model.actuator_biasprm, standalone.actuator_biasprm)
    np.testing.assert_array_equal(model.dof_damping, standalone.dof_damping)
    np.testing.assert_array_equal(model.jnt_actgravcomp, standalone.jnt_actgravcomp)
