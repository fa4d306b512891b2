"""Build robota specs for data recorded outside robota: robomimic, ROS 2 bags, LeRobot datasets.

A robota `Spec` needs a robot with joint names and limits, and an action of `robot.action_dim`
elements: the arm's commands, then one gripper command. Foreign data rarely states limits, so
`generic_robot` fills them with wide values that any revolute joint fits. The importers build
their specs here, so every imported dataset describes its features the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from robota.errors import DatasetError
from robota.spec import ACTION, GRIPPER_NAME, OBS_IMAGES, TASK, FeatureSpec, RobotSpec, Spec

# Limits used where the source does not state them: one full turn either way covers every
# revolute joint, and 2*pi rad/s is above the rated speed of common industrial and hobby arms.
# NOTE: these are placeholders, not the robot's limits; replace them before a safety filter
# relies on them.
WIDE_LIMIT_RAD = 2 * np.pi
WIDE_VELOCITY_LIMIT_RAD_S = 2 * np.pi
DEFAULT_GRIPPER_OPENING_M = 0.1


def generic_robot(
    name: str,
    num_joints: int,
    *,
    joint_names: Sequence[str] | None = None,
    lower_rad: Sequence[float] | None = None,
    upper_rad: Sequence[float] | None = None,
    velocity_limit_rad_s: Sequence[float] | None = None,
    gripper_max_opening_m: float = DEFAULT_GRIPPER_OPENING_M,
) -> RobotSpec:
    """Describe an arm that robota has no built-in spec for.

    Args:
        name: Robot name, for example `so101_follower`.
        num_joints: Arm joints (or controller command axes), not counting the gripper.
        joint_names: Names in command order; `joint_0`, `joint_1`, ... when None.
        lower_rad: Lower limits; -2*pi for each joint when None.
        upper_rad: Upper limits; 2*pi for each joint when None.
        velocity_limit_rad_s: Velocity limits; 2*pi rad/s for each joint when None.
        gripper_max_opening_m: Distance between the fingers when fully open.

    Raises:
        DatasetError: `num_joints` is below 1 or does not match `joint_names`.
    """
    if num_joints < 1:
        raise DatasetError(f"robot {name!r} needs at least one arm joint, got {num_joints}")
    names = tuple(joint_names) if joint_names is not None else tuple(f"joint_{i}" for i in range(num_joints))
    if len(names) != num_joints:
        raise DatasetError(f"robot {name!r}: {len(names)} joint names for {num_joints} joints: {names}")
    return RobotSpec(
        name=name,
        joint_names=names,
        lower_rad=tuple(lower_rad) if lower_rad is not None else (-WIDE_LIMIT_RAD,) * num_joints,
        upper_rad=tuple(upper_rad) if upper_rad is not None else (WIDE_LIMIT_RAD,) * num_joints,
        velocity_limit_rad_s=(
            tuple(velocity_limit_rad_s)
            if velocity_limit_rad_s is not None
            else (WIDE_VELOCITY_LIMIT_RAD_S,) * num_joints
        ),
        gripper_max_opening_m=float(gripper_max_opening_m),
    )


def vector_feature(
    key: str,
    names: Sequence[str],
    *,
    unit: str | None = None,
    frame: str | None = None,
    description: str = "",
) -> FeatureSpec:
    """Describe a float32 vector feature with one name per element."""
    return FeatureSpec(
        key, "float32", (len(names),), names=tuple(names), unit=unit, frame=frame, description=description
    )


def camera_feature(camera: str, height: int, width: int, description: str = "") -> FeatureSpec:
    """Describe a uint8 RGB camera feature `observation.images.<camera>` of (height, width, 3)."""
    return FeatureSpec(
        OBS_IMAGES + camera,
        "uint8",
        (int(height), int(width), 3),
        names=("height", "width", "channels"),
        unit="1",
        frame=camera,
        description=description or f"RGB image of the {camera} camera",
    )


def element_names(prefix: str, count: int) -> tuple[str, ...]:
    """Return `prefix_0`, `prefix_1`, ... for features whose source names no elements."""
    width = len(str(count - 1))
    return tuple(f"{prefix}_{i:0{width}d}" for i in range(count))


def make_foreign_spec(
    robot: RobotSpec,
    fps: int,
    observations: Sequence[FeatureSpec],
    *,
    action_names: Sequence[str] | None = None,
    action_unit: str | None = None,
    action_description: str = "",
) -> Spec:
    """Build a spec from observation features, adding `task` and an `action` for `robot`.

    The action has `robot.action_dim` elements, the arm's commands then the gripper command,
    because every robota policy and bundle assumes that layout.

    Args:
        robot: The arm, built-in or from `generic_robot`.
        fps: Frame rate of the dataset in Hz.
        observations: Observation features, images and vectors, in the order to store them.
        action_names: Element names of the action; the robot's joints and `gripper` when None.
        action_unit: Unit of the action elements.
        action_description: One line for generated tables.

    Raises:
        DatasetError: The action names do not fit the robot, or a feature is not an observation.
    """
    names = tuple(action_names) if action_names is not None else (*robot.joint_names, GRIPPER_NAME)
    if len(names) != robot.action_dim:
        raise DatasetError(
            f"the action has {len(names)} elements {names}, but robot {robot.name!r} takes "
            f"{robot.action_dim}: {robot.num_joints} arm commands and one gripper command. "
            "Build the robot with one joint fewer than the action's width, or append a "
            "constant gripper column to an action without one"
        )
    features: dict[str, FeatureSpec] = {}
    for feature in observations:
        if not feature.key.startswith("observation."):
            raise DatasetError(f"feature {feature.key!r} is not an observation; name it observation.<name>")
        features[feature.key] = feature
    features[TASK] = FeatureSpec(TASK, "string", (1,), description="language instruction, any language")
    features[ACTION] = vector_feature(
        ACTION,
        names,
        unit=action_unit,
        frame="joint",
        description=action_description or "arm commands, then the gripper command",
    )
    return Spec(robot=robot, fps=int(fps), features=features)


def resize_rgb(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize one uint8 RGB image (H, W, 3) to (height, width, 3) with area averaging.

    PyAV's swscale does the work, so no image library beyond the `data` extra is needed.
    """
    if image.shape[:2] == (height, width):
        return image
    import av

    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
    return frame.reformat(width=width, height=height, format="rgb24", interpolation="AREA").to_ndarray()
