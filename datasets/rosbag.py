"""Import ROS 2 bags (sqlite3 and mcap) into a robota dataset through rosbags.

Each bag becomes one episode. A mapping (`robota.datasets.rosbag_mapping`) names the topics to
import and the feature each becomes; these message types convert:

| message type | value |
|---|---|
| sensor_msgs/msg/JointState | `position`, `velocity` or `effort`, optionally reordered by joint name |
| sensor_msgs/msg/Image | RGB uint8 (encodings rgb8, bgr8, rgba8, bgra8, mono8) |
| sensor_msgs/msg/CompressedImage | RGB uint8, decoded with PyAV (JPEG or PNG) |
| geometry_msgs/msg/WrenchStamped, Wrench | fx, fy, fz, tx, ty, tz |
| trajectory_msgs/msg/JointTrajectory | positions of the first point |
| std_msgs/msg/Float64MultiArray, Float32MultiArray | data |

Alignment: frames lie on a grid of 1/fps seconds from the first time at which every mapped topic
has published. Each frame takes, per topic, the latest message at or before the frame time. A
frame is dropped when that message is older than `tolerance_s`, or missing, for some topic. A
kept frame whose message is older than one frame period counts as late for that topic, because
the topic skipped at least one grid slot. Both counts are returned per topic in an
`ImportReport` and logged.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robota.datasets.foreign import (
    camera_feature,
    element_names,
    generic_robot,
    make_foreign_spec,
    resize_rgb,
    vector_feature,
)
from robota.datasets.rosbag_mapping import BagMapping, TopicMapping, load_mapping
from robota.datasets.writer import DatasetWriter
from robota.errors import DatasetError, MissingExtraError, UnknownNameError
from robota.spec import ACTION, OBS_IMAGES, ROBOTS, TASK, FeatureSpec, Spec, get_robot

logger = logging.getLogger(__name__)

JOINT_STATE = "sensor_msgs/msg/JointState"
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
WRENCH_STAMPED = "geometry_msgs/msg/WrenchStamped"
WRENCH = "geometry_msgs/msg/Wrench"
JOINT_TRAJECTORY = "trajectory_msgs/msg/JointTrajectory"
FLOAT64_ARRAY = "std_msgs/msg/Float64MultiArray"
FLOAT32_ARRAY = "std_msgs/msg/Float32MultiArray"
IMAGE_TYPES = (IMAGE, COMPRESSED_IMAGE)
SUPPORTED_TYPES = (
    JOINT_STATE,
    IMAGE,
    COMPRESSED_IMAGE,
    WRENCH_STAMPED,
    WRENCH,
    JOINT_TRAJECTORY,
    FLOAT64_ARRAY,
    FLOAT32_ARRAY,
)
WRENCH_NAMES = ("fx", "fy", "fz", "tx", "ty", "tz")


@dataclasses.dataclass(frozen=True)
class TopicInfo:
    """One topic of a bag: name, message type, message count and whether robota can import it."""

    topic: str
    msgtype: str
    message_count: int
    importable: bool


@dataclasses.dataclass(frozen=True)
class BagInfo:
    """Summary of a bag from `inspect_bag`: storage, time span and topics."""

    path: Path
    storage: str
    start_ns: int
    duration_s: float
    topics: tuple[TopicInfo, ...]

    def format(self) -> str:
        """Render the bag as a plain-text table."""
        lines = [f"{self.path}: {self.storage}, {self.duration_s:.3f} s, {len(self.topics)} topics"]
        width = max((len(t.topic) for t in self.topics), default=5)
        for topic in self.topics:
            mark = "" if topic.importable else "  (not importable)"
            lines.append(f"  {topic.topic.ljust(width)}  {topic.msgtype}  {topic.message_count} messages{mark}")
        return "\n".join(lines)


@dataclasses.dataclass
class TopicReport:
    """Alignment counts of one mapped topic over all imported bags.

    Attributes:
        messages: Messages of the topic read from the bags.
        late_frames: Written frames whose message was older than one frame period.
        dropped_frames: Grid frames dropped because this topic had no message within tolerance.
    """

    topic: str
    feature: str
    msgtype: str
    messages: int = 0
    late_frames: int = 0
    dropped_frames: int = 0


@dataclasses.dataclass
class ImportReport:
    """Result of `import_rosbag`: frames written and dropped, per-topic counts, unmapped topics."""

    output: Path
    episodes: int = 0
    frames: int = 0
    dropped_frames: int = 0
    topics: dict[str, TopicReport] = dataclasses.field(default_factory=dict)
    unmapped: list[TopicInfo] = dataclasses.field(default_factory=list)

    def format(self) -> str:
        """Render the report as plain text."""
        lines = [
            f"wrote {self.episodes} episodes, {self.frames} frames to {self.output}; "
            f"{self.dropped_frames} grid frames dropped"
        ]
        for report in self.topics.values():
            lines.append(
                f"  {report.topic} -> {report.feature}: {report.messages} messages, "
                f"{report.late_frames} late frames, {report.dropped_frames} dropped frames"
            )
        for topic in self.unmapped:
            lines.append(f"  not mapped: {topic.topic} ({topic.msgtype}, {topic.message_count} messages)")
        return "\n".join(lines)


def _open_reader(path: Path) -> Any:
    try:
        from rosbags.highlevel import AnyReader
        from rosbags.typesys import Stores, get_typestore
    except ImportError:
        raise MissingExtraError("rosbags", "data") from None
    if not path.exists():
        raise DatasetError(f"bag {path} not found; pass the bag folder that contains metadata.yaml")
    try:
        reader = AnyReader([path], default_typestore=get_typestore(Stores.ROS2_JAZZY))
        reader.open()
    except Exception as error:  # rosbags raises its own error classes per storage plugin
        raise DatasetError(f"cannot open bag {path}: {error}") from None
    return reader


def inspect_bag(path: str | Path) -> BagInfo:
    """List a bag's topics with their message types and counts, without decoding messages.

    Raises:
        DatasetError: The bag is missing or cannot be opened.
    """
    path = Path(path)
    reader = _open_reader(path)
    try:
        topics = tuple(
            TopicInfo(name, info.msgtype or "", int(info.msgcount), (info.msgtype or "") in SUPPORTED_TYPES)
            for name, info in sorted(reader.topics.items())
        )
        storage = "mcap" if any(p.suffix == ".mcap" for p in _bag_files(path)) else "sqlite3"
        return BagInfo(path, storage, int(reader.start_time), reader.duration / 1e9, topics)
    finally:
        reader.close()


def _bag_files(path: Path) -> list[Path]:
    return [path] if path.is_file() else sorted(p for p in path.iterdir() if p.suffix in (".mcap", ".db3"))


def import_rosbag(
    bags: str | Path | Sequence[str | Path],
    output: str | Path,
    mapping: BagMapping | str | Path,
) -> ImportReport:
    """Import ROS 2 bags into a new robota dataset, one episode per bag.

    Args:
        bags: One bag folder (sqlite3 or mcap) or several.
        output: New dataset folder to write.
        mapping: A `BagMapping` or the path of a TOML or YAML mapping file.

    Returns:
        The report: frames written and dropped, late and dropped frames per topic, and the
        topics the mapping left out.

    Raises:
        DatasetError: A bag cannot be read, lacks a mapped topic, has a message type that does
            not convert, or no frame fits the tolerance.
    """
    if not isinstance(mapping, BagMapping):
        mapping = load_mapping(mapping)
    paths = [Path(bags)] if isinstance(bags, str | Path) else [Path(b) for b in bags]
    if not paths:
        raise DatasetError("no bag given; pass at least one bag folder")
    report = ImportReport(Path(output))
    episodes = [_read_bag(path, mapping, report) for path in paths]
    spec = _bag_spec(mapping, episodes[0])

    with DatasetWriter(output, spec, robot_type=spec.robot.name) as writer:
        for path, streams in zip(paths, episodes):
            frames = _align(path, streams, mapping, report)
            for frame in frames:
                writer.add_frame({**frame, TASK: mapping.task})
            writer.save_episode({"source_bag": str(path), "start_time_ns": int(streams.start_ns)})
            report.episodes += 1
            report.frames += len(frames)

    for topic in report.topics.values():
        logger.info(
            "%s -> %s: %d messages, %d late frames, %d dropped frames",
            topic.topic, topic.feature, topic.messages, topic.late_frames, topic.dropped_frames,
        )
    for topic in report.unmapped:
        logger.info("topic %s (%s) is not mapped and was skipped", topic.topic, topic.msgtype)
    return report


@dataclasses.dataclass
class _Stream:
    """Messages of one mapped topic in one bag: times in ns, and values once converted."""

    mapping: TopicMapping
    msgtype: str
    times_ns: np.ndarray
    values: list[Any]
    names: tuple[str, ...] | None
    frame_id: str | None


@dataclasses.dataclass
class _BagStreams:
    start_ns: int
    streams: dict[str, _Stream]


def _read_bag(path: Path, mapping: BagMapping, report: ImportReport) -> _BagStreams:
    """Read and deserialise every message of the mapped topics of one bag; conversion comes later."""
    reader = _open_reader(path)
    try:
        mapped_topics = {t.topic: t for t in mapping.topics}
        missing = sorted(set(mapped_topics) - set(reader.topics))
        if missing:
            raise DatasetError(f"bag {path} has no topic {missing}; its topics: {sorted(reader.topics)}")
        for name, info in sorted(reader.topics.items()):
            if name not in mapped_topics and name not in {t.topic for t in report.unmapped}:
                msgtype = info.msgtype or ""
                report.unmapped.append(TopicInfo(name, msgtype, int(info.msgcount), msgtype in SUPPORTED_TYPES))
        collected: dict[str, list[tuple[int, Any]]] = {topic: [] for topic in mapped_topics}
        types = {}
        connections = [c for c in reader.connections if c.topic in mapped_topics]
        for connection, bag_time_ns, raw in reader.messages(connections=connections):
            topic = mapped_topics[connection.topic]
            types[topic.topic] = connection.msgtype
            if connection.msgtype not in SUPPORTED_TYPES:
                raise DatasetError(
                    f"bag {path}: topic {topic.topic} has type {connection.msgtype}, which robota does "
                    f"not convert; supported types: {', '.join(SUPPORTED_TYPES)}"
                )
            message = reader.deserialize(raw, connection.msgtype)
            collected[topic.topic].append((_stamp_ns(message, bag_time_ns, topic), message))
        start_ns = int(reader.start_time)
        _check_counts(path, reader.topics, collected)
    finally:
        reader.close()

    streams = {}
    for topic, items in collected.items():
        if not items:
            raise DatasetError(f"bag {path}: topic {topic} has no messages, so no frame can use it")
        items.sort(key=lambda item: item[0])
        mapped = mapped_topics[topic]
        entry = report.topics.setdefault(topic, TopicReport(topic, mapped.feature, types[topic]))
        entry.messages += len(items)
        streams[topic] = _Stream(
            mapped,
            types[topic],
            np.array([t for t, _ in items], dtype=np.int64),
            [m for _, m in items],
            _element_names(items[0][1], types[topic], mapped),
            getattr(getattr(items[0][1], "header", None), "frame_id", None) or None,
        )
    return _BagStreams(start_ns, streams)


def _check_counts(path: Path, topics: Any, collected: dict[str, list[Any]]) -> None:
    """Warn where rosbags returned fewer messages than the bag's metadata counts."""
    for topic, items in collected.items():
        expected = int(topics[topic].msgcount)
        if len(items) != expected:
            # rosbags 0.11.9 returns no messages from some bags written by older rosbag2 releases
            # (the talker test bags of rosbag2), although their metadata counts them.
            logger.warning(
                "bag %s: read %d messages of %s, but its metadata counts %d", path, len(items), topic, expected
            )


