"""The twin behind the software-in-the-loop endpoint: commands in, ROS messages out.

`TwinDriver` owns one environment. It stores the latest joint, gripper and trajectory commands,
turns them into one action per control period, and converts each observation into the ROS 2
messages that `robota.sim.sil` publishes. Its methods are safe to call from two threads: the
server's event loop sets commands while the twin's own thread steps and renders.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Collection
from typing import Any

import numpy as np

from robota.sim import sil_messages as msgs
from robota.sim.registry import make_env
from robota.spec import GRIPPER_NAME, OBS_IMAGES, OBS_PART_POSE, OBS_STATE, OBS_VELOCITY, OBS_WRENCH


@dataclasses.dataclass(frozen=True)
class EpisodeStatus:
    """Progress of the twin's current episode.

    Attributes:
        steps: Control periods stepped since the last reset.
        time_s: Simulated time of the latest observation, counted from the server's start.
        is_success: Whether the task's success criterion is met now.
        terminated: Whether the episode has succeeded at any step since the reset.
        truncated: Whether the step limit passed without success.
        instruction: The episode's language instruction.
    """

    steps: int
    time_s: float
    is_success: bool
    terminated: bool
    truncated: bool
    instruction: str


@dataclasses.dataclass
class _Trajectory:
    times_s: np.ndarray  # (points,) time_from_start
    positions_rad: np.ndarray  # (points, joints)
    start_positions_rad: np.ndarray  # (joints,) the arm command when the trajectory arrived
    start_s: float | None  # simulated start time; None starts it at the next step


class TwinDriver:
    """One twin stepped by commands, reporting ROS 2 messages.

    Call `reset`, `step` and `close` from one thread only, because the renderer's EGL context
    belongs to the thread that first renders. Command methods may be called from any thread.

    Args:
        task: Task name, a key of `robota.sim.TASKS`.
        image_size: Height and width of both camera images in pixels.
        jpeg_quality: JPEG quality of the published images, 1 to 95.
        robot: Arm of the twin.
        domain_randomization: Draw the task's domain randomisation every episode.
    """

    def __init__(
        self,
        task: str,
        image_size: int,
        jpeg_quality: int,
        *,
        robot: str = "ur5e",
        domain_randomization: bool = False,
    ):
        self.env = make_env(
            task,
            robot=robot,
            image_size=(image_size, image_size),
            domain_randomization=domain_randomization,
        )
        unwrapped = self.env.unwrapped
        self.feature_spec = unwrapped.feature_spec
        self.cameras: tuple[str, ...] = tuple(self.feature_spec.camera_names)
        self.joint_names: tuple[str, ...] = tuple(self.feature_spec.robot.joint_names)
        self.period_ns = round(1e9 / self.feature_spec.fps)
        self.jpeg_quality = jpeg_quality
        self._data = unwrapped.data
        self._index = unwrapped.index
        self._finger_dofs = unwrapped.index.finger_dofs

        self._lock = threading.Lock()
        self._arm_command_rad = np.zeros(len(self.joint_names))
        self._gripper_command = 0.0
        self._trajectory: _Trajectory | None = None
        self._episode_start_ns = 0
        self._steps = 0
        self._is_success = False
        self._terminated = False
        self._truncated = False
        self.instruction = ""

    @property
    def time_s(self) -> float:
        """Simulated time of the latest observation; it never goes backwards across resets."""
        return (self._episode_start_ns + self._steps * self.period_ns) / 1e9

    def reset(
        self, seed: int | None, language: str | None, cameras: Collection[str]
    ) -> dict[str, dict[str, Any]]:
        """Start an episode, drop all commands and return its first messages by topic.

        Args:
            seed: Seed of the episode's random draws, or None to continue the twin's generator.
            language: `en` or `de` restricts the instruction to one language; None draws from all.
            cameras: Cameras whose images to render and return.

        Raises:
            UnknownNameError: `language` is not a language of the task's instructions.
        """
        self.env.unwrapped.render_images = bool(cameras)
        options = {"language": language} if language is not None else None
        observation, info = self.env.reset(seed=seed, options=options)

        with self._lock:
            # A reset takes one control period of simulated time, so stamps keep increasing.
            self._episode_start_ns += (self._steps + 1) * self.period_ns
            self._steps = 0
            self._arm_command_rad = observation[OBS_STATE][: len(self.joint_names)].astype(float)
            self._gripper_command = 0.0
            self._trajectory = None
            self._is_success = bool(info["is_success"])
            self._terminated = self._truncated = False
            self.instruction = str(info["instruction"])
        return self._messages(observation, cameras)

    def step(self, cameras: Collection[str]) -> dict[str, dict[str, Any]]:
        """Apply the latest commands for one control period and return the messages by topic.

        The twin keeps stepping after the episode has terminated or been truncated, as a real
        cell keeps running. `status()` reports how the episode ended until the next reset.
        """
        with self._lock:
            arm_target_rad = self._arm_target_for_next_step()
            action = np.r_[arm_target_rad, self._gripper_command].astype(np.float32)

        self.env.unwrapped.render_images = bool(cameras)
        observation, _, terminated, truncated, info = self.env.step(action)

        with self._lock:
            self._steps += 1
            self._is_success = bool(info["is_success"])
            self._terminated = self._terminated or bool(terminated)
            self._truncated = not self._terminated and (self._truncated or bool(truncated))
        return self._messages(observation, cameras)

    def command_positions(self, targets_rad: np.ndarray) -> None:
        """Hold these arm joint targets `(joints,)` in rad; cancels a running trajectory.

        Targets outside the joint limits are clipped by the environment, which also limits how
        far the target moves per control period (the joint velocity limit).
        """
        with self._lock:
            self._arm_command_rad = np.asarray(targets_rad, dtype=float).copy()
            self._trajectory = None

    def command_gripper(self, value: float) -> None:
        """Hold a gripper command in [0, 1]: 0.5 or more closes the gripper.

        Raises:
            BridgeMessageError: `value` lies outside [0, 1].
        """
        if not 0.0 <= value <= 1.0:
            raise msgs.BridgeMessageError(
                f"{msgs.GRIPPER_COMMAND_TOPIC} takes one value in [0, 1] (0 open, 1 closed), "
                f"got {value}"
            )
        with self._lock:
            self._gripper_command = float(value)

    def command_trajectory(
        self, times_s: np.ndarray, positions_rad: np.ndarray, start_s: float | None
    ) -> None:
        """Follow joint positions `(points, joints)` reached `times_s` `(points,)` after the start.

        The twin samples the trajectory at the end of each control period, interpolating
        linearly between points and from the arm command held when it arrived. With `start_s`
        None it starts at the next step. After the last point the arm holds that point. An
        empty trajectory cancels the running one and holds the current command.
        """
        with self._lock:
            if len(times_s) == 0:
                self._trajectory = None
                return
            self._trajectory = _Trajectory(
                times_s=np.asarray(times_s, dtype=float),
                positions_rad=np.asarray(positions_rad, dtype=float),
                start_positions_rad=self._arm_command_rad.copy(),
                start_s=start_s,
            )

    def status(self) -> EpisodeStatus:
        """Return the current episode's step count, success and how it ended."""
        with self._lock:
            return EpisodeStatus(
                steps=self._steps,
                time_s=self.time_s,
                is_success=self._is_success,
                terminated=self._terminated,
                truncated=self._truncated,
                instruction=self.instruction,
            )

    def close(self) -> None:
        """Close the environment and its renderer."""
        self.env.close()

    def _arm_target_for_next_step(self) -> np.ndarray:
        trajectory = self._trajectory
        if trajectory is None:
            return self._arm_command_rad
        if trajectory.start_s is None:
            trajectory.start_s = self.time_s
        elapsed_s = self.time_s + self.period_ns / 1e9 - trajectory.start_s

        if elapsed_s >= trajectory.times_s[-1]:
            self._arm_command_rad = trajectory.positions_rad[-1].copy()
            self._trajectory = None
            return self._arm_command_rad
        if elapsed_s <= 0:
            return trajectory.start_positions_rad

        times_s = np.r_[0.0, trajectory.times_s]  # (points + 1,)
        positions = np.vstack([trajectory.start_positions_rad, trajectory.positions_rad])
        return np.array(
            [np.interp(elapsed_s, times_s, positions[:, joint]) for joint in range(positions.shape[1])]
        )

    def _messages(
        self, observation: dict[str, Any], cameras: Collection[str]
    ) -> dict[str, dict[str, Any]]:
        time_s = self.time_s
        features = self.feature_spec.features
        data, index = self._data, self._index

        # Velocity and effort: the six arm joints, then the gripper's opening rate (m/s) and
        # the force of its actuator (N). Arm efforts include the gravity compensation that
        # the actuators carry.
        gripper_velocity = float(data.qvel[self._finger_dofs].sum())
        velocity = np.r_[observation[OBS_VELOCITY], gripper_velocity]
        effort = np.r_[
            data.qfrc_actuator[index.arm_qvel], data.actuator_force[index.gripper_actuator]
        ]
        messages = {
            msgs.JOINT_STATES_TOPIC: msgs.joint_state_message(
                time_s, (*self.joint_names, GRIPPER_NAME), observation[OBS_STATE], velocity, effort
            ),
            msgs.WRENCH_TOPIC: msgs.wrench_message(
                time_s, features[OBS_WRENCH].frame or "", observation[OBS_WRENCH]
            ),
            msgs.PART_POSE_TOPIC: msgs.pose_2d_message(observation[OBS_PART_POSE]),
        }
        for camera in cameras:
            jpeg = msgs.encode_jpeg(observation[OBS_IMAGES + camera], self.jpeg_quality)
            messages[msgs.image_topic(camera)] = msgs.compressed_image_message(
                time_s, features[OBS_IMAGES + camera].frame or camera, jpeg
            )
        return messages
