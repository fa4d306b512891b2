"""Arms for the twins and how a task scene, an arm and the gripper become one MuJoCo model.

A twin is composed with MuJoCo's `MjSpec.attach`: the task's scene (`assets/<task>.xml`, which
includes the shared cell) gets the arm at its base frame, and robota's parallel gripper with its
wrist force/torque sensor and wrist camera at the arm's flange site. The arm is robota's own
UR5e or Panda, or any MJCF file named by path through `ExternalArm`, for example a MuJoCo
Menagerie checkout. Attached elements are renamed with the prefixes `ARM_PREFIX` and
`GRIPPER_PREFIX`, so a model file's names never clash with the scene's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import mujoco
import numpy as np

from robota.errors import RobotaError, SpecError, UnknownNameError
from robota.spec import PANDA, UR5E, RobotSpec

ARM_PREFIX = "arm/"
GRIPPER_PREFIX = "gripper/"
GRIPPER_XML = "parallel_gripper.xml"

# Names inside the gripper's MJCF, before the prefix.
GRIPPER_ACTUATOR = "gripper"
FINGER_JOINTS = ("finger_left", "finger_right")
FINGER_GEOMS = ("pad_left", "pad_right")
TCP_SITE = "tcp"
FT_SITE = "ft_sensor"
FORCE_SENSOR = "wrist_force"
TORQUE_SENSOR = "wrist_torque"
WRIST_CAMERA = "wrist"
# Distance from the flange to the tool centre point along the flange's z axis.
TCP_OFFSET_M = 0.135

# Position servo gains that `ExternalArm` gives joints without an actuator of their own.
DEFAULT_KP = 2000.0
DEFAULT_KV = 200.0


@dataclasses.dataclass(frozen=True)
class ArmModel:
    """An arm MJCF and the names robota needs in it.

    Attributes:
        spec: Joint names (as observations and actions name them), limits and gripper range.
        mjcf_path: The arm's MJCF file. It holds the arm alone, base frame at the origin.
        joints: Joint names in the file, in command order; one per `spec.joint_names`.
        actuators: Position actuator per joint in the file, or None to add position servos.
        flange: Site in the file where the gripper mounts, its z axis pointing out of the flange.
        home_qpos_rad: Start configuration, with the tool pointing down above the table.
        base_pos: Where the arm's base frame sits in the cell's world frame (m).
        base_quat: Orientation of the base frame in the world frame (w, x, y, z).
        gravity_compensation: Whether robota turns on gravity compensation for every arm body.
    """

    spec: RobotSpec
    mjcf_path: Path
    joints: tuple[str, ...]
    actuators: tuple[str, ...] | None
    flange: str
    home_qpos_rad: tuple[float, ...]
    base_pos: tuple[float, float, float] = (0.0, 0.0, 0.0)
    base_quat: tuple[float, float, float, float] = (1.0, 0.0, 0.0, 0.0)
    gravity_compensation: bool = False

    @property
    def name(self) -> str:
        return self.spec.name

    def load_spec(self) -> mujoco.MjSpec:
        """Parse the arm's MJCF, or raise `RobotaError` naming the file."""
        if not self.mjcf_path.is_file():
            raise RobotaError(f"arm MJCF {self.mjcf_path} not found; pass the path of an .xml file")
        try:
            return mujoco.MjSpec.from_file(str(self.mjcf_path))
        except ValueError as error:
            raise RobotaError(f"arm MJCF {self.mjcf_path} failed to parse: {error}") from None


def _asset_path(name: str) -> Path:
    # Package data lives in a real folder for every supported install (wheel or editable).
    return Path(str(resources.files("robota.sim").joinpath("assets", name)))


# Start pose: the tool centre point at (0.35, 0.05, 0.30) m, between the part's spawn region and
# the bin, pointing down, the fingers closing along the base x axis. Solved once with
# `robota.sim.ik.SiteIK`.
UR5E_HOME_QPOS_RAD = (2.896648, -1.966792, 2.017901, -1.621908, -1.570789, -1.815746)
# The same tool pose for the Panda.
PANDA_HOME_QPOS_RAD = (0.227622, -0.617545, -0.078867, -2.646363, -0.050908, 2.029772, 0.185847)