def _stamp_ns(message: Any, bag_time_ns: int, topic: TopicMapping) -> int:
    header = getattr(message, "header", None)
    if topic.stamp == "bag" or (topic.stamp == "auto" and header is None):
        return int(bag_time_ns)
    if header is None:
        raise DatasetError(
            f"topic {topic.topic}: stamp = 'header' but its messages have no header; use stamp = 'bag'"
        )
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def _align(path: Path, bag: _BagStreams, mapping: BagMapping, report: ImportReport) -> list[dict[str, Any]]:
    """Sample every stream on the fps grid; return the frames that every topic fills in time."""
    streams = bag.streams
    start = max(int(s.times_ns[0]) for s in streams.values())
    end = max(int(s.times_ns[-1]) for s in streams.values())
    count = int(np.floor((end - start) / mapping.period_ns + 1e-9)) + 1
    grid = start + np.round(np.arange(count) * mapping.period_ns).astype(np.int64)  # (frames,)

    fresh = np.ones(count, dtype=bool)
    chosen: dict[str, np.ndarray] = {}
    for topic, stream in streams.items():
        index = np.searchsorted(stream.times_ns, grid, side="right") - 1  # latest at or before
        age = grid - stream.times_ns[np.maximum(index, 0)]
        ok = (index >= 0) & (age <= mapping.tolerance_ns)
        report.topics[topic].dropped_frames += int((~ok).sum())
        report.topics[topic].late_frames += int((ok & (age > mapping.period_ns)).sum())
        fresh &= ok
        chosen[topic] = index
    report.dropped_frames += int((~fresh).sum())
    if not fresh.any():
        raise DatasetError(
            f"bag {path}: no frame has a message of every mapped topic within {mapping.tolerance_s} s; "
            "raise tolerance_s or check the topics' time stamps"
        )
    # NOTE: frames dropped inside a bag are removed and the episode closes up, so its timestamps
    # (frame index / fps) no longer match the bag's clock after a gap.
    frames = []
    for frame_index in np.flatnonzero(fresh):
        frame = {}
        for topic, stream in streams.items():
            frame[stream.mapping.feature] = _convert(stream, int(chosen[topic][frame_index]))
        frames.append(frame)
    return frames


