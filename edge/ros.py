"""ROS 2 through rosbridge: sensor topics in, joint and gripper commands out, with roslibpy.

The topic names and types below are the interface between `robota-edge run` and a robot (or
`robota sim serve`, the twin's rosbridge endpoint). Images arrive as sensor_msgs/CompressedImage
(JPEG or PNG), decoded with Pillow, because rosbridge through roslibpy carries JSON text frames
only and a raw image would cost four times the bytes in base64. sensor_msgs/Image with `rgb8`
encoding on the same topic name without `/compressed` is read too (`camera_transport="raw"`),
and needs no Pillow.

Messages are stamped with `time.monotonic()` when they arrive, not with their header stamps, so
the watchdog measures the age on the edge computer's own clock even when the sender runs on
simulated time.

roslibpy queues messages published while the connection is down and sends them after it
reconnects. Stale joint targets must never reach the arm, so `send_command` drops commands while
disconnected, and a command queued just before a disconnect is dropped when the connection that
it was queued on is gone. Both are counted in `RosBridgeIO.commands_dropped`.
"""

from __future__ import annotations

import base64
import io
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

import numpy as np

from robota.edge.executor import SensorFrame
from robota.errors import MissingExtraError, RobotaError
from robota.spec import OBS_IMAGES, OBS_PART_POSE, OBS_STATE, OBS_VELOCITY, OBS_WRENCH, TASK, Spec

logger = logging.getLogger(__name__)

# Topics and message types of the ROS interface. The joint states carry the spec's arm joints
# and the gripper opening in metres as the joint named `gripper`.
JOINT_STATES_TOPIC = "/joint_states"
JOINT_STATES_TYPE = "sensor_msgs/msg/JointState"
WRENCH_TOPIC = "/wrench"
WRENCH_TYPE = "geometry_msgs/msg/WrenchStamped"
CAMERA_TOPIC = "/camera/{camera}/image"  # plus "/compressed" for CompressedImage
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
RAW_IMAGE_TYPE = "sensor_msgs/msg/Image"
PART_POSE_TOPIC = "/part_pose"
PART_POSE_TYPE = "geometry_msgs/msg/Pose2D"
TASK_TOPIC = "/task"
TASK_TYPE = "std_msgs/msg/String"
ARM_COMMAND_TOPIC = "/forward_position_controller/commands"
GRIPPER_COMMAND_TOPIC = "/gripper_controller/commands"
COMMAND_TYPE = "std_msgs/msg/Float64MultiArray"
# Accepted by the twin's endpoint as an alternative to the arm command topic; not sent here.
TRAJECTORY_TOPIC = "/joint_trajectory_controller/joint_trajectory"
TRAJECTORY_TYPE = "trajectory_msgs/msg/JointTrajectory"
RESET_SERVICE = "/robota/reset"
STEP_SERVICE = "/robota/step"
STATUS_SERVICE = "/robota/status"
TRIGGER_TYPE = "std_srvs/srv/Trigger"
GRIPPER_JOINT = "gripper"

# Source names of the watchdog, as in `SensorFrame.stamps_s`.
JOINT_STATES_SOURCE = "joint_states"
WRENCH_SOURCE = "wrench"
PART_POSE_SOURCE = "part_pose"
CAMERA_SOURCE = "camera/{camera}"

# Seconds to wait for the first connection and for a service response.
CONNECT_TIMEOUT_S = 10.0
SERVICE_TIMEOUT_S = 10.0


def parse_ros_url(url: str) -> tuple[str, int]:
    """Split `ws://HOST:PORT` into host and port, raising `RobotaError` on anything else."""
    parsed = urlparse(url)
    if parsed.scheme not in ("ws", "wss") or not parsed.hostname or parsed.port is None:
        raise RobotaError(f"invalid rosbridge URL {url!r}; expected ws://HOST:PORT, for example ws://127.0.0.1:9090")
    return parsed.hostname, parsed.port


def _import_roslibpy():
    try:
        import roslibpy
    except ImportError:
        raise MissingExtraError("roslibpy", "edge") from None
    return roslibpy


