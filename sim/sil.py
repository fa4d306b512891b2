"""Software in the loop: a twin served as a ROS 2 robot over the rosbridge v2 protocol.

`SilServer` runs a websocket server (one JSON object per text frame, `op` selects the handler)
that looks to a rosbridge client such as roslibpy like a ROS 2 robot:

| topic or service | type | direction |
|---|---|---|
| `/joint_states` | sensor_msgs/msg/JointState | published each control period |
| `/wrench` | geometry_msgs/msg/WrenchStamped | published each control period |
| `/camera/<camera>/image/compressed` | sensor_msgs/msg/CompressedImage | published each control period |
| `/part_pose` | geometry_msgs/msg/Pose2D | published each control period |
| `/task` | std_msgs/msg/String | published at 1 Hz, on subscribing and after a reset |
| `/forward_position_controller/commands` | std_msgs/msg/Float64MultiArray | command |
| `/gripper_controller/commands` | std_msgs/msg/Float64MultiArray | command |
| `/joint_trajectory_controller/joint_trajectory` | trajectory_msgs/msg/JointTrajectory | command |
| `/robota/reset`, `/robota/step`, `/robota/status` | service | call |

In `realtime` mode the twin steps itself at the control rate. In `lockstep` mode it steps once
per `/robota/step` call, and that step's messages reach the caller before the response. The
twin lives in the server's process, on one thread of its own, so rendering, which is created on
the first render, stays on that thread. `docs/sil.md` describes every field.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import itertools
import json
import logging
import signal
import time
from collections.abc import Callable
from typing import Any, TypeVar

from robota.errors import RobotaError, check_choice
from robota.sim import sil_messages as msgs
from robota.sim.twin import check_image_size
from robota.sim.registry import TASKS
from robota.sim.robots import ROBOTS
from robota.sim.sil_connection import Connection, OutboxFullError, Subscription
from robota.sim.sil_twin import TwinDriver

# sil_connection has raised MissingExtraError already if websockets is missing.
from websockets.asyncio.server import Server, ServerConnection, serve  # noqa: E402

logger = logging.getLogger(__name__)

MODES = ("realtime", "lockstep")
TASK_PERIOD_S = 1.0
# Request errors logged per client at warning level; later ones are logged at debug level.
LOGGED_ERRORS_PER_CLIENT = 10

_T = TypeVar("_T")


@dataclasses.dataclass(frozen=True)
class SilConfig:
    """Settings of a software-in-the-loop server.

    Attributes:
        task: Task name, a key of `robota.sim.TASKS`.
        host: Address to listen on. The default accepts local clients only.
        port: TCP port to listen on; 0 lets the system pick a free one.
        mode: `realtime` steps at the control rate; `lockstep` steps on `/robota/step` calls.
        image_size: Height and width of the camera images in pixels.
        jpeg_quality: JPEG quality of the published images, 1 to 95.
        seed: Seed of the first episode, or None for an unseeded one.
        robot: Arm of the twin, `ur5e` or `panda`.
        domain_randomization: Draw the task's domain randomisation every episode.
    """

    task: str = "pick-place"
    host: str = "127.0.0.1"
    port: int = 9090
    mode: str = "realtime"
    image_size: int = 96
    jpeg_quality: int = 90
    seed: int | None = 0
    robot: str = "ur5e"
    domain_randomization: bool = False

    def __post_init__(self) -> None:
        check_choice("task", self.task, TASKS)
        check_choice("robot", self.robot, ROBOTS)
        check_choice("mode", self.mode, MODES)
        check_image_size((self.image_size, self.image_size))
        if not 0 <= self.port <= 65535:
            raise RobotaError(f"port must be in 0..65535 (0 picks a free port), got {self.port}")
        if not 1 <= self.jpeg_quality <= 95:
            raise RobotaError(f"jpeg_quality must be in 1..95, got {self.jpeg_quality}")
        if self.seed is not None and self.seed < 0:
            raise RobotaError(f"seed must be a non-negative integer or None, got {self.seed}")


class SilServer:
    """A twin behind a rosbridge v2 websocket endpoint.

    Use `await start()`, then `await close()`; `run_server` does both around a signal wait.

    Args:
        config: The server's settings.
    """

    def __init__(self, config: SilConfig):
        self.config = config
        self.driver: TwinDriver | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="robota-twin")
        self._twin_lock = asyncio.Lock()
        self._connections: set[Connection] = set()
        self._connection_ids = itertools.count(1)
        self._server: Server | None = None
        self._background: list[asyncio.Task] = []
        self._topics: dict[str, str] = {}
        self._ops: dict[str, Callable[[Connection, dict[str, Any]], Any]] = {
            "subscribe": self._op_subscribe,
            "unsubscribe": self._op_unsubscribe,
            "advertise": self._op_advertise,
            "unadvertise": self._op_unadvertise,
            "publish": self._op_publish,
            "call_service": self._op_call_service,
            "set_level": self._op_set_level,
        }
        self._overruns = 0

    @property
    def port(self) -> int:
        """The port the server listens on, once started."""
        if self._server is None:
            raise RobotaError("the SIL server is not started; call `await server.start()` first")
        return self._server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        """Create the twin, reset it with `config.seed` and start listening."""
        config = self.config
        msgs.require_jpeg_encoder()
        make_driver = functools.partial(
            TwinDriver,
            config.task,
            config.image_size,
            config.jpeg_quality,
            robot=config.robot,
            domain_randomization=config.domain_randomization,
        )
        self.driver = await self._in_twin(make_driver)
        self._topics = msgs.published_topics(self.driver.cameras)
        await self._reset(config.seed, None)

        # A trajectory travels in one message, so frames may reach 16 MiB (10,000 points fit).
        try:
            self._server = await serve(
                self._serve_connection, config.host, config.port, max_size=16 * 2**20
            )
        except OSError as error:
            raise RobotaError(
                f"cannot listen on {config.host}:{config.port} ({error}); pass another --port, "
                "or 0 to let the system pick a free one"
            ) from None
        if config.mode == "realtime":
            self._background.append(asyncio.create_task(self._run_realtime()))
        self._background.append(asyncio.create_task(self._publish_task_periodically()))
        logger.info(
            "serving task %s on ws://%s:%d in %s mode (%d Hz, %d px images)",
            config.task,
            config.host,
            self.port,
            config.mode,
            self.driver.feature_spec.fps,
            config.image_size,
        )

    async def close(self) -> None:
        """Stop stepping, close every connection and the twin; safe after a failed `start`."""
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self.driver is not None:
            async with self._twin_lock:
                await self._in_twin(self.driver.close)
        self._executor.shutdown(wait=True)
        logger.info("SIL server stopped")

    # Stepping and publishing.

    async def _in_twin(self, function: Callable[..., _T], *args: Any) -> _T:
        """Run `function` on the twin's thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def _reset(self, seed: int | None, language: str | None) -> None:
        async with self._twin_lock:
            messages = await self._in_twin(self.driver.reset, seed, language, self._due_cameras())
            self._publish(messages)
            self._publish({msgs.TASK_TOPIC: msgs.string_message(self.driver.instruction)})

    async def _step(self) -> None:
        async with self._twin_lock:
            messages = await self._in_twin(self.driver.step, self._due_cameras())
            self._publish(messages)

    def _due_cameras(self) -> list[str]:
        """Cameras whose image some client would receive now; only these are rendered."""
        now_s = time.monotonic()
        return [
            camera
            for camera in self.driver.cameras
            if any(c.wants(msgs.image_topic(camera), now_s) for c in self._connections)
        ]

    def _publish(self, messages: dict[str, dict[str, Any]], *, to: Connection | None = None) -> None:
        """Queue each message for every client whose subscription is due, encoding it once.

        With `to`, queue them for that client only, bypassing the throttle.
        """
        now_s = time.monotonic()
        force = to is not None
        connections = [to] if force else list(self._connections)
        for topic, message in messages.items():
            text = None
            for connection in connections:
                if not (force or connection.wants(topic, now_s)):
                    continue
                if text is None:
                    operation = {"op": "publish", "topic": topic, "msg": message}
                    text = json.dumps(operation, ensure_ascii=False, separators=(",", ":"))
                connection.offer(topic, text, now_s, force=force)

    async def _run_realtime(self) -> None:
        period_s = 1.0 / self.driver.feature_spec.fps
        loop = asyncio.get_running_loop()
        next_s = loop.time()
        while True:
            try:
                await self._step()
            except Exception:
                logger.exception("twin step failed; stepping on at the next period")
            next_s += period_s
            delay_s = next_s - loop.time()
            if delay_s < 0:
                self._overruns += 1
                if self._overruns in (1, 10) or self._overruns % 100 == 0:
                    logger.warning(
                        "twin step overran its %.0f ms period by %.1f ms (%d overruns so far)",
                        period_s * 1000,
                        -delay_s * 1000,
                        self._overruns,
                    )
                next_s = loop.time()
                delay_s = 0.0
            await asyncio.sleep(delay_s)

    async def _publish_task_periodically(self) -> None:
        while True:
            await asyncio.sleep(TASK_PERIOD_S)
            self._publish({msgs.TASK_TOPIC: msgs.string_message(self.driver.instruction)})

    # Connections and operations.

    async def _serve_connection(self, websocket: ServerConnection) -> None:
        connection = Connection(websocket, next(self._connection_ids))
        self._connections.add(connection)
        sender = asyncio.create_task(connection.run_sender())
        logger.info("client %d connected from %s", connection.id, websocket.remote_address)
        try:
            async for frame in websocket:
                await self._handle_frame(connection, frame)
        except OutboxFullError as error:
            logger.warning("client %d reads too slowly (%s); closing it", connection.id, error)
            await websocket.close(code=1008, reason="too many unread responses")
        finally:
            self._connections.discard(connection)
            sender.cancel()
            logger.info(
                "client %d disconnected (%d request errors, %d messages dropped by queue_length)",
                connection.id,
                connection.errors,
                connection.outbox.dropped,
            )

    async def _handle_frame(self, connection: Connection, frame: str | bytes) -> None:
        request_id = None
        try:
            request = _decode_request(frame)
            request_id = request.get("id")
            handler = self._ops.get(request["op"])
            if handler is None:
                raise msgs.BridgeMessageError(
                    f"unknown op {request['op']!r}; this server handles {', '.join(self._ops)}"
                )
            result = handler(connection, request)
            if asyncio.iscoroutine(result):
                await result
        except msgs.BridgeMessageError as error:
            self._report_request_error(connection, request_id, str(error))
        except OutboxFullError:
            raise
        except Exception as error:
            logger.exception("client %d: request %r failed", connection.id, request_id)
            self._report_request_error(connection, request_id, f"internal error: {error!r}")

    def _report_request_error(self, connection: Connection, request_id: Any, message: str) -> None:
        connection.errors += 1
        level = logging.WARNING if connection.errors <= LOGGED_ERRORS_PER_CLIENT else logging.DEBUG
        logger.log(level, "client %d, request %r: %s", connection.id, request_id, message)
        connection.status("error", message, request_id)

    def _op_subscribe(self, connection: Connection, request: dict[str, Any]) -> None:
        topic = self._checked_topic(request, self._topics, "published")
        compression = request.get("compression")
        if compression not in (None, "none"):
            raise msgs.BridgeMessageError(
                f"compression {compression!r} is not supported; subscribe with compression "
                "'none' and receive JSON text frames"
            )
        throttle_ms = _non_negative_int(request, "throttle_rate")
        queue_length = _non_negative_int(request, "queue_length")
        subscription = Subscription(throttle_s=throttle_ms / 1000, queue_length=queue_length)
        connection.subscribe(topic, request.get("id"), subscription)
        logger.debug("client %d subscribed to %s (%s)", connection.id, topic, subscription)
        if topic == msgs.TASK_TOPIC:
            self._publish({topic: msgs.string_message(self.driver.instruction)}, to=connection)

    def _op_unsubscribe(self, connection: Connection, request: dict[str, Any]) -> None:
        topic = _required_str(request, "topic")
        if not connection.unsubscribe(topic, request.get("id")):
            connection.status("warning", f"no subscription to unsubscribe on {topic}", request.get("id"))

    def _op_advertise(self, connection: Connection, request: dict[str, Any]) -> None:
        topic = self._checked_topic(request, msgs.COMMAND_TOPICS, "command")
        connection.advertised[topic] = msgs.COMMAND_TOPICS[topic]

    def _op_unadvertise(self, connection: Connection, request: dict[str, Any]) -> None:
        topic = _required_str(request, "topic")
        if connection.advertised.pop(topic, None) is None:
            connection.status("warning", f"{topic} was not advertised", request.get("id"))

    def _op_publish(self, connection: Connection, request: dict[str, Any]) -> None:
        topic = self._checked_topic(request, msgs.COMMAND_TOPICS, "command")
        message = request.get("msg")
        driver = self.driver
        if topic == msgs.POSITION_COMMAND_TOPIC:
            driver.command_positions(msgs.parse_float_array(message, topic, len(driver.joint_names)))
        elif topic == msgs.GRIPPER_COMMAND_TOPIC:
            driver.command_gripper(float(msgs.parse_float_array(message, topic, 1)[0]))
        else:
            driver.command_trajectory(*msgs.parse_joint_trajectory(message, driver.joint_names))

    def _op_set_level(self, connection: Connection, request: dict[str, Any]) -> None:
        connection.set_status_level(request.get("level"))

    async def _op_call_service(self, connection: Connection, request: dict[str, Any]) -> None:
        service = _required_str(request, "service")
        response: dict[str, Any] = {"op": "service_response", "service": service}
        if "id" in request:
            response["id"] = request["id"]
        try:
            handler = {
                msgs.RESET_SERVICE: self._reset_service,
                msgs.STEP_SERVICE: self._step_service,
                msgs.STATUS_SERVICE: self._status_service,
            }.get(service)
            if handler is None:
                raise msgs.BridgeMessageError(
                    f"unknown service {service!r}; this server offers {', '.join(msgs.SERVICES)}"
                )
            args = request.get("args") or {}
            if not isinstance(args, dict):
                raise msgs.BridgeMessageError(f"{service} args must be an object, got {args!r}")
            values = await handler(args)
        except Exception as error:
            # A failed call gets a response, as in rosbridge, so a blocking client returns at
            # once. The caller of this method also sends a status message and logs the error.
            message = str(error) if isinstance(error, RobotaError) else f"internal error: {error!r}"
            connection.send({**response, "values": message, "result": False})
            if isinstance(error, RobotaError):
                raise msgs.BridgeMessageError(message) from None
            raise
        connection.send({**response, "values": values, "result": True})

    async def _reset_service(self, args: dict[str, Any]) -> dict[str, Any]:
        _check_keys(msgs.RESET_SERVICE, args, ("seed", "language"))
        seed = args.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
            raise msgs.BridgeMessageError(f"seed must be a non-negative integer, got {seed!r}")
        language = args.get("language")
        if language is not None and not isinstance(language, str):
            raise msgs.BridgeMessageError(f"language must be a string such as 'en', got {language!r}")

        await self._reset(seed, language)
        seeded = f"with seed {seed}" if seed is not None else "without a seed"
        return {
            "success": True,
            "message": f"reset the {self.config.task} episode {seeded}",
            "instruction": self.driver.instruction,
        }

    async def _step_service(self, args: dict[str, Any]) -> dict[str, Any]:
        _check_keys(msgs.STEP_SERVICE, args, ())
        if self.config.mode != "lockstep":
            values = self._status_values()
            values["success"] = False
            values["message"] = (
                "the twin runs in realtime mode and steps itself; "
                "start it with --mode lockstep to step it by service"
            )
            return values
        await self._step()
        values = self._status_values()
        values["message"] = f"stepped to step {values['steps']}"
        return values

    async def _status_service(self, args: dict[str, Any]) -> dict[str, Any]:
        _check_keys(msgs.STATUS_SERVICE, args, ())
        return self._status_values()

    def _status_values(self) -> dict[str, Any]:
        status = self.driver.status()
        return {
            "success": True,
            "message": "",
            "mode": self.config.mode,
            "steps": status.steps,
            "stamp": msgs.stamp(status.time_s),
            "is_success": status.is_success,
            "terminated": status.terminated,
            "truncated": status.truncated,
            "instruction": status.instruction,
        }

    def _checked_topic(self, request: dict[str, Any], topics: dict[str, str], kind: str) -> str:
        """Return the request's topic if `topics` has it and any given type matches."""
        topic = _required_str(request, "topic")
        if topic not in topics:
            raise msgs.BridgeMessageError(
                f"{topic!r} is not a {kind} topic of this twin; {kind} topics: {', '.join(topics)}"
            )
        message_type = request.get("type")
        if message_type and msgs.canonical_type(str(message_type)) != topics[topic]:
            raise msgs.BridgeMessageError(
                f"{topic} has type {topics[topic]}, but the request names {message_type!r}"
            )
        return topic