def _convert(stream: _Stream, index: int) -> np.ndarray:
    """Convert the stream's message at `index` to its feature value, caching the result."""
    value = stream.values[index]
    if isinstance(value, np.ndarray):
        return value
    converted = message_value(value, stream.msgtype, stream.mapping)
    stream.values[index] = converted
    return converted


def message_value(message: Any, msgtype: str, topic: TopicMapping) -> np.ndarray:
    """Convert one deserialised message to a float32 vector or a uint8 (height, width, 3) image."""
    if msgtype == JOINT_STATE:
        values = np.asarray(getattr(message, topic.field), dtype=np.float64)
        return _select_joints(values, list(message.name), topic).astype(np.float32)
    if msgtype == JOINT_TRAJECTORY:
        if not message.points:
            raise DatasetError(f"topic {topic.topic}: a JointTrajectory message has no points")
        values = np.asarray(message.points[0].positions, dtype=np.float64)
        return _select_joints(values, list(message.joint_names), topic).astype(np.float32)
    if msgtype in (WRENCH_STAMPED, WRENCH):
        wrench = message.wrench if msgtype == WRENCH_STAMPED else message
        force, torque = wrench.force, wrench.torque
        return np.array([force.x, force.y, force.z, torque.x, torque.y, torque.z], dtype=np.float32)
    if msgtype in (FLOAT64_ARRAY, FLOAT32_ARRAY):
        return np.asarray(message.data, dtype=np.float32)
    image = _raw_image(message) if msgtype == IMAGE else _compressed_image(message, topic)
    if topic.size is not None:
        image = resize_rgb(image, *topic.size)
    return image


