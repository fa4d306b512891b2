"""The shared feature spec: every feature's key, dtype, shape, unit and frame, and the robot.

Datasets, twins, policies, bundles and the edge runtime all read one `Spec` object, so no layer
re-codes an observation layout by hand. This module imports numpy only.

Feature keys follow LeRobot's naming (`observation.state`, `observation.images.<camera>`,
`action`), so a robota dataset opens in LeRobot's tools and the other way round.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from robota.errors import SpecError, UnknownNameError

# Feature keys. Images are `OBS_IMAGES + camera name`.
OBS_IMAGES = "observation.images."
OBS_STATE = "observation.state"
OBS_VELOCITY = "observation.velocity"
OBS_WRENCH = "observation.wrench"
OBS_PART_POSE = "observation.part_pose"
ACTION = "action"
TASK = "task"

# Instructions reach a policy as UTF-8 bytes shifted by one, so 0 is padding and any European
# language works without a vocabulary download.
INSTRUCTION_MAX_BYTES = 64
INSTRUCTION_VOCAB_SIZE = 257
# Model input that carries the encoded instruction; every other model input is named by its key.
TASK_TOKENS = "task_tokens"
GRIPPER_NAME = "gripper"


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """One feature of an observation or action.

    Attributes:
        key: Feature key, for example `observation.state`.
        dtype: `float32`, `uint8` (images), `int64` or `string`.
        shape: Shape of one frame's value; images are `(height, width, channels)`.
        names: Name of each element along the last axis, or of each axis for images.
        unit: Unit of each element, for example `rad`, `m`, `N`, `N*m`, `rad/s` or `1`.
        frame: Coordinate frame the values are expressed in, for example `base` or `tool`.
        description: One line for generated tables.
    """

    key: str
    dtype: str
    shape: tuple[int, ...]
    names: tuple[str, ...] | None = None
    unit: str | None = None
    frame: str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "uint8", "int64", "string", "bool"):
            raise SpecError(f"feature {self.key!r} has invalid dtype {self.dtype!r}")
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        if self.names is not None:
            object.__setattr__(self, "names", tuple(self.names))

    @property
    def is_image(self) -> bool:
        return self.key.startswith(OBS_IMAGES)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dtype": self.dtype,
            "shape": list(self.shape),
            "names": list(self.names) if self.names is not None else None,
            "unit": self.unit,
            "frame": self.frame,
            "description": self.description,
        }

    @classmethod
    def from_dict(cls, key: str, data: Mapping[str, Any]) -> FeatureSpec:
        return cls(
            key=key,
            dtype=data["dtype"],
            shape=tuple(data["shape"]),
            names=tuple(data["names"]) if data.get("names") is not None else None,
            unit=data.get("unit"),
            frame=data.get("frame"),
            description=data.get("description", ""),
        )


@dataclasses.dataclass(frozen=True)
class RobotSpec:
    """An arm with a parallel gripper: joint names, limits and the gripper's range.

    Attributes:
        name: Robot name, for example `ur5e`.
        joint_names: Arm joints in command order.
        lower_rad: Lower position limit per arm joint.
        upper_rad: Upper position limit per arm joint.
        velocity_limit_rad_s: Velocity limit per arm joint.
        gripper_max_opening_m: Distance between the fingers when fully open.
    """

    name: str
    joint_names: tuple[str, ...]
    lower_rad: tuple[float, ...]
    upper_rad: tuple[float, ...]
    velocity_limit_rad_s: tuple[float, ...]
    gripper_max_opening_m: float

    def __post_init__(self) -> None:
        n = len(self.joint_names)
        for field in ("lower_rad", "upper_rad", "velocity_limit_rad_s"):
            values = tuple(float(v) for v in getattr(self, field))
            if len(values) != n:
                raise SpecError(
                    f"robot {self.name!r}: {field} has {len(values)} values for {n} joints"
                )
            object.__setattr__(self, field, values)
        object.__setattr__(self, "joint_names", tuple(self.joint_names))

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @property
    def action_dim(self) -> int:
        """Arm joint targets plus one gripper command."""
        return self.num_joints + 1

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RobotSpec:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})


# Universal Robots UR5e: joint ranges as in MuJoCo Menagerie's model (elbow limited to ±π by its
# cabling, the others ±2π) and the datasheet's 180°/s maximum joint speed.
UR5E = RobotSpec(
    name="ur5e",
    joint_names=(
        "shoulder_pan",
        "shoulder_lift",
        "elbow",
        "wrist_1",
        "wrist_2",
        "wrist_3",
    ),
    lower_rad=(-2 * np.pi, -2 * np.pi, -np.pi, -2 * np.pi, -2 * np.pi, -2 * np.pi),
    upper_rad=(2 * np.pi, 2 * np.pi, np.pi, 2 * np.pi, 2 * np.pi, 2 * np.pi),
    velocity_limit_rad_s=(np.pi,) * 6,
    gripper_max_opening_m=0.085,
)

# Franka Emika Panda: joint position and velocity limits from "Limits for Panda" in Franka's
# "Robot and interface specifications" (https://frankaemika.github.io/docs/control_parameters.html).
# The opening is that of robota's parallel gripper, which the twins mount on every arm.
PANDA = RobotSpec(
    name="panda",
    joint_names=tuple(f"joint{i}" for i in range(1, 8)),
    lower_rad=(-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973),
    upper_rad=(2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973),
    velocity_limit_rad_s=(2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61),
    gripper_max_opening_m=0.085,
)

ROBOTS: dict[str, RobotSpec] = {UR5E.name: UR5E, PANDA.name: PANDA}


def get_robot(name: str) -> RobotSpec:
    """Return the built-in robot spec called `name`, with a did-you-mean error otherwise."""
    if name not in ROBOTS:
        raise UnknownNameError("robot", name, ROBOTS)
    return ROBOTS[name]


@dataclasses.dataclass(frozen=True)
class Spec:
    """Everything a layer needs to agree on: features, robot and control rate.

    Attributes:
        robot: The arm the features describe.
        fps: Control rate in Hz; one dataset frame and one action per control period.
        features: Feature specs keyed by feature key, observations first, then `action`.
    """

    robot: RobotSpec
    fps: int
    features: dict[str, FeatureSpec]

    def __post_init__(self) -> None:
        if ACTION not in self.features:
            raise SpecError(f"spec has no {ACTION!r} feature; features: {sorted(self.features)}")
        if self.features[ACTION].shape != (self.robot.action_dim,):
            raise SpecError(
                f"action shape {self.features[ACTION].shape} does not fit robot "
                f"{self.robot.name!r}, which needs ({self.robot.action_dim},)"
            )
        if not 1 <= self.fps <= 1000:
            raise SpecError(f"fps must be between 1 and 1000, got {self.fps}")

    @property
    def image_keys(self) -> list[str]:
        return [k for k, f in self.features.items() if f.is_image]

    @property
    def vector_keys(self) -> list[str]:
        """Numeric observation features that are not images, in spec order."""
        return [
            k
            for k, f in self.features.items()
            if k.startswith("observation.") and not f.is_image and f.dtype == "float32"
        ]

    @property
    def camera_names(self) -> list[str]:
        return [k[len(OBS_IMAGES) :] for k in self.image_keys]

    def feature(self, key: str) -> FeatureSpec:
        if key not in self.features:
            raise UnknownNameError("feature", key, self.features)
        return self.features[key]

    def validate_observation(self, observation: Mapping[str, Any]) -> None:
        """Raise `SpecError` naming the first key whose value is missing or of the wrong shape."""
        for key, feature in self.features.items():
            if key == ACTION:
                continue
            if key not in observation:
                raise SpecError(f"observation is missing {key!r}; it has {sorted(observation)}")
            if feature.dtype == "string":
                continue
            shape = np.shape(observation[key])
            if shape != feature.shape:
                raise SpecError(f"observation {key!r} has shape {shape}, expected {feature.shape}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "robot": self.robot.to_dict(),
            "fps": self.fps,
            "features": {k: f.to_dict() for k, f in self.features.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Spec:
        try:
            return cls(
                robot=RobotSpec.from_dict(data["robot"]),
                fps=int(data["fps"]),
                features={k: FeatureSpec.from_dict(k, v) for k, v in data["features"].items()},
            )
        except KeyError as error:
            raise SpecError(f"spec is missing key {error.args[0]!r}") from None

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON form; equal specs have equal fingerprints."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def make_arm_spec(
    robot: RobotSpec,
    fps: int,
    cameras: Mapping[str, tuple[int, int]],
    *,
    with_part_pose: bool = True,
) -> Spec:
    """Build the standard spec of an arm cell: cameras, joints, wrench, part pose and action.

    Args:
        robot: The arm.
        fps: Control rate in Hz.
        cameras: Image size `(height, width)` per camera name, for example `{"wrist": (96, 96)}`.
        with_part_pose: Whether the cell's 2D vision system reports the part pose.
    """
    features: dict[str, FeatureSpec] = {}
    for camera, (height, width) in cameras.items():
        features[OBS_IMAGES + camera] = FeatureSpec(
            OBS_IMAGES + camera,
            "uint8",
            (height, width, 3),
            names=("height", "width", "channels"),
            unit="1",
            frame=camera,
            description=f"RGB image of the {camera} camera",
        )
    joints = robot.joint_names
    features[OBS_STATE] = FeatureSpec(
        OBS_STATE,
        "float32",
        (robot.num_joints + 1,),
        names=(*joints, GRIPPER_NAME),
        unit="rad; gripper m",
        frame="joint",
        description="arm joint positions, then the gripper opening between the fingers",
    )
    features[OBS_VELOCITY] = FeatureSpec(
        OBS_VELOCITY,
        "float32",
        (robot.num_joints,),
        names=joints,
        unit="rad/s",
        frame="joint",
        description="arm joint velocities",
    )
    features[OBS_WRENCH] = FeatureSpec(
        OBS_WRENCH,
        "float32",
        (6,),
        names=("fx", "fy", "fz", "tx", "ty", "tz"),
        unit="N; N*m",
        frame="tool",
        description="force and torque measured by the wrist sensor, in the sensor frame",
    )
    if with_part_pose:
        features[OBS_PART_POSE] = FeatureSpec(
            OBS_PART_POSE,
            "float32",
            (3,),
            names=("x", "y", "yaw"),
            unit="m; rad",
            frame="base",
            description="part position and yaw on the table, as the 2D vision system reports it",
        )
    features[TASK] = FeatureSpec(
        TASK, "string", (1,), unit=None, description="language instruction, any language"
    )
    features[ACTION] = FeatureSpec(
        ACTION,
        "float32",
        (robot.action_dim,),
        names=(*joints, GRIPPER_NAME),
        unit="rad; gripper 1",
        frame="joint",
        description="arm joint position targets, then the gripper command (0 open, 1 closed)",
    )
    return Spec(robot=robot, fps=fps, features=features)


def is_joint_indexed(feature: FeatureSpec, robot: RobotSpec) -> bool:
    """Return whether the feature lists the robot's arm joints first, optionally then the gripper.

    Such a feature (the joint state, joint velocities, the action) changes width with the robot.
    """
    names = tuple(feature.names or ())
    joints = robot.joint_names
    return names in (joints, (*joints, GRIPPER_NAME))


def encode_instruction(text: str, max_bytes: int = INSTRUCTION_MAX_BYTES) -> np.ndarray:
    """Encode an instruction as UTF-8 byte tokens for a policy.

    Bytes are shifted by one so that 0 is padding. Longer instructions are cut at a character
    boundary so no token sequence ends inside a multi-byte character.

    Returns:
        int64 array of shape `(max_bytes,)`.
    """
    data = text.encode("utf-8")
    if len(data) > max_bytes:
        data = data[:max_bytes].decode("utf-8", errors="ignore").encode("utf-8")
    tokens = np.zeros(max_bytes, dtype=np.int64)
    tokens[: len(data)] = np.frombuffer(data, dtype=np.uint8).astype(np.int64) + 1
    return tokens


def decode_instruction(tokens: Sequence[int] | np.ndarray) -> str:
    """Invert `encode_instruction`."""
    data = bytes(int(t) - 1 for t in np.asarray(tokens).reshape(-1) if int(t) > 0)
    return data.decode("utf-8", errors="replace")


def policy_input_names(spec: Spec) -> list[str]:
    """Model input names in their fixed order: images, vector observations, instruction tokens.

    The torch policy, its ONNX export and the edge runtime all use this order and these names.
    """
    return [*spec.image_keys, *spec.vector_keys, TASK_TOKENS]


def build_policy_inputs(spec: Spec, observations: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Stack raw observations into a batch of model inputs named by `policy_input_names`.

    Images stay uint8 `(batch, height, width, channels)`, vectors become float32
    `(batch, dim)`, and the instruction becomes int64 tokens `(batch, INSTRUCTION_MAX_BYTES)`.
    Normalisation is the model's job, so the same arrays feed torch and ONNX Runtime.

    Raises:
        SpecError: An observation lacks a feature or has the wrong shape.
    """
    for observation in observations:
        spec.validate_observation(observation)
    inputs: dict[str, np.ndarray] = {}
    for key in spec.image_keys:
        inputs[key] = np.stack([np.asarray(o[key], dtype=np.uint8) for o in observations])
    for key in spec.vector_keys:
        inputs[key] = np.stack([np.asarray(o[key], dtype=np.float32) for o in observations])
    inputs[TASK_TOKENS] = np.stack([encode_instruction(str(o[TASK])) for o in observations])
    return inputs


def format_feature_table(spec: Spec, keys: Sequence[str] | None = None) -> str:
    """Render features as a Markdown table for docstrings and docs, generated from the spec."""
    rows = ["| key | dtype | shape | unit | frame | description |", "|---|---|---|---|---|---|"]
    for key in keys or list(spec.features):
        f = spec.features[key]
        rows.append(
            f"| `{key}` | {f.dtype} | {f.shape} | {f.unit or ''} | {f.frame or ''} | "
            f"{f.description} |"
        )
    return "\n".join(rows)
