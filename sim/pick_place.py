"""The `pick-place` task: move a part from the table into an open bin with a UR5e.

The task's randomisation ranges, instructions and success criterion live here as module
constants; the environment class below documents the observation and action layout.
"""

from __future__ import annotations

import logging
import string
from typing import Any

import gymnasium
import mujoco
import numpy as np

from robota.errors import RobotaError, SpecError, UnknownNameError
from robota.sim import cell
from robota.spec import (
    ACTION,
    INSTRUCTION_MAX_BYTES,
    OBS_IMAGES,
    OBS_PART_POSE,
    OBS_STATE,
    OBS_VELOCITY,
    OBS_WRENCH,
    TASK,
    UR5E,
    Spec,
    format_feature_table,
    make_arm_spec,
)

logger = logging.getLogger(__name__)

CONTROL_HZ = 10
PHYSICS_TIMESTEP_S = 0.002
DEFAULT_MAX_EPISODE_STEPS = 120
# Gripper commands at or above this close the gripper; lower ones open it.
GRIPPER_CLOSE_THRESHOLD = 0.5

# Randomisation, drawn from the episode's seed in this order: instruction, part x, part y, part
# yaw, arm joint offsets. The box is symmetric under quarter turns, so +-pi/4 covers every yaw.
PART_X_RANGE_M = (0.35, 0.55)
PART_Y_RANGE_M = (-0.25, -0.05)
PART_YAW_RANGE_RAD = (-np.pi / 4, np.pi / 4)
HOME_JOINT_NOISE_RAD = 0.02

# Noise of the simulated 2D vision system, drawn afresh for every observation.
PART_POSITION_NOISE_M = 0.0015
PART_YAW_NOISE_RAD = np.deg2rad(1.0)

# Success: the part centre lies inside the bin's inner footprint, below the wall tops, moves
# slower than this and no finger touches it.
SUCCESS_MAX_PART_SPEED_M_S = 0.05

INSTRUCTIONS: dict[str, tuple[str, ...]] = {
    "en": (
        "Put the part in the bin.",
        "Place the part into the bin.",
        "Pick up the part and drop it in the bin.",
        "Move the part to the bin.",
    ),
    "de": (
        "Lege das Teil in den Behälter.",
        "Lege das Werkstück in die Kiste.",
        "Nimm das Teil und lege es in den Behälter.",
        "Bringe das Teil in den Behälter.",
    ),
}
ALL_INSTRUCTIONS = tuple(text for texts in INSTRUCTIONS.values() for text in texts)
# Letters, digits, punctuation and German umlauts, so instructions written later still fit.
INSTRUCTION_CHARSET = frozenset(
    string.ascii_letters + string.digits + " .,;:!?'-()" + "äöüÄÖÜß"
) | frozenset("".join(ALL_INSTRUCTIONS))
RESET_OPTIONS = ("language",)


def check_image_size(image_size: tuple[int, int]) -> tuple[int, int]:
    """Return `image_size` as `(height, width)` ints, or raise `SpecError` if it cannot render."""
    try:
        height, width = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise SpecError(
            f"image_size must be (height, width), got {image_size!r}. Pass for example (96, 96)"
        ) from None
    if not (1 <= height <= 480 and 1 <= width <= 640):
        raise SpecError(
            f"image_size {image_size!r} is outside the cell's offscreen buffer of 480 x 640 "
            "pixels; pass a height of 1..480 and a width of 1..640"
        )
    return height, width