def _select_joints(values: np.ndarray, names: list[str], topic: TopicMapping) -> np.ndarray:
    if topic.joints is None:
        return values
    missing = [j for j in topic.joints if j not in names]
    if missing:
        raise DatasetError(f"topic {topic.topic}: joints {missing} are not in the message's names {names}")
    return values[[names.index(j) for j in topic.joints]]


def _raw_image(message: Any) -> np.ndarray:
    encoding = message.encoding.lower()
    channels = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}.get(encoding)
    if channels is None:
        raise DatasetError(
            f"image encoding {message.encoding!r} is not supported; use rgb8, bgr8, rgba8, bgra8 or mono8"
        )
    rows = np.asarray(message.data, dtype=np.uint8).reshape(message.height, message.step)
    image = rows[:, : message.width * channels].reshape(message.height, message.width, channels)
    if channels == 1:
        return np.repeat(image, 3, axis=2)
    if encoding.startswith("bgr"):
        image = image[:, :, [2, 1, 0]]
    return np.ascontiguousarray(image[:, :, :3])


def _compressed_image(message: Any, topic: TopicMapping) -> np.ndarray:
    import av

    codec = "png" if "png" in message.format.lower() else "mjpeg"
    decoder = av.CodecContext.create(codec, "r")
    try:
        frames = decoder.decode(av.Packet(bytes(np.asarray(message.data, dtype=np.uint8))))
    except av.FFmpegError as error:
        raise DatasetError(f"topic {topic.topic}: cannot decode a {message.format!r} image: {error}") from None
    if not frames:
        raise DatasetError(f"topic {topic.topic}: a {message.format!r} image decoded to nothing")
    return frames[0].to_ndarray(format="rgb24")


