"""ROS 2 messages of the software-in-the-loop endpoint, as rosbridge v2 JSON dictionaries.

The names and types here are the interface that a ROS 2 client of the twin relies on (the edge
runtime's rosbridge client among them). Messages mirror the ROS 2 field names: a stamp is
`{sec, nanosec}`, and a `uint8[]` field travels as a base64 string, as rosbridge sends it.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from robota.errors import MissingExtraError, RobotaError

# Topics the twin publishes, with their message types.
JOINT_STATES_TOPIC = "/joint_states"
WRENCH_TOPIC = "/wrench"
PART_POSE_TOPIC = "/part_pose"
TASK_TOPIC = "/task"
IMAGE_TOPIC_TEMPLATE = "/camera/{camera}/image/compressed"

# Topics the twin subscribes to: ros2_control's forward position and trajectory controllers.
POSITION_COMMAND_TOPIC = "/forward_position_controller/commands"
GRIPPER_COMMAND_TOPIC = "/gripper_controller/commands"
TRAJECTORY_TOPIC = "/joint_trajectory_controller/joint_trajectory"

RESET_SERVICE = "/robota/reset"
STEP_SERVICE = "/robota/step"
STATUS_SERVICE = "/robota/status"
SERVICES = (RESET_SERVICE, STEP_SERVICE, STATUS_SERVICE)

JOINT_STATE_TYPE = "sensor_msgs/msg/JointState"
WRENCH_TYPE = "geometry_msgs/msg/WrenchStamped"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
POSE_2D_TYPE = "geometry_msgs/msg/Pose2D"
STRING_TYPE = "std_msgs/msg/String"
FLOAT_ARRAY_TYPE = "std_msgs/msg/Float64MultiArray"
TRAJECTORY_TYPE = "trajectory_msgs/msg/JointTrajectory"

COMMAND_TOPICS: dict[str, str] = {
    POSITION_COMMAND_TOPIC: FLOAT_ARRAY_TYPE,
    GRIPPER_COMMAND_TOPIC: FLOAT_ARRAY_TYPE,
    TRAJECTORY_TOPIC: TRAJECTORY_TYPE,
}

# Trajectories longer than this are rejected, so one message cannot hold the twin for hours.
MAX_TRAJECTORY_POINTS = 10_000


class BridgeMessageError(RobotaError):
    """A rosbridge request or ROS message with a missing, unknown or invalid field."""


def image_topic(camera: str) -> str:
    """Return the compressed-image topic of a camera, for example `/camera/wrist/image/compressed`."""
    return IMAGE_TOPIC_TEMPLATE.format(camera=camera)


def published_topics(cameras: Sequence[str]) -> dict[str, str]:
    """Return every topic the twin publishes, mapped to its message type."""
    topics = {
        JOINT_STATES_TOPIC: JOINT_STATE_TYPE,
        WRENCH_TOPIC: WRENCH_TYPE,
        PART_POSE_TOPIC: POSE_2D_TYPE,
        TASK_TOPIC: STRING_TYPE,
    }
    for camera in cameras:
        topics[image_topic(camera)] = COMPRESSED_IMAGE_TYPE
    return topics


def canonical_type(message_type: str) -> str:
    """Return a message type in the ROS 2 form `pkg/msg/Type`; rosbridge also accepts `pkg/Type`."""
    parts = message_type.split("/")
    if len(parts) == 2:
        return f"{parts[0]}/msg/{parts[1]}"
    return message_type


def stamp(time_s: float) -> dict[str, int]:
    """Return a `builtin_interfaces/Time` `{sec, nanosec}` for a time in seconds."""
    nanoseconds = round(time_s * 1e9)
    return {"sec": nanoseconds // 1_000_000_000, "nanosec": nanoseconds % 1_000_000_000}


def header(time_s: float, frame_id: str) -> dict[str, Any]:
    """Return a `std_msgs/Header`."""
    return {"stamp": stamp(time_s), "frame_id": frame_id}


def joint_state_message(
    time_s: float,
    names: Sequence[str],
    position: Sequence[float],
    velocity: Sequence[float],
    effort: Sequence[float],
) -> dict[str, Any]:
    """Return a `sensor_msgs/JointState` with one entry per name in each array."""
    return {
        "header": header(time_s, ""),
        "name": list(names),
        "position": [float(v) for v in position],
        "velocity": [float(v) for v in velocity],
        "effort": [float(v) for v in effort],
    }


def wrench_message(time_s: float, frame_id: str, wrench: Sequence[float]) -> dict[str, Any]:
    """Return a `geometry_msgs/WrenchStamped` from force (N) and torque (N·m), `(6,)`."""
    fx, fy, fz, tx, ty, tz = (float(v) for v in wrench)
    return {
        "header": header(time_s, frame_id),
        "wrench": {"force": {"x": fx, "y": fy, "z": fz}, "torque": {"x": tx, "y": ty, "z": tz}},
    }


def compressed_image_message(time_s: float, frame_id: str, jpeg: bytes) -> dict[str, Any]:
    """Return a `sensor_msgs/CompressedImage` carrying JPEG bytes as base64 text."""
    return {
        "header": header(time_s, frame_id),
        "format": "jpeg",
        "data": base64.b64encode(jpeg).decode("ascii"),
    }


def pose_2d_message(pose: Sequence[float]) -> dict[str, float]:
    """Return a `geometry_msgs/Pose2D` from `(x_m, y_m, theta_rad)`."""
    x, y, theta = (float(v) for v in pose)
    return {"x": x, "y": y, "theta": theta}


def string_message(text: str) -> dict[str, str]:
    """Return a `std_msgs/String`."""
    return {"data": text}


def require_jpeg_encoder() -> None:
    """Raise `MissingExtraError` unless Pillow, which encodes the JPEG images, is installed."""
    try:
        import PIL.Image  # noqa: F401
    except ImportError as error:
        raise MissingExtraError("pillow", "sim") from error


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """Encode an RGB image `(height, width, 3)` of uint8 as JPEG.

    Raises:
        MissingExtraError: Pillow is not installed.
    """
    require_jpeg_encoder()
    from PIL import Image

    buffer = io.BytesIO()
    # Pillow reads a uint8 (height, width, 3) array as RGB.
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(
        buffer, format="JPEG", quality=quality
    )
    return buffer.getvalue()


def parse_float_array(message: Any, topic: str, length: int) -> np.ndarray:
    """Return the `data` of a `std_msgs/Float64MultiArray` as `(length,)` float64.

    Raises:
        BridgeMessageError: `data` is missing, of another length or not all finite numbers.
    """
    if not isinstance(message, Mapping) or "data" not in message:
        raise BridgeMessageError(
            f"message on {topic} must be a Float64MultiArray with a 'data' list, got {message!r}"
        )
    values = _finite_floats(message["data"], f"{topic} data")
    if len(values) != length:
        raise BridgeMessageError(
            f"{topic} data must hold {length} values, got {len(values)}: {message['data']!r}"
        )
    return values


def parse_joint_trajectory(
    message: Any, joint_names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, float | None]:
    """Check a `trajectory_msgs/JointTrajectory` and reorder it into `joint_names` order.

    Args:
        message: The message as a JSON object.
        joint_names: The arm's joints in command order. The message's `joint_names` must list
            each of them once in any order, or be empty to mean this order.

    Returns:
        `time_from_start` of each point in seconds `(points,)`, positions in `joint_names`
        order `(points, joints)`, and the start time from `header.stamp` in seconds, or None
        where the stamp is zero or absent (start at once). An empty `points` list returns
        empty arrays, which cancels the running trajectory.

    Raises:
        BridgeMessageError: A field is missing or invalid; the message names it.
    """
    if not isinstance(message, Mapping):
        raise BridgeMessageError(f"{TRAJECTORY_TOPIC} message must be an object, got {message!r}")
    order = _trajectory_order(message.get("joint_names") or [], joint_names)
    points = message.get("points", [])
    if not isinstance(points, list) or len(points) > MAX_TRAJECTORY_POINTS:
        raise BridgeMessageError(
            f"{TRAJECTORY_TOPIC} points must be a list of at most {MAX_TRAJECTORY_POINTS} points"
        )

    times_s = np.zeros(len(points))
    positions = np.zeros((len(points), len(joint_names)))
    for i, point in enumerate(points):
        if not isinstance(point, Mapping):
            raise BridgeMessageError(f"{TRAJECTORY_TOPIC} point {i} must be an object, got {point!r}")
        values = _finite_floats(point.get("positions"), f"{TRAJECTORY_TOPIC} point {i} positions")
        if len(values) != len(joint_names):
            raise BridgeMessageError(
                f"{TRAJECTORY_TOPIC} point {i} has {len(values)} positions for "
                f"{len(joint_names)} joints"
            )
        positions[i, order] = values
        times_s[i] = parse_duration(point.get("time_from_start"), f"point {i} time_from_start")
    if np.any(np.diff(times_s) <= 0):
        raise BridgeMessageError(
            f"{TRAJECTORY_TOPIC} time_from_start must increase strictly from point to point, "
            f"got {times_s.tolist()} s"
        )

    start_s = _header_time(message.get("header"))
    return times_s, positions, start_s


def parse_duration(value: Any, name: str) -> float:
    """Return a `builtin_interfaces/Duration` `{sec, nanosec}` (or ROS 1 `{secs, nsecs}`) in s.

    Raises:
        BridgeMessageError: The value is missing, negative or not made of integers.
    """
    if not isinstance(value, Mapping):
        raise BridgeMessageError(f"{name} must be {{sec, nanosec}}, got {value!r}")
    sec = value.get("sec", value.get("secs", 0))
    nanosec = value.get("nanosec", value.get("nsecs", 0))
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (sec, nanosec)):
        raise BridgeMessageError(f"{name} needs integer sec and nanosec, got {value!r}")
    seconds = sec + nanosec * 1e-9
    if seconds < 0:
        raise BridgeMessageError(f"{name} must not be negative, got {seconds} s")
    return seconds


def _header_time(value: Any) -> float | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise BridgeMessageError(f"{TRAJECTORY_TOPIC} header must be an object, got {value!r}")
    stamp_s = parse_duration(value.get("stamp", {}), "header.stamp")
    return stamp_s if stamp_s > 0 else None


def _trajectory_order(names: Any, joint_names: Sequence[str]) -> list[int]:
    """Index in `joint_names` of each joint the message lists."""
    if names == []:
        return list(range(len(joint_names)))
    if not isinstance(names, list) or sorted(map(str, names)) != sorted(joint_names):
        raise BridgeMessageError(
            f"{TRAJECTORY_TOPIC} joint_names must list each arm joint once ({', '.join(joint_names)}) "
            f"or be empty for that order, got {names!r}"
        )
    return [list(joint_names).index(name) for name in names]


def _finite_floats(values: Any, name: str) -> np.ndarray:
    numeric = isinstance(values, list) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
    )
    if not numeric or not all(math.isfinite(v) for v in values):
        raise BridgeMessageError(f"{name} must be a list of finite numbers, got {values!r}")
    return np.asarray(values, dtype=np.float64)
