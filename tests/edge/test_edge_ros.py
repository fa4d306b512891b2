"""The rosbridge client of the edge runtime against a rosbridge test double on 127.0.0.1."""

from __future__ import annotations

import base64
import io
import time

import numpy as np
import pytest

pytest.importorskip("roslibpy", reason="the ROS client needs roslibpy (robota[edge])")

from fake_rosbridge import FakeRosbridgeServer, wait_until  # noqa: E402

from robota.edge import ros  # noqa: E402
from robota.errors import RobotaError  # noqa: E402
from robota.spec import OBS_IMAGES, OBS_PART_POSE, OBS_STATE, OBS_VELOCITY, OBS_WRENCH, TASK, UR5E, make_arm_spec  # noqa: E402

SPEC = make_arm_spec(UR5E, 10, {"wrist": (32, 32)})
JOINTS = [0.1, -1.2, 1.5, -1.6, -1.57, 0.3]
TIMEOUT_S = 15.0


def jpeg_message(color: tuple[int, int, int], size: int = 32) -> dict:
    image_module = pytest.importorskip("PIL.Image")
    buffer = io.BytesIO()
    image_module.new("RGB", (size, size), color).save(buffer, format="JPEG", quality=95)
    return {"format": "jpeg", "data": base64.b64encode(buffer.getvalue()).decode("ascii")}


def publish_sensors(server: FakeRosbridgeServer) -> None:
    names = [*UR5E.joint_names, "gripper"]
    server.publish(ros.JOINT_STATES_TOPIC, {"name": names, "position": [*JOINTS, 0.04], "velocity": [0.0] * 7, "effort": []})
    server.publish(ros.WRENCH_TOPIC, {"wrench": {"force": {"x": 1.0, "y": 2.0, "z": 3.0}, "torque": {"x": 0.1, "y": 0.2, "z": 0.3}}})
    server.publish(ros.PART_POSE_TOPIC, {"x": 0.4, "y": -0.1, "theta": 0.5})
    server.publish(ros.TASK_TOPIC, {"data": "pick up the part"})
    server.publish("/camera/wrist/image/compressed", jpeg_message((200, 30, 40)))


@pytest.fixture
def server():
    with FakeRosbridgeServer() as fake:
        yield fake


@pytest.fixture
def client(server: FakeRosbridgeServer):
    bridge = ros.RosBridgeIO(server.url, SPEC)
    bridge.connect(timeout_s=TIMEOUT_S)
    wait_until(lambda: len(server.ops("subscribe")) >= 5, TIMEOUT_S, "5 subscriptions")
    yield bridge
    bridge.close()


def test_parse_ros_url_rejects_http() -> None:
    with pytest.raises(RobotaError, match="ws://HOST:PORT"):
        ros.parse_ros_url("http://127.0.0.1:9090")


def test_ros_frame_from_topics(server: FakeRosbridgeServer, client: ros.RosBridgeIO) -> None:
    assert client.read_frame().observation is None

    publish_sensors(server)
    wait_until(lambda: client.read_frame().observation is not None, TIMEOUT_S, "a complete observation")
    frame = client.read_frame()
    observation = frame.observation
    np.testing.assert_allclose(observation[OBS_STATE], [*JOINTS, 0.04], atol=1e-6)
    np.testing.assert_allclose(observation[OBS_VELOCITY], np.zeros(6))
    np.testing.assert_allclose(observation[OBS_WRENCH], [1, 2, 3, 0.1, 0.2, 0.3], atol=1e-6)
    np.testing.assert_allclose(observation[OBS_PART_POSE], [0.4, -0.1, 0.5], atol=1e-6)
    assert observation[TASK] == "pick up the part"
    image = observation[OBS_IMAGES + "wrist"]
    assert image.shape == (32, 32, 3)
    assert image.dtype == np.uint8
    np.testing.assert_allclose(image.reshape(-1, 3).mean(axis=0), [200, 30, 40], atol=4)
    assert set(frame.stamps_s) == {"joint_states", "wrench", "camera/wrist"}
    assert all(stamp is not None for stamp in frame.stamps_s.values())


def test_ros_subscribes_contract_topics(server: FakeRosbridgeServer, client: ros.RosBridgeIO) -> None:
    topics = {m["topic"]: m["type"] for m in server.ops("subscribe")}
    assert topics["/joint_states"] == "sensor_msgs/msg/JointState"
    assert topics["/wrench"] == "geometry_msgs/msg/WrenchStamped"
    assert topics["/camera/wrist/image/compressed"] == "sensor_msgs/msg/CompressedImage"
    assert topics["/part_pose"] == "geometry_msgs/msg/Pose2D"
    assert topics["/task"] == "std_msgs/msg/String"


def test_ros_publishes_arm_and_gripper(server: FakeRosbridgeServer, client: ros.RosBridgeIO) -> None:
    assert client.send_command(np.array([*JOINTS, 1.0]))
    wait_until(lambda: server.ops("publish", ros.GRIPPER_COMMAND_TOPIC), TIMEOUT_S, "a gripper command")
    (arm,) = server.ops("publish", ros.ARM_COMMAND_TOPIC)
    (gripper,) = server.ops("publish", ros.GRIPPER_COMMAND_TOPIC)
    assert arm["msg"]["data"] == pytest.approx(JOINTS)
    assert gripper["msg"]["data"] == [1.0]


