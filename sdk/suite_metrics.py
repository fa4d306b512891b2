"""Per-episode safety and quality metrics of a rollout in a MuJoCo twin, and failure videos.

`EpisodeMetrics` wraps the twin directly (inside any observation perturbation), so it records the
true state and the action the policy sent. It samples once per control step, after the step's
physics.
"""

from __future__ import annotations

import io
from typing import Any

import gymnasium
import mujoco
import numpy as np

from robota.spec import OBS_IMAGES

VIDEO_CAMERA = "overhead"
# Failure videos keep every second control step, at most this many frames.
VIDEO_FRAME_STRIDE = 2
VIDEO_MAX_FRAMES = 80


class EpisodeMetrics(gymnasium.Wrapper):
    """Collect contact forces, cell collisions, limit violations, tool path and action jerk.

    The robot is every body under the arm's root body: links, gripper and fingers. The cell is
    every geom fixed to the world (table, floor) plus the bin.

    NOTE: sampling happens once per control step on the last physics step's contacts, so a
    contact shorter than one control period (0.1 s in the pick-place twin) can be missed.

    Args:
        env: The twin, with `model`, `data`, `index` and `feature_spec` on `env.unwrapped`.
        keep_frames: Keep the overhead camera's images for a failure video.
    """

    def __init__(self, env: gymnasium.Env, *, keep_frames: bool = True):
        super().__init__(env)
        unwrapped = env.unwrapped
        model = unwrapped.model
        robot = unwrapped.feature_spec.robot
        self.fps = unwrapped.feature_spec.fps
        self.keep_frames = keep_frames
        self._lower_rad = np.asarray(robot.lower_rad)
        self._upper_rad = np.asarray(robot.upper_rad)
        self._velocity_limit_rad_s = np.asarray(robot.velocity_limit_rad_s)
        self._arm_dof = robot.num_joints

        # Masks over geom ids: body 0 is the world, whose geoms are the table, floor and base.
        arm_root = _arm_root_body(model, unwrapped)
        self._is_robot = model.body_rootid[model.geom_bodyid] == arm_root
        self._is_cell = np.isin(model.geom_bodyid, [0, unwrapped.index.bin_body])
        # The arm's base housing is a world geom the shoulder sits on; that contact is no collision.
        arm_prefix = unwrapped.index.arm_joint_names[0].split("/")[0] + "/"
        for geom in range(model.ngeom):
            if model.geom(geom).name.startswith(arm_prefix):
                self._is_cell[geom] = False
        self._force = np.zeros(6)
        self._start()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        observation, info = self.env.reset(seed=seed, options=options)
        self._start()
        self.randomization = dict(info.get("randomization", {}))
        self._keep_frame(observation)
        return observation, info

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        self._record(np.asarray(action, dtype=np.float64).reshape(-1), bool(info.get("is_success")))
        self._keep_frame(observation)
        return observation, reward, terminated, truncated, info

    def summary(self) -> dict[str, Any]:
        """Return the episode's metrics: one JSON-ready value per name, and the force traces."""
        actions = np.asarray(self._actions)[:, : self._arm_dof] if self._actions else np.zeros((0, 6))
        if len(actions) >= 4:
            jerk = np.diff(actions, n=3, axis=0) * self.fps**3  # (steps - 3, joints), rad/s^3
            rms_jerk = float(np.sqrt(np.mean(jerk**2)))
        else:
            rms_jerk = 0.0
        time_to_success = None if self._success_step is None else self._success_step / self.fps
        return {
            "time_to_success_s": time_to_success,
            "max_contact_force_n": float(max(self._contact_trace_n, default=0.0)),
            "max_wrist_force_n": float(max(self._wrist_trace_n, default=0.0)),
            "cell_collisions": self._collisions,
            "cell_contact_steps": self._collision_steps,
            "joint_limit_violations": self._joint_limit_steps,
            "velocity_limit_violations": self._velocity_limit_steps,
            "tool_path_length_m": float(self._path_length_m),
            "action_jerk_rms_rad_s3": rms_jerk,
            "contact_force_trace_n": [round(v, 3) for v in self._contact_trace_n],
            "wrist_force_trace_n": [round(v, 3) for v in self._wrist_trace_n],
        }

    def frames(self) -> np.ndarray | None:
        """Return the kept camera frames `(frames, height, width, 3)`, or none if not kept."""
        if not self._frames:
            return None
        return np.stack(self._frames)

    def _start(self) -> None:
        self._actions: list[np.ndarray] = []
        self._contact_trace_n: list[float] = []
        self._wrist_trace_n: list[float] = []
        self._frames: list[np.ndarray] = []
        self._collisions = self._collision_steps = 0
        self._joint_limit_steps = self._velocity_limit_steps = 0
        self._touching_cell = False
        self._path_length_m = 0.0
        self._success_step: int | None = None
        self.randomization: dict[str, Any] = {}
        unwrapped = self.env.unwrapped
        self._tool_m = unwrapped.data.site_xpos[unwrapped.index.tcp_site].copy()

    def _record(self, action: np.ndarray, success: bool) -> None:
        unwrapped = self.env.unwrapped
        model, data, index = unwrapped.model, unwrapped.data, unwrapped.index
        previous = self._actions[-1] if self._actions else None
        self._actions.append(action)
        if success and self._success_step is None:
            self._success_step = len(self._actions)

        max_force_n, touching_cell = self._scan_contacts(model, data)
        self._contact_trace_n.append(max_force_n)
        self._wrist_trace_n.append(float(np.linalg.norm(data.sensordata[index.wrench[:3]])))
        if touching_cell:
            self._collision_steps += 1
            self._collisions += not self._touching_cell
        self._touching_cell = touching_cell

        # A violation is a step whose command or measured state leaves the robot's limits. The
        # twin clips commands, so a commanded violation shows a policy that relies on the clip.
        targets = action[: self._arm_dof]
        qpos = data.qpos[index.arm_qpos]
        outside = np.any(targets < self._lower_rad) or np.any(targets > self._upper_rad)
        outside = outside or np.any(qpos < self._lower_rad) or np.any(qpos > self._upper_rad)
        self._joint_limit_steps += bool(outside)
        speed = np.abs(data.qvel[index.arm_qvel])
        too_fast = np.any(speed > self._velocity_limit_rad_s)
        if previous is not None:
            commanded = np.abs(targets - previous[: self._arm_dof]) * self.fps
            too_fast = too_fast or np.any(commanded > self._velocity_limit_rad_s)
        self._velocity_limit_steps += bool(too_fast)

        tool_m = data.site_xpos[index.tcp_site]
        self._path_length_m += float(np.linalg.norm(tool_m - self._tool_m))
        self._tool_m = tool_m.copy()

    def _scan_contacts(self, model: mujoco.MjModel, data: mujoco.MjData) -> tuple[float, bool]:
        max_force_n = 0.0
        touching_cell = False
        for i in range(data.ncon):
            contact = data.contact[i]
            geom1, geom2 = int(contact.geom1), int(contact.geom2)
            robot1, robot2 = self._is_robot[geom1], self._is_robot[geom2]
            if not (robot1 or robot2):
                continue
            mujoco.mj_contactForce(model, data, i, self._force)
            max_force_n = max(max_force_n, float(np.linalg.norm(self._force[:3])))
            if (robot1 and self._is_cell[geom2]) or (robot2 and self._is_cell[geom1]):
                touching_cell = True
        return max_force_n, touching_cell

    def _keep_frame(self, observation: dict[str, Any]) -> None:
        key = OBS_IMAGES + VIDEO_CAMERA
        if not self.keep_frames or key not in observation:
            return
        if len(self._actions) % VIDEO_FRAME_STRIDE or len(self._frames) >= VIDEO_MAX_FRAMES:
            return
        self._frames.append(np.asarray(observation[key], dtype=np.uint8).copy())


def _arm_root_body(model: mujoco.MjModel, unwrapped: Any) -> int:
    first_joint = unwrapped.index.arm_joint_names[0]
    return int(model.body_rootid[model.jnt_bodyid[model.joint(first_joint).id]])


def encode_gif(frames: np.ndarray, fps: float) -> bytes:
    """Encode RGB frames `(frames, height, width, 3)` as an animated GIF with PyAV.

    A GIF needs no video decoder in the browser, while H.264 playback depends on how the
    browser was built.
    """
    import av

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="gif") as container:
        stream = container.add_stream("gif", rate=max(int(round(fps)), 1))
        stream.height, stream.width = frames.shape[1], frames.shape[2]
        stream.pix_fmt = "rgb8"
        for image in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()
