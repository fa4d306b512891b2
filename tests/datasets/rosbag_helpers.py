"""Write small ROS 2 bags with rosbags for the import tests."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

TYPESTORE = get_typestore(Stores.ROS2_JAZZY)
T = TYPESTORE.types
STORAGES = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}


def header(time_ns: int, frame_id: str = ""):
    stamp = T["builtin_interfaces/msg/Time"](sec=time_ns // 1_000_000_000, nanosec=time_ns % 1_000_000_000)
    return T["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)


def joint_state(time_ns: int, names: Sequence[str], positions: np.ndarray):
    return T["sensor_msgs/msg/JointState"](
        header=header(time_ns),
        name=list(names),
        position=np.asarray(positions, dtype=np.float64),
        velocity=np.zeros(0),
        effort=np.zeros(0),
    )


def wrench(time_ns: int, values: np.ndarray):
    vector = T["geometry_msgs/msg/Vector3"]
    force = vector(x=float(values[0]), y=float(values[1]), z=float(values[2]))
    torque = vector(x=float(values[3]), y=float(values[4]), z=float(values[5]))
    return T["geometry_msgs/msg/WrenchStamped"](
        header=header(time_ns, "tool0"), wrench=T["geometry_msgs/msg/Wrench"](force=force, torque=torque)
    )


def commands(values: np.ndarray):
    layout = T["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0)
    return T["std_msgs/msg/Float64MultiArray"](layout=layout, data=np.asarray(values, dtype=np.float64))


def encode_jpeg(image: np.ndarray) -> bytes:
    """Encode an RGB uint8 image as a baseline JPEG with PyAV's MJPEG encoder at high quality."""
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width, encoder.height = image.shape[1], image.shape[0]
    encoder.pix_fmt = "yuvj444p"
    encoder.time_base = Fraction(1, 10)
    encoder.options = {"qmin": "1", "qmax": "2"}
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24").reformat(format="yuvj444p")
    return b"".join(bytes(packet) for packet in [*encoder.encode(frame), *encoder.encode(None)])


def compressed_image(time_ns: int, image: np.ndarray):
    data = np.frombuffer(encode_jpeg(image), dtype=np.uint8)
    return T["sensor_msgs/msg/CompressedImage"](header=header(time_ns, "wrist_camera"), format="jpeg", data=data)


def write_bag(path: Path, storage: str, messages: Sequence[tuple[str, str, int, object]]) -> Path:
    """Write (topic, msgtype, bag time ns, message) tuples into a new bag folder."""
    with Writer(path, version=9, storage_plugin=STORAGES[storage]) as writer:
        connections = {}
        for topic, msgtype, _, _ in messages:
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=TYPESTORE)
        for topic, msgtype, time_ns, message in sorted(messages, key=lambda m: m[2]):
            writer.write(connections[topic], time_ns, TYPESTORE.serialize_cdr(message, msgtype))
    return path