class PickPlaceEnv(gymnasium.Env):
    """Pick-and-place environment. `_manual()` replaces this line with the generated manual."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": CONTROL_HZ}

    def __init__(
        self,
        image_size: tuple[int, int] = (96, 96),
        render_images: bool = True,
        max_episode_steps: int = DEFAULT_MAX_EPISODE_STEPS,
        render_mode: str | None = None,
    ):
        self.image_size = check_image_size(image_size)
        if int(max_episode_steps) < 1:
            raise RobotaError(f"max_episode_steps must be at least 1, got {max_episode_steps}")
        if render_mode not in (None, "rgb_array"):
            raise UnknownNameError("render mode", str(render_mode), self.metadata["render_modes"])
        self.render_images = bool(render_images)
        self.max_episode_steps = int(max_episode_steps)
        self.render_mode = render_mode

        self.model = cell.load_cell_model()
        self.model.opt.timestep = PHYSICS_TIMESTEP_S
        self.data = mujoco.MjData(self.model)
        self.index = cell.CellIndex(self.model)
        self.substeps = round(1.0 / (CONTROL_HZ * PHYSICS_TIMESTEP_S))
        # Fraction of the control period at the end of each physics step, (substeps, 1).
        self._ramp_fractions = (np.arange(1, self.substeps + 1) / self.substeps)[:, None]
        self.max_target_step_rad = np.asarray(UR5E.velocity_limit_rad_s) / CONTROL_HZ
        self.bin_center_m = self.model.body_pos[self.index.bin_body, :2].copy()

        cameras = {name: self.image_size for name in cell.CAMERAS}
        self.feature_spec: Spec = make_arm_spec(UR5E, CONTROL_HZ, cameras)
        self.observation_space = _observation_space(self.feature_spec)
        self.action_space = gymnasium.spaces.Box(
            low=np.r_[self.index.arm_lower_rad, 0.0].astype(np.float32),
            high=np.r_[self.index.arm_upper_rad, 1.0].astype(np.float32),
            dtype=np.float32,
        )

        # Created on the first render, never here: a renderer made before a fork hangs the
        # workers of gymnasium's AsyncVectorEnv. NOTE: forked workers also hang when the parent
        # process has rendered at all (Mesa EGL, mujoco 4.0.1), so such parents must use spawn.
        self._renderer: mujoco.Renderer | None = None
        self._arm_target_rad = cell.HOME_QPOS_RAD.copy()
        self._elapsed_steps = 0
        self.instruction = ALL_INSTRUCTIONS[0]

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Start an episode: draw the instruction, the part pose and the arm's start pose.

        Args:
            seed: Seed of the episode's random draws.
            options: `{"language": "en" | "de"}` restricts the instruction to one language.
                Without it the instruction is drawn from all languages.

        Returns:
            The first observation, and an info dict whose `randomization` entry records the
            part pose and arm joint offsets drawn for this episode.
        """
        super().reset(seed=seed)
        options = dict(options or {})
        for key in options:
            if key not in RESET_OPTIONS:
                raise UnknownNameError("reset option", key, RESET_OPTIONS)
        language = options.get("language")
        if language is None:
            choices = ALL_INSTRUCTIONS
        elif language in INSTRUCTIONS:
            choices = INSTRUCTIONS[language]
        else:
            raise UnknownNameError("instruction language", str(language), INSTRUCTIONS)
        self.instruction = choices[int(self.np_random.integers(len(choices)))]

        part_x = self.np_random.uniform(*PART_X_RANGE_M)
        part_y = self.np_random.uniform(*PART_Y_RANGE_M)
        part_yaw = self.np_random.uniform(*PART_YAW_RANGE_RAD)
        joint_offsets = self.np_random.uniform(-HOME_JOINT_NOISE_RAD, HOME_JOINT_NOISE_RAD, 6)
        self._place_robot_and_part(cell.HOME_QPOS_RAD + joint_offsets, part_x, part_y, part_yaw)
        self._elapsed_steps = 0

        info = self._info()
        info["randomization"] = {
            "part_x_m": float(part_x),
            "part_y_m": float(part_y),
            "part_yaw_rad": float(part_yaw),
            "arm_joint_offsets_rad": joint_offsets.tolist(),
        }
        return self._observation(), info

    def step(
        self, action: np.ndarray
    ) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        """Apply one action for one control period (`1 / CONTROL_HZ` seconds) of physics."""
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != (UR5E.action_dim,) or not np.all(np.isfinite(action)):
            raise SpecError(
                f"action must be {UR5E.action_dim} finite values (6 joint targets in rad, then the "
                f"gripper command in [0, 1]), got {action!r}"
            )

        start = self._arm_target_rad
        target = np.clip(action[:6], self.index.arm_lower_rad, self.index.arm_upper_rad)
        target = np.clip(target, start - self.max_target_step_rad, start + self.max_target_step_rad)
        # The gripper is open or closed, as in most industrial pick-and-place. A learned policy's
        # small gripper outputs then leave the fingers open instead of half-closing them, which
        # would show it an opening its demonstrations never had.
        closed = float(action[6]) >= GRIPPER_CLOSE_THRESHOLD
        self.data.ctrl[self.index.gripper_actuator] = 0.0 if closed else cell.GRIPPER_OPEN_M

        # Ramp the joint targets across the control period, as a trajectory controller
        # interpolates between waypoints, so the arm moves smoothly instead of jumping. The
        # ramp is computed once per control step: computed per physics step, it cost about
        # 150 us of a 1 ms step without rendering (benchmarks/twin_throughput.py).
        ramp = start + self._ramp_fractions * (target - start)  # (substeps, joints)
        for arm_ctrl in ramp:
            self.data.ctrl[self.index.arm_actuators] = arm_ctrl
            mujoco.mj_step(self.model, self.data)
        self._arm_target_rad = target
        self._elapsed_steps += 1

        info = self._info()
        success = info["is_success"]
        terminated = success
        truncated = not terminated and self._elapsed_steps >= self.max_episode_steps
        reward = 1.0 if success else 0.0
        return self._observation(), reward, terminated, truncated, info

    def is_success(self) -> bool:
        """Return whether the part rests inside the bin, free of the fingers."""
        position, _ = self.index.part_pose_world(self.data)
        offset = np.abs(position[:2] - self.bin_center_m)
        inside = bool(np.all(offset < cell.BIN_INNER_HALF_SIZE_M))
        low = position[2] < cell.BIN_WALL_TOP_M
        speed = np.linalg.norm(self.data.qvel[self.index.part_qvel : self.index.part_qvel + 3])
        resting = speed < SUCCESS_MAX_PART_SPEED_M_S
        return inside and low and resting and not self.index.part_touches_fingers(self.data)

    def render(self) -> np.ndarray | None:
        """Return the overhead camera's image `(height, width, 3)` in `rgb_array` mode."""
        if self.render_mode != "rgb_array":
            return None
        return self._render_camera("overhead", always=True)

    def close(self) -> None:
        """Free the renderer, if one was created."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def _place_robot_and_part(
        self, arm_qpos: np.ndarray, part_x: float, part_y: float, part_yaw: float
    ) -> None:
        mujoco.mj_resetData(self.model, self.data)
        arm_qpos = np.clip(arm_qpos, self.index.arm_lower_rad, self.index.arm_upper_rad)
        self.data.qpos[self.index.arm_qpos] = arm_qpos
        self.data.qpos[self.index.finger_qpos] = cell.GRIPPER_OPEN_M / 2
        self.data.ctrl[self.index.arm_actuators] = arm_qpos
        self.data.ctrl[self.index.gripper_actuator] = cell.GRIPPER_OPEN_M
        adr = self.index.part_qpos
        self.data.qpos[adr : adr + 3] = (part_x, part_y, cell.PART_HALF_SIZE_M)
        self.data.qpos[adr + 3 : adr + 7] = (np.cos(part_yaw / 2), 0.0, 0.0, np.sin(part_yaw / 2))
        mujoco.mj_forward(self.model, self.data)
        self._arm_target_rad = arm_qpos.copy()

    def _observation(self) -> dict[str, Any]:
        index = self.index
        position, yaw = index.part_pose_world(self.data)
        noise = self.np_random.normal(0.0, 1.0, 3) * (
            PART_POSITION_NOISE_M,
            PART_POSITION_NOISE_M,
            PART_YAW_NOISE_RAD,
        )
        observation: dict[str, Any] = {}
        for camera in cell.CAMERAS:
            observation[OBS_IMAGES + camera] = self._render_camera(camera)
        arm_qpos = self.data.qpos[index.arm_qpos]
        opening = index.gripper_opening_m(self.data)
        observation[OBS_STATE] = np.r_[arm_qpos, opening].astype(np.float32)
        observation[OBS_VELOCITY] = self.data.qvel[index.arm_qvel].astype(np.float32)
        observation[OBS_WRENCH] = self.data.sensordata[index.wrench].astype(np.float32)
        observation[OBS_PART_POSE] = (np.r_[position[:2], yaw] + noise).astype(np.float32)
        observation[TASK] = self.instruction
        return observation

    def _render_camera(self, camera: str, *, always: bool = False) -> np.ndarray:
        height, width = self.image_size
        if not (self.render_images or always):
            return np.zeros((height, width, 3), dtype=np.uint8)
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.model, height, width)
        self._renderer.update_scene(self.data, camera=camera)
        return self._renderer.render()

    def _info(self) -> dict[str, Any]:
        return {"is_success": self.is_success(), "instruction": self.instruction}


def _observation_space(spec: Spec) -> gymnasium.spaces.Dict:
    spaces: dict[str, gymnasium.spaces.Space] = {}
    for key, feature in spec.features.items():
        if key == ACTION:
            continue
        if key == TASK:
            spaces[key] = gymnasium.spaces.Text(
                max_length=INSTRUCTION_MAX_BYTES, charset=INSTRUCTION_CHARSET
            )
        elif feature.dtype == "uint8":
            spaces[key] = gymnasium.spaces.Box(0, 255, feature.shape, dtype=np.uint8)
        else:
            spaces[key] = gymnasium.spaces.Box(-np.inf, np.inf, feature.shape, dtype=np.float32)
    return gymnasium.spaces.Dict(spaces)


def _manual() -> str:
    spec = make_arm_spec(UR5E, CONTROL_HZ, {name: (96, 96) for name in cell.CAMERAS})
    observation_keys = [key for key in spec.features if key != ACTION]
    return _MANUAL.format(
        observation_table=format_feature_table(spec, observation_keys),
        action_table=format_feature_table(spec, [ACTION]),
        control_hz=CONTROL_HZ,
        timestep_ms=PHYSICS_TIMESTEP_S * 1000,
        substeps=round(1.0 / (CONTROL_HZ * PHYSICS_TIMESTEP_S)),
        max_steps=DEFAULT_MAX_EPISODE_STEPS,
        x=PART_X_RANGE_M,
        y=PART_Y_RANGE_M,
        noise_mm=PART_POSITION_NOISE_M * 1000,
        speed=SUCCESS_MAX_PART_SPEED_M_S,
    )


_MANUAL = """Pick a part off the table and drop it into an open bin (`robota/PickPlace-v0`).