ROBOTS: dict[str, ArmModel] = {
    "ur5e": ArmModel(
        spec=UR5E,
        mjcf_path=_asset_path("ur5e_arm.xml"),
        joints=UR5E.joint_names,
        actuators=UR5E.joint_names,
        flange="flange",
        home_qpos_rad=UR5E_HOME_QPOS_RAD,
    ),
    "panda": ArmModel(
        spec=PANDA,
        mjcf_path=_asset_path("panda_arm.xml"),
        joints=PANDA.joint_names,
        actuators=PANDA.joint_names,
        flange="flange",
        home_qpos_rad=PANDA_HOME_QPOS_RAD,
    ),
}


def get_arm(robot: str | ArmModel) -> ArmModel:
    """Return the arm called `robot`, or `robot` itself when it is an `ArmModel` already."""
    if isinstance(robot, ArmModel):
        return robot
    if robot not in ROBOTS:
        raise UnknownNameError("robot", str(robot), ROBOTS)
    return ROBOTS[robot]


def ExternalArm(  # noqa: N802 - reads as a constructor, like the dataclass it returns
    path: str | Path,
    *,
    joints: Sequence[str],
    flange: str,
    home_qpos_rad: Sequence[float],
    name: str | None = None,
    actuators: Sequence[str] | None = None,
    velocity_limit_rad_s: Sequence[float] | float = np.pi,
    base_pos: Sequence[float] = (0.0, 0.0, 0.0),
    base_quat: Sequence[float] = (1.0, 0.0, 0.0, 0.0),
    gravity_compensation: bool = True,
) -> ArmModel:
    """Adapt an arm MJCF from anywhere, such as a MuJoCo Menagerie checkout, to robota's twins.

    The file must hold the arm without a gripper; robota's gripper, wrist force/torque sensor and
    wrist camera mount at `flange`. Joint limits come from the file.

    Args:
        path: The arm's MJCF file. Meshes are found relative to it, as MuJoCo does.
        joints: Arm joint names in the file, in command order.
        flange: Site (or body) in the file where the gripper mounts; its z axis must point out
            of the flange.
        home_qpos_rad: Start configuration, one value per joint, tool down above the table.
        name: Robot name recorded in datasets; defaults to the file's model name.
        actuators: Position actuators in the file, one per joint in the same order. Without them
            robota adds position servos (kp 2000, kv 200) and ignores the file's actuators.
        velocity_limit_rad_s: Velocity limit per joint, or one value for all.
        base_pos: Position of the arm's base in the cell's world frame (m).
        base_quat: Orientation of the arm's base in the world frame (w, x, y, z).
        gravity_compensation: Turn on gravity compensation for the arm's bodies, so position
            servos hold the arm without sagging under the gripper.

    Raises:
        RobotaError: The file is missing or does not parse.
        UnknownNameError: A joint, actuator or flange name is not in the file (did-you-mean).
        SpecError: The numbers of joints, actuators and home values disagree.
    """
    path = Path(path).expanduser().resolve()
    joints = tuple(joints)
    probe = ArmModel(
        spec=UR5E, mjcf_path=path, joints=joints, actuators=None, flange=flange, home_qpos_rad=()
    )
    model_spec = probe.load_spec()
    model = model_spec.compile()

    joint_names = [model.joint(i).name for i in range(model.njnt)]
    for joint in joints:
        if joint not in joint_names:
            raise UnknownNameError(f"joint of {path.name}", joint, joint_names)
    if actuators is not None:
        actuators = tuple(actuators)
        actuator_names = [model.actuator(i).name for i in range(model.nu)]
        for actuator in actuators:
            if actuator not in actuator_names:
                raise UnknownNameError(f"actuator of {path.name}", actuator, actuator_names)
        if len(actuators) != len(joints):
            raise SpecError(f"{len(actuators)} actuators given for {len(joints)} joints; pass one per joint")
    site_names = [model.site(i).name for i in range(model.nsite)]
    body_names = [model.body(i).name for i in range(model.nbody)]
    if flange not in site_names and flange not in body_names:
        raise UnknownNameError(f"flange site of {path.name}", flange, site_names + body_names)
    if len(home_qpos_rad) != len(joints):
        raise SpecError(f"home_qpos_rad has {len(home_qpos_rad)} values for {len(joints)} joints")

    ids = [model.joint(joint).id for joint in joints]
    lower = model.jnt_range[ids, 0]
    upper = model.jnt_range[ids, 1]
    unlimited = ~model.jnt_limited[ids].astype(bool)
    lower = np.where(unlimited, -2 * np.pi, lower)
    upper = np.where(unlimited, 2 * np.pi, upper)
    velocity = np.broadcast_to(np.asarray(velocity_limit_rad_s, dtype=float), (len(joints),))
    spec = RobotSpec(
        name=name or model_spec.modelname or path.stem,
        joint_names=joints,
        lower_rad=tuple(lower),
        upper_rad=tuple(upper),
        velocity_limit_rad_s=tuple(velocity),
        gripper_max_opening_m=UR5E.gripper_max_opening_m,
    )
    return ArmModel(
        spec=spec,
        mjcf_path=path,
        joints=joints,
        actuators=actuators,
        flange=flange,
        home_qpos_rad=tuple(float(v) for v in home_qpos_rad),
        base_pos=tuple(float(v) for v in base_pos),
        base_quat=tuple(float(v) for v in base_quat),
        gravity_compensation=gravity_compensation,
    )