def test_ros_drops_commands_while_disconnected(server: FakeRosbridgeServer, client: ros.RosBridgeIO) -> None:
    server.drop_clients()
    wait_until(lambda: not client.connected, TIMEOUT_S, "the client to see the disconnect")

    stale = np.array([9.0, 9.0, 9.0, 9.0, 9.0, 9.0, 0.0])
    for _ in range(3):
        assert not client.send_command(stale)
    assert client.commands_dropped == 3

    wait_until(lambda: client.connected and server.client_count == 1, TIMEOUT_S, "the reconnect")
    assert client.reconnects == 1
    fresh = np.array([*JOINTS, 0.0])
    assert client.send_command(fresh)
    wait_until(lambda: server.ops("publish", ros.ARM_COMMAND_TOPIC), TIMEOUT_S, "the fresh command")
    time.sleep(0.3)  # time for any replayed command to arrive after the fresh one
    published = [m["msg"]["data"] for m in server.ops("publish", ros.ARM_COMMAND_TOPIC)]
    assert published == [pytest.approx(JOINTS)]


def test_ros_drops_command_queued_before_reconnect(server: FakeRosbridgeServer, client: ros.RosBridgeIO) -> None:
    # A command queued on the connection before a drop must not go out on the next one.
    epoch = client._epoch
    server.drop_clients()
    wait_until(lambda: not client.connected, TIMEOUT_S, "the client to see the disconnect")
    client._send_in_epoch(ros.ARM_COMMAND_TOPIC, ros.float_array_message(np.full(6, 9.0)), epoch)

    wait_until(lambda: client.connected and server.client_count == 1, TIMEOUT_S, "the reconnect")
    time.sleep(0.3)
    assert server.ops("publish", ros.ARM_COMMAND_TOPIC) == []
    assert client.commands_dropped == 1


def test_ros_reset_service(server: FakeRosbridgeServer, client: ros.RosBridgeIO) -> None:
    server.service_responses[ros.RESET_SERVICE] = {"success": True, "message": "episode 3"}
    assert client.call_trigger(ros.RESET_SERVICE, timeout_s=TIMEOUT_S) == "episode 3"
    server.service_responses[ros.RESET_SERVICE] = {"success": False, "message": "busy"}
    with pytest.raises(RobotaError, match="busy"):
        client.call_trigger(ros.RESET_SERVICE, timeout_s=TIMEOUT_S)


def test_ros_connect_timeout_names_url() -> None:
    with FakeRosbridgeServer() as server:
        url = server.url
    bridge = ros.RosBridgeIO(url, SPEC)
    with pytest.raises(RobotaError, match="timed out"):
        bridge.connect(timeout_s=1.0)


@pytest.mark.parametrize("signed", [False, True], ids=["allow-unsigned", "signed"])
def test_cli_run_against_fake_bridge(bundle_copy, server: FakeRosbridgeServer, tmp_path, capsys, signed) -> None:
    import threading

    from robota.edge import cli
    from robota.edge.recorder import read_edge_episode

    if signed:
        pytest.importorskip("cryptography")
        from robota.edge.signing import generate_key_pair, sign_manifest

        generate_key_pair(tmp_path / "release.pem", tmp_path / "release.pub")
        sign_manifest(bundle_copy, tmp_path / "release.pem")
        signature_options = ["--trusted-key", str(tmp_path / "release.pub")]
    else:
        signature_options = ["--allow-unsigned"]
    stop = threading.Event()

    def publish_until_stopped() -> None:
        while not stop.is_set():
            publish_sensors(server)
            stop.wait(0.02)

    publisher = threading.Thread(target=publish_until_stopped, daemon=True)
    publisher.start()
    try:
        argv = ["run", "--bundle", str(bundle_copy), "--ros", server.url, "--rate", "50", *signature_options]
        status = cli.main([*argv, "--max-steps", "40", "--record", str(tmp_path / "log")])
    finally:
        stop.set()
        publisher.join(TIMEOUT_S)

    assert status == 0
    output = capsys.readouterr().out
    assert "ticks" in output
    assert "interventions" in output
    commands = server.ops("publish", ros.ARM_COMMAND_TOPIC)
    assert commands, "the run sent no arm command"
    assert all(len(m["msg"]["data"]) == 6 for m in commands)
    episode = read_edge_episode(tmp_path / "log" / "episode_000000")
    assert episode["action"].shape[1] == 7
    assert len(episode["action"]) >= 1


def test_ros_broken_image_trips_watchdog(server: FakeRosbridgeServer, client: ros.RosBridgeIO) -> None:
    publish_sensors(server)
    wait_until(lambda: client.read_frame().observation is not None, TIMEOUT_S, "a complete observation")
    good_stamp = client.read_frame().stamps_s["camera/wrist"]

    server.publish("/camera/wrist/image/compressed", {"format": "jpeg", "data": base64.b64encode(b"not a jpeg").decode()})
    wait_until(lambda: client._latest["camera/wrist"][0] > good_stamp, TIMEOUT_S, "the broken image")
    frame = client.read_frame()
    assert frame.stamps_s["camera/wrist"] == good_stamp  # so the watchdog measures the camera's age from the good image
    assert frame.observation is not None  # the last good image stays in the observation