A UR5e-class arm (Universal Robots' DH kinematics, base frame = world frame, table top at
z = 0) with a parallel-jaw gripper, a wrist force/torque sensor, a wrist camera and an overhead
camera. A 4 cm box of 0.1 kg appears at x in [{x[0]}, {x[1]}] m, y in [{y[0]}, {y[1]}] m and
yaw in [-pi/4, pi/4]. The bin's inner footprint is 0.20 m x 0.20 m around (0.35, 0.32) m.

## Observation space

A `gymnasium.spaces.Dict` whose keys are those of `env.unwrapped.feature_spec` (96 x 96 images
shown; `image_size` sets them). `task` is a `gymnasium.spaces.Text` instruction, English or
German. The part pose carries Gaussian noise of {noise_mm:.1f} mm and 1 degree per observation.

{observation_table}

## Action space

`Box(7)`: absolute joint position targets, then the gripper command.

{action_table}

Targets are clipped to the joint limits and to the velocity limit per control period (pi rad/s
times 0.1 s from the previous target), then ramped linearly across the period. A gripper
command of 0.5 or more closes the gripper (grip force limited to 40 N), and a lower one opens
it fully (0.085 m).

## Rates

Control at {control_hz} Hz; physics at {timestep_ms:.0f} ms, {substeps} physics steps per `step`.

## Reward, termination and truncation

Sparse: 1.0 on the step that succeeds, 0.0 otherwise. Success means the part centre lies
inside the bin's inner footprint, below the wall tops, moving slower than {speed} m/s, with no
finger touching it. `terminated` is True on success; `truncated` is True once
`max_episode_steps` steps (default {max_steps}) have passed without success.
`info["is_success"]` repeats the success flag.

## Arguments

- `image_size`: `(height, width)` of both cameras, default (96, 96).
- `render_images`: False returns all-zero images in observations and skips rendering them, for
  fast physics-only use. `render()` still renders.
- `max_episode_steps`: steps before truncation.
- `render_mode`: `"rgb_array"` makes `render()` return the overhead image.

## Version history

- v0: first version.
"""

PickPlaceEnv.__doc__ = _manual()