def decode_image(message: Mapping[str, Any], shape: tuple[int, int, int]) -> np.ndarray:
    """Decode a CompressedImage (JPEG, PNG) or an `rgb8` Image message to uint8 `(height, width, 3)`.

    An image of another size is resized to `shape` with Pillow's bilinear filter.

    Raises:
        RobotaError: The encoding is not supported or the data does not decode.
        MissingExtraError: A compressed image needs Pillow, which is not installed.
    """
    data = base64.b64decode(message["data"]) if isinstance(message["data"], str) else bytes(message["data"])
    if "encoding" in message:
        if message["encoding"] not in ("rgb8", "bgr8"):
            raise RobotaError(f"image encoding {message['encoding']!r} is not supported; publish rgb8")
        height, width, step = int(message["height"]), int(message["width"]), int(message["step"])
        rows = np.frombuffer(data, dtype=np.uint8).reshape(height, step)
        image = rows[:, : width * 3].reshape(height, width, 3)  # (height, width, 3)
        if message["encoding"] == "bgr8":
            image = image[..., ::-1]
        if image.shape == tuple(shape):
            return np.ascontiguousarray(image)
        return _resize(image, shape)

    try:
        from PIL import Image
    except ImportError:
        raise MissingExtraError("Pillow", "edge") from None
    try:
        with Image.open(io.BytesIO(data)) as decoded:
            rgb = decoded.convert("RGB")
            if rgb.size != (shape[1], shape[0]):
                rgb = rgb.resize((shape[1], shape[0]), Image.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8)
    except OSError as error:
        raise RobotaError(f"compressed image ({message.get('format')!r}) failed to decode: {error}") from None