def _element_names(message: Any, msgtype: str, topic: TopicMapping) -> tuple[str, ...] | None:
    if topic.joints is not None:
        return topic.joints
    if msgtype == JOINT_STATE:
        return tuple(message.name) or None
    if msgtype == JOINT_TRAJECTORY:
        return tuple(message.joint_names) or None
    if msgtype in (WRENCH_STAMPED, WRENCH):
        return WRENCH_NAMES
    return None


def _bag_spec(mapping: BagMapping, bag: _BagStreams) -> Spec:
    """Build the dataset's spec from the first bag's first message of every mapped topic."""
    observations: list[FeatureSpec] = []
    action_stream = None
    for stream in bag.streams.values():
        value = _convert(stream, 0)
        feature = stream.mapping.feature
        if feature == ACTION:
            action_stream = stream
        elif feature.startswith(OBS_IMAGES):
            if stream.msgtype not in IMAGE_TYPES:
                raise DatasetError(
                    f"topic {stream.mapping.topic} maps to camera {feature!r} but carries {stream.msgtype}"
                )
            observations.insert(0, camera_feature(feature[len(OBS_IMAGES):], value.shape[0], value.shape[1]))
        else:
            if stream.msgtype in IMAGE_TYPES:
                raise DatasetError(
                    f"topic {stream.mapping.topic} carries images; map it to observation.images.<camera>"
                )
            names = stream.names
            if not names or len(names) != len(value):
                names = element_names(feature.rsplit(".", 1)[-1], len(value))
            unit = stream.mapping.unit or ("N; N*m" if stream.msgtype in (WRENCH_STAMPED, WRENCH) else None)
            observations.append(vector_feature(feature, names, unit=unit, frame=stream.frame_id))

    action = _convert(action_stream, 0)
    robot = _robot(mapping, len(action), action_stream.names)
    action_names = action_stream.names if action_stream.names and len(action_stream.names) == len(action) else None
    return make_foreign_spec(
        robot,
        mapping.fps,
        observations,
        action_names=action_names,
        action_unit=action_stream.mapping.unit,
        action_description=f"commands from {action_stream.mapping.topic}",
    )


def _robot(mapping: BagMapping, action_dim: int, names: tuple[str, ...] | None):
    if mapping.robot is not None:
        if mapping.robot not in ROBOTS:
            raise UnknownNameError("robot", mapping.robot, ROBOTS)
        return get_robot(mapping.robot)
    joint_names = names[:-1] if names and len(names) == action_dim else None
    return generic_robot(mapping.robot_name, action_dim - 1, joint_names=joint_names)