def compose_twin(scene_xml: str, arm: ArmModel) -> mujoco.MjSpec:
    """Build the spec of a twin: the task scene, the arm at its base and the gripper at its flange.

    Args:
        scene_xml: File name of the task scene in `robota/sim/assets`.
        arm: The arm to mount.

    Returns:
        An uncompiled `MjSpec`, so a task can still edit it before `compile()`.
    """
    scene = mujoco.MjSpec.from_file(str(_asset_path(scene_xml)))
    arm_spec = arm.load_spec()
    # An arm file may carry its own scene-wide settings (Menagerie's do); the cell's win.
    for key in list(arm_spec.keys):
        arm_spec.delete(key)
    if arm.actuators is None:
        for actuator in list(arm_spec.actuators):
            arm_spec.delete(actuator)
        for joint in arm.joints:
            arm_spec.add_actuator(
                name=joint,
                target=joint,
                trntype=mujoco.mjtTrn.mjTRN_JOINT,
                gaintype=mujoco.mjtGain.mjGAIN_FIXED,
                biastype=mujoco.mjtBias.mjBIAS_AFFINE,
                gainprm=[DEFAULT_KP] + [0.0] * 9,
                biasprm=[0.0, -DEFAULT_KP, -DEFAULT_KV] + [0.0] * 7,
            )
    if arm.gravity_compensation:
        for body in arm_spec.bodies:
            if body.name != "world":
                body.gravcomp = 1.0
        for joint in arm.joints:
            arm_spec.joint(joint).actgravcomp = 1

    frame = scene.worldbody.add_frame(pos=list(arm.base_pos), quat=list(arm.base_quat))
    scene.attach(arm_spec, frame=frame, prefix=ARM_PREFIX)

    gripper = mujoco.MjSpec.from_file(str(_asset_path(GRIPPER_XML)))
    flange = scene.site(ARM_PREFIX + arm.flange)
    if flange is not None:
        scene.attach(gripper, site=flange, prefix=GRIPPER_PREFIX)
    else:
        body = scene.body(ARM_PREFIX + arm.flange)
        scene.attach(gripper, frame=body.add_frame(), prefix=GRIPPER_PREFIX)
    return scene


def compile_twin(spec: mujoco.MjSpec, source: str) -> mujoco.MjModel:
    """Compile a composed twin, or raise `RobotaError` naming what failed to compile."""
    try:
        return spec.compile()
    except ValueError as error:
        raise RobotaError(f"twin {source} failed to compile: {error}") from None
