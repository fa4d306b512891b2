"""The mapping file of a ROS 2 bag import: which topics become which features, and the frame grid.

A mapping is a TOML or YAML file with the same keys:

```toml
fps = 10                  # frame rate of the dataset, Hz
tolerance_s = 0.05        # oldest message a frame may use, seconds before the frame time
task = "pick up the part and place it in the bin"
robot = "ur5e"            # optional: a built-in robot; otherwise a generic one named robot_name

[[topics]]
topic = "/joint_states"
feature = "observation.state"
field = "position"        # JointState: position, velocity or effort
joints = ["shoulder_pan_joint", "shoulder_lift_joint"]   # optional: order and subset

[[topics]]
topic = "/camera/wrist/compressed"
feature = "observation.images.wrist"
size = [96, 96]           # optional: resize to (height, width)

[[topics]]
topic = "/commands"
feature = "action"
stamp = "bag"             # "header" (default where the message has one) or "bag" (receive time)
```
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from robota.errors import DatasetError
from robota.spec import ACTION

JOINT_FIELDS = ("position", "velocity", "effort")
STAMP_SOURCES = ("auto", "header", "bag")


@dataclasses.dataclass(frozen=True)
class TopicMapping:
    """Mapping of one topic to one feature.

    Attributes:
        topic: Topic name in the bag, for example `/joint_states`.
        feature: Feature key, `observation.<name>`, `observation.images.<camera>` or `action`.
        field: JointState field to read: `position`, `velocity` or `effort`.
        joints: Joint names to take, in this order, from JointState or JointTrajectory messages;
            all, in message order, when None.
        size: `(height, width)` to resize camera images to; the message's size when None.
        stamp: Time of a message: `header` (its header stamp), `bag` (when the bag recorded
            it) or `auto` (the header stamp where the message has a header).
        unit: Unit of the feature's elements, stored in the spec.
    """

    topic: str
    feature: str
    field: str = "position"
    joints: tuple[str, ...] | None = None
    size: tuple[int, int] | None = None
    stamp: str = "auto"
    unit: str | None = None

    def __post_init__(self) -> None:
        if not self.feature.startswith("observation.") and self.feature != ACTION:
            raise DatasetError(
                f"topic {self.topic!r} maps to {self.feature!r}; a feature key is "
                f"observation.<name>, observation.images.<camera> or {ACTION!r}"
            )
        if self.field not in JOINT_FIELDS:
            raise DatasetError(f"topic {self.topic!r}: field {self.field!r} is invalid; use one of {JOINT_FIELDS}")
        if self.stamp not in STAMP_SOURCES:
            raise DatasetError(f"topic {self.topic!r}: stamp {self.stamp!r} is invalid; use one of {STAMP_SOURCES}")
        if self.joints is not None:
            object.__setattr__(self, "joints", tuple(str(j) for j in self.joints))
        if self.size is not None:
            size = tuple(int(v) for v in self.size)
            if len(size) != 2 or min(size) < 2 or size[0] % 2 or size[1] % 2:
                raise DatasetError(
                    f"topic {self.topic!r}: size {list(self.size)} must be [height, width], both even "
                    "and at least 2, because the video is stored as yuv420p"
                )
            object.__setattr__(self, "size", size)


@dataclasses.dataclass(frozen=True)
class BagMapping:
    """The whole mapping: topics, the frame grid and the robot.

    Attributes:
        topics: One entry per imported topic; exactly one maps to `action`.
        fps: Frame rate of the dataset in Hz; frames lie on a grid of 1/fps seconds.
        tolerance_s: A frame uses the latest message at or before its time, if that message is
            at most this old; otherwise the frame is dropped.
        task: Instruction stored with every frame.
        robot: Name of a built-in robot spec (for example `ur5e`), or None for a generic one.
        robot_name: Name of the generic robot when `robot` is None.
    """

    topics: tuple[TopicMapping, ...]
    fps: int
    tolerance_s: float
    task: str = "demonstration"
    robot: str | None = None
    robot_name: str = "ros_robot"

    def __post_init__(self) -> None:
        if not 1 <= self.fps <= 1000:
            raise DatasetError(f"mapping fps must be between 1 and 1000 Hz, got {self.fps}")
        if not self.tolerance_s > 0:
            raise DatasetError(f"mapping tolerance_s must be positive seconds, got {self.tolerance_s}")
        features = [t.feature for t in self.topics]
        if features.count(ACTION) != 1:
            raise DatasetError(
                f"the mapping needs exactly one topic mapped to {ACTION!r}, found {features.count(ACTION)}; "
                "map the command topic (JointTrajectory or Float64MultiArray) to it"
            )
        duplicates = sorted({f for f in features if features.count(f) > 1})
        if duplicates:
            raise DatasetError(f"features {duplicates} are mapped from more than one topic; map each once")
        if not self.task:
            raise DatasetError("mapping task must be a non-empty instruction")

    @property
    def period_ns(self) -> float:
        return 1e9 / self.fps

    @property
    def tolerance_ns(self) -> int:
        return int(round(self.tolerance_s * 1e9))


def mapping_from_dict(data: Mapping[str, Any], source: str = "mapping") -> BagMapping:
    """Build a `BagMapping` from parsed TOML or YAML, naming the source in errors."""
    known = {"topics", "fps", "tolerance_s", "task", "robot", "robot_name"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise DatasetError(f"{source}: unknown keys {unknown}; valid keys: {sorted(known)}")
    for key in ("topics", "fps", "tolerance_s"):
        if key not in data:
            raise DatasetError(f"{source}: {key!r} is missing; see robota.datasets.rosbag_mapping for an example")
    topic_fields = {f.name for f in dataclasses.fields(TopicMapping)}
    topics = []
    for entry in data["topics"]:
        bad = sorted(set(entry) - topic_fields)
        if bad or "topic" not in entry or "feature" not in entry:
            raise DatasetError(
                f"{source}: topic entry {dict(entry)} needs 'topic' and 'feature' and may set "
                f"{sorted(topic_fields - {'topic', 'feature'})}; unknown keys: {bad}"
            )
        topics.append(TopicMapping(**entry))
    return BagMapping(
        topics=tuple(topics),
        fps=int(data["fps"]),
        tolerance_s=float(data["tolerance_s"]),
        task=str(data.get("task", "demonstration")),
        robot=data.get("robot"),
        robot_name=str(data.get("robot_name", "ros_robot")),
    )


def load_mapping(path: str | Path) -> BagMapping:
    """Read a mapping file: `.toml` through tomllib (or tomli before Python 3.11), else YAML.

    Raises:
        DatasetError: The file is missing, does not parse, or describes an invalid mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"mapping file {path} not found; check the path")
    text = path.read_text(encoding="utf-8")
    try:
        data = _parse_toml(text) if path.suffix == ".toml" else _parse_yaml(text)
    except ValueError as error:
        raise DatasetError(f"mapping file {path} does not parse: {error}") from None
    if not isinstance(data, Mapping):
        raise DatasetError(f"mapping file {path} must contain a table of keys, got {type(data).__name__}")
    return mapping_from_dict(data, str(path))


def _parse_toml(text: str) -> Any:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise DatasetError("reading a TOML mapping on Python 3.10 needs tomli: pip install tomli") from None
    return tomllib.loads(text)


def _parse_yaml(text: str) -> Any:
    # ruamel.yaml comes with rosbags, which the import needs anyway.
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        return _plain(YAML(typ="safe", pure=True).load(text))
    except YAMLError as error:
        raise ValueError(str(error)) from None


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_plain(v) for v in value]
    return value
