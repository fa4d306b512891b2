"""The UR5e pick-and-place cell: model loading, names and state getters.

The cell's MJCF (`assets/ur5e_cell.xml`) puts the world frame at the arm's base frame in
Universal Robots' standard DH convention, with the table top at z = 0, so positions that the
twin reports "in the base frame" are MuJoCo world coordinates.
"""

from __future__ import annotations

from importlib import resources

import mujoco
import numpy as np

from robota.spec import UR5E

CELL_XML = "ur5e_cell.xml"

ARM_JOINTS = UR5E.joint_names
FINGER_JOINTS = ("finger_left", "finger_right")
GRIPPER_ACTUATOR = "gripper"
CAMERAS = ("wrist", "overhead")
FLANGE_SITE = "flange"
TCP_SITE = "tcp"
FT_SITE = "ft_sensor"
FORCE_SENSOR = "wrist_force"
TORQUE_SENSOR = "wrist_torque"
PART_BODY = "part"
PART_GEOM = "part"
FINGER_GEOMS = ("pad_left", "pad_right")
BIN_BODY = "bin"

PART_HALF_SIZE_M = 0.02
BIN_INNER_HALF_SIZE_M = 0.1
BIN_FLOOR_TOP_M = 0.01
BIN_WALL_TOP_M = 0.07

# Start pose: the tool centre point at (0.35, 0.05, 0.30) m, between the part's spawn region and
# the bin. The tool points down and the fingers close along the base x axis. Solved once with
# `robota.sim.ik.SiteIK`.
HOME_QPOS_RAD = np.array([2.896648, -1.966792, 2.017901, -1.621908, -1.570789, -1.815746])
GRIPPER_OPEN_M = UR5E.gripper_max_opening_m


def load_cell_model() -> mujoco.MjModel:
    """Compile the cell's MJCF from the package data."""
    xml = resources.files("robota.sim").joinpath("assets", CELL_XML)
    with resources.as_file(xml) as path:
        return mujoco.MjModel.from_xml_path(str(path))


class CellIndex:
    """Addresses of the cell's joints, actuators, sites and sensors in one compiled model.

    Args:
        model: A model compiled from the cell's MJCF.
    """

    def __init__(self, model: mujoco.MjModel):
        self.arm_qpos = np.array([model.joint(n).qposadr[0] for n in ARM_JOINTS])
        self.arm_qvel = np.array([model.joint(n).dofadr[0] for n in ARM_JOINTS])
        self.finger_qpos = np.array([model.joint(n).qposadr[0] for n in FINGER_JOINTS])
        self.arm_actuators = np.array([model.actuator(n).id for n in ARM_JOINTS])
        self.gripper_actuator = model.actuator(GRIPPER_ACTUATOR).id
        self.tcp_site = model.site(TCP_SITE).id
        self.part_body = model.body(PART_BODY).id
        self.part_qpos = model.joint(PART_BODY).qposadr[0]
        self.part_qvel = model.joint(PART_BODY).dofadr[0]
        self.part_geom = model.geom(PART_GEOM).id
        self.finger_geoms = frozenset(model.geom(n).id for n in FINGER_GEOMS)
        self.bin_body = model.body(BIN_BODY).id
        force = model.sensor(FORCE_SENSOR)
        torque = model.sensor(TORQUE_SENSOR)
        self.wrench = np.r_[
            force.adr[0] : force.adr[0] + 3, torque.adr[0] : torque.adr[0] + 3
        ]
        self.arm_lower_rad = model.jnt_range[[model.joint(n).id for n in ARM_JOINTS], 0]
        self.arm_upper_rad = model.jnt_range[[model.joint(n).id for n in ARM_JOINTS], 1]

    def gripper_opening_m(self, data: mujoco.MjData) -> float:
        """Distance between the finger pads."""
        return float(data.qpos[self.finger_qpos].sum())

    def part_pose_world(self, data: mujoco.MjData) -> tuple[np.ndarray, float]:
        """Part centre `(3,)` in metres and its yaw in radians, both in the world frame."""
        position = data.xpos[self.part_body].copy()
        rotation = data.xmat[self.part_body].reshape(3, 3)
        yaw = float(np.arctan2(rotation[1, 0], rotation[0, 0]))
        return position, yaw

    def part_touches_fingers(self, data: mujoco.MjData) -> bool:
        """Return whether any active contact joins the part and a finger pad."""
        for contact in data.contact[: data.ncon]:
            pair = {int(contact.geom1), int(contact.geom2)}
            if self.part_geom in pair and pair & self.finger_geoms:
                return True
        return False