def _decode_request(frame: str | bytes) -> dict[str, Any]:
    if isinstance(frame, bytes):
        raise msgs.BridgeMessageError(
            "binary frames are not supported; send each operation as a JSON text frame"
        )
    try:
        request = json.loads(frame)
    except json.JSONDecodeError as error:
        raise msgs.BridgeMessageError(f"invalid JSON in request: {error}") from None
    if not isinstance(request, dict) or not isinstance(request.get("op"), str):
        raise msgs.BridgeMessageError(
            f"a request must be a JSON object with an 'op' string, got {frame[:200]!r}"
        )
    return request


def _required_str(request: dict[str, Any], key: str) -> str:
    value = request.get(key)
    if not isinstance(value, str) or not value:
        raise msgs.BridgeMessageError(f"{request['op']} needs a {key!r} string, got {value!r}")
    return value


def _non_negative_int(request: dict[str, Any], key: str) -> int:
    value = request.get(key) or 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise msgs.BridgeMessageError(f"{key} must be a non-negative integer, got {value!r}")
    return value


def _check_keys(service: str, args: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(args) - set(allowed))
    if unknown:
        expected = ", ".join(allowed) if allowed else "none"
        raise msgs.BridgeMessageError(
            f"{service} got unknown argument(s) {', '.join(unknown)}; expected: {expected}"
        )


def run_server(config: SilConfig) -> None:
    """Serve the twin until SIGINT or SIGTERM, then close it."""
    asyncio.run(_serve_until_signal(config))


async def _serve_until_signal(config: SilConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, stop.set)
    server = SilServer(config)
    try:
        await server.start()
        await stop.wait()
        logger.info("stop signal received; closing the SIL server")
    finally:
        await server.close()
