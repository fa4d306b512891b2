"""The SIL server in lock-step mode, driven by roslibpy and by a raw rosbridge client.

One server process serves every test here. It listens on a free loopback port, is waited for
with a deadline and stopped by its PID. Each test resets the twin before it relies on its state.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

roslibpy = pytest.importorskip("roslibpy")
pytest.importorskip("websockets")
Image = pytest.importorskip("PIL.Image")
from websockets.sync.client import ClientConnection, connect  # noqa: E402

from robota.spec import UR5E  # noqa: E402

STARTUP_DEADLINE_S = 60.0
REPLY_DEADLINE_S = 20.0
IMAGE_SIZE = 64
JOINTS = [*UR5E.joint_names, "gripper"]


def start_server(log_path: Path, *args: str) -> tuple[subprocess.Popen, int]:
    """Start `robota sim serve` on a free loopback port and wait until it accepts clients."""
    log = log_path.open("wb")
    command = [sys.executable, "-m", "robota.sim_cli", "sim", "serve", "--port", "0", *args]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{log_path.read_text()}")
        found = re.search(r"on ws://127\.0\.0\.1:(\d+)", log_path.read_text())
        if found:
            port = int(found.group(1))
            with connect(f"ws://127.0.0.1:{port}", open_timeout=5):
                return process, port
        time.sleep(0.1)
    stop_server(process)
    pytest.fail(f"server not ready within {STARTUP_DEADLINE_S} s:\n{log_path.read_text()}")


def stop_server(process: subprocess.Popen) -> int:
    """Stop the server by its PID with SIGTERM, then SIGKILL after a deadline; return its status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)
    return process.returncode