def _resize(image: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:
        raise MissingExtraError("Pillow", "edge") from None
    resized = Image.fromarray(image).resize((shape[1], shape[0]), Image.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


def float_array_message(values: np.ndarray) -> dict[str, Any]:
    """Build a std_msgs/Float64MultiArray message with an empty layout, as ros2_control's forward
    controllers take it."""
    return {"layout": {"dim": [], "data_offset": 0}, "data": [float(v) for v in values]}


class RosBridgeIO:
    """Sensor input and command output of the executor over a rosbridge v2 connection.

    Args:
        url: The rosbridge websocket, `ws://HOST:PORT`.
        spec: Feature spec of the bundle: which cameras, joints and features to read.
        task: Instruction to use; `None` reads it from `/task`.
        camera_transport: `compressed` (CompressedImage on `/camera/<name>/image/compressed`)
            or `raw` (rgb8 Image on `/camera/<name>/image`).
        transport: roslibpy transport (`twisted` or `asyncio`); `None` uses roslibpy's default.
    """

    def __init__(
        self,
        url: str,
        spec: Spec,
        *,
        task: str | None = None,
        camera_transport: str = "compressed",
        transport: str | None = None,
    ):
        if camera_transport not in ("compressed", "raw"):
            raise ValueError(f"camera_transport must be 'compressed' or 'raw', got {camera_transport!r}")
        self.url = url
        self.host, self.port = parse_ros_url(url)
        self.spec = spec
        self.task = task
        self.camera_transport = camera_transport
        self.transport = transport
        self.commands_sent = 0
        self.commands_dropped = 0
        self.reconnects = 0
        self._lock = threading.Lock()
        self._latest: dict[str, tuple[float, Any]] = {}
        self._images: dict[str, tuple[float, np.ndarray]] = {}
        self._failed_stamps: dict[str, float] = {}
        self._previous_joints: tuple[float, np.ndarray] | None = None
        self._velocity: np.ndarray | None = None
        self._connected = False
        self._closing = False
        self._epoch = 0
        self._ros = None
        self._topics: list = []
        self._arm_topic = None
        self._gripper_topic = None

    @property
    def connected(self) -> bool:
        return self._connected

    def camera_topic(self, camera: str) -> str:
        topic = CAMERA_TOPIC.format(camera=camera)
        return f"{topic}/compressed" if self.camera_transport == "compressed" else topic

    def connect(self, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        """Connect, subscribe to the sensor topics and advertise the command topics.

        Raises:
            RobotaError: No connection within `timeout_s`.
        """
        roslibpy = _import_roslibpy()
        self._ros = roslibpy.Ros(self.host, self.port, transport=self.transport)
        self._ros.on("close", self._on_close)
        self._ros.on("ready", self._on_ready)
        try:
            self._ros.run(timeout=timeout_s)
        except Exception as error:  # roslibpy raises its own RosTimeoutError or socket errors
            raise RobotaError(
                f"connecting to rosbridge at {self.url} timed out after {timeout_s:.0f} s "
                f"({error}); check that the bridge runs and the URL is right"
            ) from None
        self._connected = True
        logger.info("connected to rosbridge at %s", self.url)
        self._subscribe(roslibpy)
        self._arm_topic = roslibpy.Topic(self._ros, ARM_COMMAND_TOPIC, COMMAND_TYPE)
        self._gripper_topic = roslibpy.Topic(self._ros, GRIPPER_COMMAND_TOPIC, COMMAND_TYPE)
        self._arm_topic.advertise()
        self._gripper_topic.advertise()

    def _subscribe(self, roslibpy) -> None:
        def topic(name: str, message_type: str, callback, **options) -> None:
            subscription = roslibpy.Topic(self._ros, name, message_type, **options)
            subscription.subscribe(callback)
            self._topics.append(subscription)

        topic(JOINT_STATES_TOPIC, JOINT_STATES_TYPE, self._on_joint_states, queue_length=1)
        if OBS_WRENCH in self.spec.features:
            topic(WRENCH_TOPIC, WRENCH_TYPE, self._store(WRENCH_SOURCE), queue_length=1)
        if OBS_PART_POSE in self.spec.features:
            topic(PART_POSE_TOPIC, PART_POSE_TYPE, self._store(PART_POSE_SOURCE), queue_length=1)
        if self.task is None:
            topic(TASK_TOPIC, TASK_TYPE, self._store(TASK), queue_length=1)
        message_type = COMPRESSED_IMAGE_TYPE if self.camera_transport == "compressed" else RAW_IMAGE_TYPE
        for camera in self.spec.camera_names:
            source = CAMERA_SOURCE.format(camera=camera)
            topic(self.camera_topic(camera), message_type, self._store(source), queue_length=1)

    def close(self) -> None:
        """Unsubscribe and close the connection; safe to call twice."""
        if self._ros is None:
            return
        for subscription in self._topics:
            subscription.unsubscribe()
        self._topics.clear()
        self._closing = True
        try:
            self._ros.close()
        except Exception as error:  # a dead connection may fail to close cleanly
            logger.warning("closing the rosbridge connection to %s failed: %s", self.url, error)
        self._ros = None

    def _on_close(self, *_args) -> None:
        with self._lock:
            self._connected = False
            self._epoch += 1
        if self._closing:
            logger.info("rosbridge connection to %s closed", self.url)
            return
        logger.warning("rosbridge connection to %s lost; commands are dropped until it is back", self.url)

    def _on_ready(self, *_args) -> None:
        with self._lock:
            reconnected = self._epoch > 0 and not self._connected
            self._connected = True
        if reconnected:
            self.reconnects += 1
            logger.warning("rosbridge connection to %s is back (reconnect %d)", self.url, self.reconnects)

    def _store(self, source: str):
        def callback(message: Mapping[str, Any]) -> None:
            with self._lock:
                self._latest[source] = (time.monotonic(), message)

        return callback

    def _on_joint_states(self, message: Mapping[str, Any]) -> None:
        stamp = time.monotonic()
        names = list(message.get("name", []))
        positions = list(message.get("position", []))
        velocities = list(message.get("velocity", []))
        expected_names = [*self.spec.robot.joint_names, GRIPPER_JOINT]
        missing = [n for n in expected_names if n not in names]
        if missing or len(positions) != len(names):
            logger.warning("ignoring a joint state without joints %s (names %s)", missing, names)
            return
        order = [names.index(n) for n in expected_names]
        joints = np.array([positions[i] for i in order], dtype=np.float64)  # (joints + gripper,)
        with self._lock:
            if len(velocities) == len(names):
                self._velocity = np.array([velocities[i] for i in order[:-1]])
            elif self._previous_joints is not None and stamp > self._previous_joints[0]:
                # No velocities published: differentiate the positions on the arrival clock.
                previous_stamp, previous = self._previous_joints
                self._velocity = (joints[:-1] - previous[:-1]) / (stamp - previous_stamp)
            self._previous_joints = (stamp, joints)
            self._latest[JOINT_STATES_SOURCE] = (stamp, joints)

    def read_frame(self) -> SensorFrame:
        """Assemble the latest messages into a `SensorFrame`.

        Its observation is `None` until every feature of the spec arrived once. A camera's stamp
        is that of its last image that decoded, so a camera that sends only broken images trips
        the watchdog.
        """
        with self._lock:
            latest = dict(self._latest)
            velocity = None if self._velocity is None else self._velocity.copy()
        images = {camera: self._image(camera, latest) for camera in self.spec.camera_names}

        stamps: dict[str, float | None] = {JOINT_STATES_SOURCE: None}
        if OBS_WRENCH in self.spec.features:
            stamps[WRENCH_SOURCE] = None
        for source in stamps:
            if source in latest:
                stamps[source] = latest[source][0]
        for camera in self.spec.camera_names:
            decoded = self._images.get(CAMERA_SOURCE.format(camera=camera))
            stamps[CAMERA_SOURCE.format(camera=camera)] = None if decoded is None else decoded[0]
        return SensorFrame(self._observation(latest, velocity, images), stamps)

    def _observation(
        self, latest: dict[str, tuple[float, Any]], velocity, images: dict[str, np.ndarray | None]
    ) -> dict[str, Any] | None:
        if JOINT_STATES_SOURCE not in latest:
            return None
        observation: dict[str, Any] = {OBS_STATE: latest[JOINT_STATES_SOURCE][1].astype(np.float32)}
        if OBS_VELOCITY in self.spec.features:
            if velocity is None:
                return None
            observation[OBS_VELOCITY] = velocity.astype(np.float32)
        if OBS_WRENCH in self.spec.features:
            if WRENCH_SOURCE not in latest:
                return None
            wrench = latest[WRENCH_SOURCE][1]["wrench"]
            force, torque = wrench["force"], wrench["torque"]
            values = [force["x"], force["y"], force["z"], torque["x"], torque["y"], torque["z"]]
            observation[OBS_WRENCH] = np.array(values, dtype=np.float32)
        if OBS_PART_POSE in self.spec.features:
            if PART_POSE_SOURCE not in latest:
                return None
            pose = latest[PART_POSE_SOURCE][1]
            observation[OBS_PART_POSE] = np.array([pose["x"], pose["y"], pose["theta"]], dtype=np.float32)
        task = self.task if self.task is not None else latest.get(TASK, (0.0, {}))[1].get("data")
        if task is None:
            return None
        observation[TASK] = task
        for camera, image in images.items():
            if image is None:
                return None
            observation[OBS_IMAGES + camera] = image
        return observation

    def _image(self, camera: str, latest: dict[str, tuple[float, Any]]) -> np.ndarray | None:
        """Return the camera's last image that decoded, decoding a new message once.

        A message that fails to decode is logged and skipped, and the previous image stays.
        """
        source = CAMERA_SOURCE.format(camera=camera)
        cached = self._images.get(source)
        if source not in latest:
            return None
        stamp, message = latest[source]
        if self._failed_stamps.get(source) == stamp or (cached is not None and cached[0] == stamp):
            return None if cached is None else cached[1]
        try:
            image = decode_image(message, self.spec.features[OBS_IMAGES + camera].shape)
        except MissingExtraError:
            raise
        except (RobotaError, KeyError, ValueError) as error:
            self._failed_stamps[source] = stamp
            logger.warning("skipping an image on %s that failed to decode: %s", self.camera_topic(camera), error)
            return None if cached is None else cached[1]
        self._images[source] = (stamp, image)
        return image

    def send_command(self, command: np.ndarray) -> bool:
        """Publish joint targets and the gripper command; drop them while disconnected.

        Args:
            command: `(action_dim,)`: joint positions in rad, then the gripper command in [0, 1].

        Returns:
            Whether the command was handed to the connection.
        """
        num_joints = self.spec.robot.num_joints
        arm = float_array_message(command[:num_joints])
        gripper = float_array_message(command[num_joints:])
        with self._lock:
            connected, epoch = self._connected, self._epoch
        if not connected or self._ros is None:
            self.commands_dropped += 1
            return False
        self._send_in_epoch(ARM_COMMAND_TOPIC, arm, epoch)
        self._send_in_epoch(GRIPPER_COMMAND_TOPIC, gripper, epoch)
        self.commands_sent += 1
        return True

    def _send_in_epoch(self, topic: str, message: dict[str, Any], epoch: int) -> None:
        """Publish through the connection of `epoch` only; a later connection drops it."""
        roslibpy = _import_roslibpy()
        frame = roslibpy.Message({"op": "publish", "topic": topic, "msg": message})

        def send(protocol):
            if self._epoch != epoch:
                self.commands_dropped += 1
                logger.debug("dropped a %s command queued before a reconnect", topic)
                return protocol
            protocol.send_ros_message(frame)
            return protocol

        self._ros.factory.on_ready(send)

    def call_service(
        self,
        service: str,
        args: Mapping[str, Any] | None = None,
        timeout_s: float = SERVICE_TIMEOUT_S,
    ) -> dict[str, Any]:
        """Call a service and return its response values.

        Args:
            service: Service name, for example `/robota/status`.
            args: Request fields, for example `{"seed": 3}` for the twin's reset service.
            timeout_s: Time to wait for the response.

        Raises:
            RobotaError: The call failed or timed out.
        """
        roslibpy = _import_roslibpy()
        client = roslibpy.Service(self._ros, service, TRIGGER_TYPE)
        try:
            response = client.call(roslibpy.ServiceRequest(dict(args or {})), timeout=timeout_s)
        except Exception as error:  # roslibpy raises its own error types for both cases
            raise RobotaError(f"service {service} at {self.url} failed: {error}") from None
        return dict(response)

    def call_trigger(
        self,
        service: str,
        timeout_s: float = SERVICE_TIMEOUT_S,
        args: Mapping[str, Any] | None = None,
    ) -> str:
        """Call a std_srvs/Trigger-like service such as `/robota/reset` and return its message.

        Raises:
            RobotaError: The call failed, timed out or returned `success: false`.
        """
        response = self.call_service(service, args, timeout_s)
        if not response.get("success", False):
            raise RobotaError(f"service {service} returned failure: {response.get('message', '')!r}")
        return str(response.get("message", ""))
