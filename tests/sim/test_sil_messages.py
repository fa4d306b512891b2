"""ROS message conversion, command parsing and the twin driver of the SIL server, in-process."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Iterator

import numpy as np
import pytest

from robota.sim import sil_messages as msgs
from robota.sim.pick_place import INSTRUCTIONS
from robota.sim.sil import SilConfig
from robota.sim.sil_connection import MAX_PENDING_RESPONSES, Outbox, OutboxFullError
from robota.sim.sil_twin import TwinDriver
from robota.errors import RobotaError, UnknownNameError
from robota.sim_cli import register
from robota.spec import UR5E

JOINTS = UR5E.joint_names


def test_stamp_splits_seconds() -> None:
    assert msgs.stamp(12.3) == {"sec": 12, "nanosec": 300_000_000}
    assert msgs.stamp(0.1 * 3) == {"sec": 0, "nanosec": 300_000_000}


def test_canonical_type_adds_msg() -> None:
    assert msgs.canonical_type("sensor_msgs/JointState") == "sensor_msgs/msg/JointState"
    assert msgs.canonical_type("sensor_msgs/msg/JointState") == "sensor_msgs/msg/JointState"


def test_float_array_rejects_bad_data() -> None:
    assert msgs.parse_float_array({"data": [1, 2.5]}, "/t", 2).tolist() == [1.0, 2.5]
    for message in ({"data": [1.0]}, {"data": [1.0, float("nan")]}, {"data": [True, 1]}, {}, [1, 2]):
        with pytest.raises(msgs.BridgeMessageError):
            msgs.parse_float_array(message, "/t", 2)


def test_trajectory_reorders_joints() -> None:
    positions = np.arange(12, dtype=float).reshape(2, 6)
    message = {
        "joint_names": list(JOINTS[::-1]),
        "points": [
            {"positions": positions[0, ::-1].tolist(), "time_from_start": {"sec": 0, "nanosec": 500_000_000}},
            {"positions": positions[1, ::-1].tolist(), "time_from_start": {"secs": 1, "nsecs": 0}},
        ],
    }
    times_s, ordered, start_s = msgs.parse_joint_trajectory(message, JOINTS)

    assert times_s.tolist() == [0.5, 1.0]
    assert ordered.tolist() == positions.tolist()
    assert start_s is None


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({"joint_names": ["elbow"], "points": []}, "joint_names"),
        ({"points": [{"positions": [0.0] * 5, "time_from_start": {"sec": 1}}]}, "5 positions"),
        ({"points": [{"positions": [0.0] * 6}]}, "time_from_start"),
        ({"points": [{"positions": [0.0] * 6, "time_from_start": {"sec": -1}}]}, "negative"),
        (
            {
                "points": [
                    {"positions": [0.0] * 6, "time_from_start": {"sec": 1}},
                    {"positions": [0.0] * 6, "time_from_start": {"sec": 1}},
                ]
            },
            "increase strictly",
        ),
        ({"points": "all of them"}, "points must be a list"),
    ],
)
def test_trajectory_rejects_bad_fields(message: dict, expected: str) -> None:
    with pytest.raises(msgs.BridgeMessageError, match=expected):
        msgs.parse_joint_trajectory(message, JOINTS)


@pytest.fixture(scope="module")
def driver() -> Iterator[TwinDriver]:
    twin = TwinDriver("pick-place", image_size=32, jpeg_quality=90)
    yield twin
    twin.close()


def test_driver_interpolates_trajectory(driver: TwinDriver) -> None:
    driver.reset(seed=0, language=None, cameras=())
    start = np.array(driver.status().time_s)
    command = driver._arm_command_rad.copy()
    # Points at 0.2 s and 0.4 s: the step ending at 0.1 s aims halfway to the first point.
    driver.command_trajectory(
        np.array([0.2, 0.4]), np.vstack([command + 0.1, command + 0.2]), start_s=None
    )

    targets = []
    for _ in range(5):
        with driver._lock:
            targets.append(driver._arm_target_for_next_step() - command)
        driver.step(cameras=())
    assert driver.status().time_s == pytest.approx(start + 0.5)
    assert [float(t[0]) for t in targets] == pytest.approx([0.05, 0.1, 0.15, 0.2, 0.2])
    assert driver._trajectory is None


def test_driver_rejects_gripper_out_of_range(driver: TwinDriver) -> None:
    with pytest.raises(msgs.BridgeMessageError, match=r"\[0, 1\]"):
        driver.command_gripper(1.5)


def test_driver_renders_only_requested_cameras(driver: TwinDriver) -> None:
    messages = driver.reset(seed=0, language="de", cameras=("wrist",))

    assert msgs.image_topic("wrist") in messages
    assert msgs.image_topic("overhead") not in messages
    assert driver.instruction in INSTRUCTIONS["de"]


def test_config_rejects_bad_settings() -> None:
    with pytest.raises(UnknownNameError, match="lockstep"):
        SilConfig(mode="lock-step")
    with pytest.raises(UnknownNameError, match="pick-place"):
        SilConfig(task="pick-plase")
    with pytest.raises(RobotaError, match="port"):
        SilConfig(port=70000)
    with pytest.raises(RobotaError, match="image_size"):
        SilConfig(image_size=1000)


def test_cli_parses_serve_arguments() -> None:
    parser = argparse.ArgumentParser(prog="robota")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        ["sim", "serve", "--task", "pick-place", "--port", "0", "--mode", "lockstep", "--image-size", "64"]
    )

    assert (args.task, args.host, args.port, args.mode, args.image_size) == (
        "pick-place",
        "127.0.0.1",
        0,
        "lockstep",
        64,
    )
    assert callable(args.handler)


def test_outbox_keeps_newest_per_topic() -> None:
    async def drain() -> list[str]:
        outbox = Outbox()
        outbox.put("response 1")
        for i in range(3):
            outbox.put(f"image {i}", "/camera/wrist/image/compressed", queue_length=1)
            outbox.put(f"state {i}", "/joint_states", queue_length=2)
        outbox.put("response 2")
        return [await outbox.get() for _ in range(5)]

    assert asyncio.run(drain()) == ["response 1", "state 1", "image 2", "state 2", "response 2"]


def test_outbox_rejects_unread_responses() -> None:
    async def flood() -> None:
        outbox = Outbox()
        for i in range(MAX_PENDING_RESPONSES + 1):
            outbox.put(f"response {i}")

    with pytest.raises(OutboxFullError):
        asyncio.run(flood())