class BridgeClient:
    """Minimal rosbridge v2 client that sees every frame, status messages included."""

    def __init__(self, websocket: ClientConnection):
        self.websocket = websocket
        self._ids = itertools.count()

    def send(self, operation: dict[str, Any] | str | bytes) -> None:
        if isinstance(operation, dict):
            operation = json.dumps(operation)
        self.websocket.send(operation)

    def receive(self, timeout: float = REPLY_DEADLINE_S) -> dict[str, Any]:
        return json.loads(self.websocket.recv(timeout=timeout))

    def receive_until(self, done: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """Return the frames received up to and including the first one that `done` accepts."""
        frames = []
        deadline = time.monotonic() + REPLY_DEADLINE_S
        while time.monotonic() < deadline:
            frames.append(self.receive(timeout=deadline - time.monotonic()))
            if done(frames[-1]):
                return frames
        raise TimeoutError(f"no matching frame within {REPLY_DEADLINE_S} s; got {frames[-5:]}")

    def call(self, service: str, args: dict[str, Any] | None = None) -> tuple[dict, list[dict]]:
        """Call a service; return its response and the frames that arrived before it."""
        request_id = f"call:{next(self._ids)}"
        self.send({"op": "call_service", "service": service, "args": args or {}, "id": request_id})
        frames = self.receive_until(
            lambda f: f["op"] == "service_response" and f.get("id") == request_id
        )
        return frames[-1], frames[:-1]

    def subscribe(self, topic: str, **fields: Any) -> None:
        self.send({"op": "subscribe", "topic": topic, "id": f"sub:{topic}", **fields})



def published(frames: list[dict[str, Any]], topic: str) -> list[dict[str, Any]]:
    return [f["msg"] for f in frames if f["op"] == "publish" and f["topic"] == topic]


def stamp_ns(message: dict[str, Any]) -> int:
    stamp = message["header"]["stamp"]
    return stamp["sec"] * 1_000_000_000 + stamp["nanosec"]


@pytest.fixture(scope="module")
def lockstep_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    log_path = tmp_path_factory.mktemp("sil") / "server.log"
    process, port = start_server(
        log_path, "--mode", "lockstep", "--image-size", str(IMAGE_SIZE), "--seed", "7"
    )
    yield port
    stop_server(process)


@pytest.fixture
def client(lockstep_port: int) -> Iterator[BridgeClient]:
    with connect(f"ws://127.0.0.1:{lockstep_port}", open_timeout=5) as websocket:
        yield BridgeClient(websocket)


@pytest.fixture
def ros(lockstep_port: int) -> Iterator[Any]:
    connection = roslibpy.Ros(host="127.0.0.1", port=lockstep_port)
    connection.run(timeout=REPLY_DEADLINE_S)
    yield connection
    connection.close()


class MessageInbox:
    """Collects a roslibpy subscription's messages across the client's event-loop thread."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self._condition = threading.Condition()

    def __call__(self, message: dict[str, Any]) -> None:
        with self._condition:
            self.messages.append(dict(message))
            self._condition.notify_all()

    def wait_for(self, count: int) -> list[dict[str, Any]]:
        with self._condition:
            if not self._condition.wait_for(lambda: len(self.messages) >= count, REPLY_DEADLINE_S):
                raise TimeoutError(f"got {len(self.messages)} of {count} messages")
            return list(self.messages)


def subscribe_inbox(ros: Any, topic: str, message_type: str, **options: Any) -> MessageInbox:
    inbox = MessageInbox()
    roslibpy.Topic(ros, topic, message_type, **options).subscribe(inbox)
    # A status call completes after the subscribe request, so the server has registered it.
    roslibpy.Service(ros, "/robota/status", "robota/Status").call(
        roslibpy.ServiceRequest({}), timeout=REPLY_DEADLINE_S
    )
    return inbox


def call(ros: Any, service: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    request = roslibpy.ServiceRequest(args or {})
    return dict(roslibpy.Service(ros, service, "robota/Srv").call(request, timeout=REPLY_DEADLINE_S))


def test_joint_states_over_roslibpy(ros: Any) -> None:
    inbox = subscribe_inbox(ros, "/joint_states", "sensor_msgs/msg/JointState")
    call(ros, "/robota/reset", {"seed": 1})
    call(ros, "/robota/step")
    first, second = inbox.wait_for(2)[-2:]

    assert first["name"] == JOINTS
    assert len(first["position"]) == len(first["velocity"]) == len(first["effort"]) == 7
    # The gripper starts open: its position is the opening between the fingers in metres.
    assert first["position"][6] == pytest.approx(UR5E.gripper_max_opening_m, abs=1e-3)
    assert stamp_ns(second) - stamp_ns(first) == 100_000_000


def test_images_decode_as_jpeg_of_image_size(ros: Any) -> None:
    inboxes = {
        camera: subscribe_inbox(
            ros, f"/camera/{camera}/image/compressed", "sensor_msgs/CompressedImage", queue_length=1
        )
        for camera in ("wrist", "overhead")
    }
    call(ros, "/robota/step")

    for camera, inbox in inboxes.items():
        message = inbox.wait_for(1)[-1]
        assert message["format"] == "jpeg"
        assert message["header"]["frame_id"] == camera
        image = Image.open(io.BytesIO(base64.b64decode(message["data"])))
        assert image.format == "JPEG"
        assert image.size == (IMAGE_SIZE, IMAGE_SIZE)
        assert np.asarray(image).std() > 5, f"{camera} image is blank"


def test_reset_with_seed_repeats_first_state(client: BridgeClient) -> None:
    client.subscribe("/joint_states")
    client.subscribe("/part_pose")
    first_states = []
    for seed in (3, 3, 4):
        response, frames = client.call("/robota/reset", {"seed": seed})
        assert response["result"] is True
        assert response["values"]["success"] is True
        assert response["values"]["instruction"]
        (joint_state,) = published(frames, "/joint_states")
        (part_pose,) = published(frames, "/part_pose")
        first_states.append((joint_state["position"], part_pose))

    assert first_states[0] == first_states[1]
    assert first_states[0][0] != first_states[2][0]


def test_step_advances_one_control_period(client: BridgeClient) -> None:
    client.subscribe("/joint_states")
    _, frames = client.call("/robota/reset", {"seed": 5})
    (reset_state,) = published(frames, "/joint_states")

    before = client.call("/robota/status")[0]["values"]
    response, frames = client.call("/robota/step")
    after = response["values"]

    (stepped_state,) = published(frames, "/joint_states")
    assert before["steps"] == 0
    assert after["steps"] == 1
    assert after["success"] is True
    assert stamp_ns(stepped_state) - stamp_ns(reset_state) == 100_000_000
    assert stamp_ns({"header": {"stamp": after["stamp"]}}) == stamp_ns(stepped_state)


def test_position_command_moves_arm(client: BridgeClient) -> None:
    client.subscribe("/joint_states")
    _, frames = client.call("/robota/reset", {"seed": 2})
    start = np.array(published(frames, "/joint_states")[0]["position"][:6])
    target = start + np.array([0.3, -0.2, 0.2, 0.1, 0.0, -0.3])
    client.send(
        {
            "op": "publish",
            "topic": "/forward_position_controller/commands",
            "msg": {"layout": {"dim": [], "data_offset": 0}, "data": target.tolist()},
        }
    )

    errors = []
    for _ in range(12):
        _, frames = client.call("/robota/step")
        position = np.array(published(frames, "/joint_states")[0]["position"][:6])
        errors.append(float(np.abs(position - target).max()))
    assert errors[0] < 0.3
    assert errors[-1] < 0.01


def test_gripper_command_closes_fingers(client: BridgeClient) -> None:
    client.subscribe("/joint_states")
    client.call("/robota/reset", {"seed": 2})
    client.send({"op": "publish", "topic": "/gripper_controller/commands", "msg": {"data": [1.0]}})
    for _ in range(5):
        _, frames = client.call("/robota/step")

    opening_m = published(frames, "/joint_states")[0]["position"][6]
    assert opening_m < 0.005


def test_trajectory_reaches_points_at_their_times(client: BridgeClient) -> None:
    client.subscribe("/joint_states")
    _, frames = client.call("/robota/reset", {"seed": 2})
    start = np.array(published(frames, "/joint_states")[0]["position"][:6])
    # Listed in reverse joint order, which the message's joint_names allow.
    offsets = [np.full(6, 0.05), np.full(6, 0.10), np.full(6, 0.15)]
    points = [
        {"positions": (start + offset)[::-1].tolist(), "time_from_start": {"sec": 0, "nanosec": ns}}
        for offset, ns in zip(offsets, (100_000_000, 200_000_000, 300_000_000))
    ]
    client.send(
        {
            "op": "publish",
            "topic": "/joint_trajectory_controller/joint_trajectory",
            "msg": {"joint_names": list(UR5E.joint_names)[::-1], "points": points},
        }
    )

    positions = []
    for _ in range(8):
        _, frames = client.call("/robota/step")
        positions.append(np.array(published(frames, "/joint_states")[0]["position"][:6]))
    # The arm trails its ramped target by a few millirad within a period, then settles.
    assert np.abs(positions[0] - (start + 0.05)).max() < 0.03
    assert np.abs(positions[1] - (start + 0.10)).max() < 0.03
    assert np.abs(positions[-1] - (start + 0.15)).max() < 0.005


def test_wrench_task_and_part_pose(client: BridgeClient) -> None:
    for topic in ("/wrench", "/part_pose", "/task"):
        client.subscribe(topic)
    response, frames = client.call("/robota/reset", {"seed": 0, "language": "en"})

    (wrench,) = published(frames, "/wrench")
    (part_pose,) = published(frames, "/part_pose")
    tasks = published(frames, "/task")
    # At rest with the tool down, the sensor reads the 1 kg gripper's weight along its z axis.
    assert wrench["header"]["frame_id"] == "tool"
    assert wrench["wrench"]["force"]["z"] == pytest.approx(-9.8, abs=0.5)
    assert 0.34 < part_pose["x"] < 0.56
    assert -0.26 < part_pose["y"] < -0.04
    assert tasks[-1]["data"] == response["values"]["instruction"]
    assert tasks[-1]["data"].endswith("bin.")


@pytest.mark.parametrize(
    ("request_frame", "expected"),
    [
        ("{not json", "invalid JSON"),
        ({"op": "teleport", "id": "t1"}, "unknown op 'teleport'"),
        ({"op": "subscribe", "topic": "/cmd_vel", "id": "t2"}, "not a published topic"),
        (
            {"op": "subscribe", "topic": "/joint_states", "type": "std_msgs/String", "id": "t3"},
            "has type sensor_msgs/msg/JointState",
        ),
        (
            {"op": "publish", "topic": "/forward_position_controller/commands", "msg": {"data": [1, 2]}, "id": "t4"},
            "must hold 6 values",
        ),
        (
            {"op": "publish", "topic": "/gripper_controller/commands", "msg": {"data": [2.0]}, "id": "t5"},
            "in [0, 1]",
        ),
        (
            {"op": "publish", "topic": "/joint_trajectory_controller/joint_trajectory", "msg": {"joint_names": ["elbow"], "points": []}, "id": "t6"},
            "joint_names must list each arm joint once",
        ),
        ({"op": "publish", "topic": "/joint_states", "msg": {}, "id": "t7"}, "not a command topic"),
        ({"op": "call_service", "service": "/robota/reset", "args": {"seed": "x"}, "id": "t8"}, "seed must be"),
        ({"op": "call_service", "service": "/robota/fly", "id": "t9"}, "unknown service"),
        (
            {"op": "subscribe", "topic": "/joint_states", "compression": "cbor", "id": "t10"},
            "compression 'cbor' is not supported",
        ),
        (b"\x00binary", "binary frames are not supported"),
    ],
)
def test_bad_request_gets_status_error(
    client: BridgeClient, request_frame: dict[str, Any] | str | bytes, expected: str
) -> None:
    client.send(request_frame)
    (status,) = [
        f for f in client.receive_until(lambda f: f["op"] == "status") if f["op"] == "status"
    ]

    assert status["level"] == "error"
    assert expected in status["msg"]
    if isinstance(request_frame, dict):
        assert status["id"] == request_frame["id"]
    # The server keeps serving the same connection.
    response, _ = client.call("/robota/status")
    assert response["result"] is True


def test_failed_service_call_returns_result_false(client: BridgeClient) -> None:
    response, _ = client.call("/robota/reset", {"seed": -1})

    assert response["result"] is False
    assert "non-negative" in response["values"]


def test_throttle_rate_limits_messages(client: BridgeClient) -> None:
    client.subscribe("/joint_states", throttle_rate=60_000)
    frames = []
    for _ in range(4):
        frames += client.call("/robota/step")[1]

    assert len(published(frames, "/joint_states")) == 1


def test_unsubscribe_stops_messages(client: BridgeClient) -> None:
    client.subscribe("/joint_states")
    client.send({"op": "unsubscribe", "topic": "/joint_states", "id": "sub:/joint_states"})
    _, frames = client.call("/robota/step")

    assert published(frames, "/joint_states") == []


def test_expert_episode_through_server(ros: Any) -> None:
    """The scripted expert, fed only by ROS messages, repeats its in-process episode exactly."""
    from robota.sim import make_env
    from robota.sim.expert import PickPlaceExpert
    from robota.sim.rollout import run_episode
    from robota.spec import OBS_PART_POSE, OBS_STATE

    seed = 11
    env = make_env("pick-place", render_images=False)
    reference = run_episode(env, PickPlaceExpert(env), seed=seed)
    # The expert reads only the model (for IK) and the bin's fixed position from `env`.
    expert = PickPlaceExpert(env)
    joint_states = subscribe_inbox(ros, "/joint_states", "sensor_msgs/msg/JointState")
    part_poses = subscribe_inbox(ros, "/part_pose", "geometry_msgs/msg/Pose2D")
    arm_commands = roslibpy.Topic(
        ros, "/forward_position_controller/commands", "std_msgs/msg/Float64MultiArray"
    )
    gripper_commands = roslibpy.Topic(
        ros, "/gripper_controller/commands", "std_msgs/msg/Float64MultiArray"
    )

    call(ros, "/robota/reset", {"seed": seed})
    expert.reset()
    received = len(joint_states.messages)
    for steps in range(1, reference.steps + 10):
        joint_state = joint_states.wait_for(received)[-1]
        part_pose = part_poses.wait_for(received)[-1]
        observation = {
            OBS_STATE: np.asarray(joint_state["position"], dtype=np.float32),
            OBS_PART_POSE: np.asarray(
                [part_pose["x"], part_pose["y"], part_pose["theta"]], dtype=np.float32
            ),
        }
        action = expert(observation)
        arm_commands.publish(roslibpy.Message({"data": action[:6].tolist()}))
        gripper_commands.publish(roslibpy.Message({"data": [float(action[6])]}))
        status = call(ros, "/robota/step")
        received += 1
        if status["terminated"] or status["truncated"]:
            break

    assert status["terminated"] is True
    assert status["is_success"] is True
    assert steps == reference.steps
    assert reference.success is True


def test_edge_client_reads_twin_observation(client: BridgeClient, lockstep_port: int) -> None:
    """The edge runtime's rosbridge client rebuilds the observation that the twin computed."""
    edge_ros = pytest.importorskip("robota.edge.ros")
    from robota.sim import make_env
    from robota.spec import OBS_IMAGES, OBS_PART_POSE, OBS_STATE, OBS_VELOCITY, OBS_WRENCH, TASK

    seed = 21
    env = make_env("pick-place", image_size=(IMAGE_SIZE, IMAGE_SIZE))
    observation, _ = env.reset(seed=seed)
    hold = np.r_[observation[OBS_STATE][:6], 0.0].astype(np.float32)
    expected, *_ = env.step(hold)
    env.close()

    edge_io = edge_ros.RosBridgeIO(f"ws://127.0.0.1:{lockstep_port}", env.unwrapped.feature_spec)
    edge_io.connect(timeout_s=REPLY_DEADLINE_S)
    try:
        client.call("/robota/reset", {"seed": seed})
        # With no command sent, the twin holds its start pose, as the action `hold` does.
        edge_io.call_trigger(edge_ros.STEP_SERVICE, timeout_s=REPLY_DEADLINE_S)
        observation = edge_io.read_frame().observation
    finally:
        edge_io.close()

    assert observation is not None
    for key in (OBS_STATE, OBS_VELOCITY, OBS_WRENCH, OBS_PART_POSE):
        np.testing.assert_array_equal(observation[key], expected[key], err_msg=key)
    assert observation[TASK] == expected[TASK]
    for camera in ("wrist", "overhead"):
        received = observation[OBS_IMAGES + camera].astype(float)
        rendered = expected[OBS_IMAGES + camera].astype(float)
        # JPEG at quality 90 changed these 64 x 64 images by 3.0 levels on average.
        assert np.abs(received - rendered).mean() < 5.0, camera
