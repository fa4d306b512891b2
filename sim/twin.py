"""The environment that every task of the twin library builds on.

`TwinEnv` composes a task scene with an arm and robota's gripper (`robota.sim.robots`), drives
the arm with absolute joint targets ramped across each control period, reports the observations
that `robota.spec.make_arm_spec` names, and draws the episode's instruction, the task's own scene
and, when asked, the domain randomisation of `robota.sim.randomization`. A task subclass sets the
scene file, its instructions, its part, how a reset places things, and its success criterion.
"""

from __future__ import annotations

import string
from typing import Any, ClassVar

import gymnasium
import mujoco
import numpy as np

from robota.errors import RobotaError, SpecError, UnknownNameError
from robota.sim import robots
from robota.sim.randomization import ModelRandomizer, Randomization, SensorDraws
from robota.spec import (
    ACTION,
    INSTRUCTION_MAX_BYTES,
    OBS_IMAGES,
    OBS_PART_POSE,
    OBS_STATE,
    OBS_VELOCITY,
    OBS_WRENCH,
    TASK,
    Spec,
    format_feature_table,
    make_arm_spec,
)

CONTROL_HZ = 10
PHYSICS_TIMESTEP_S = 0.002
CAMERAS = ("wrist", "overhead")
TABLE_GEOM = "table"
# Gripper commands at or above this close the gripper; lower ones open it.
GRIPPER_CLOSE_THRESHOLD = 0.5
# Start pose jitter per arm joint, drawn every episode.
HOME_JOINT_NOISE_RAD = 0.02
# Noise of the simulated 2D vision system, drawn afresh for every observation.
PART_POSITION_NOISE_M = 0.0015
PART_YAW_NOISE_RAD = np.deg2rad(1.0)

# Letters of the EU's official languages (Latin, Greek and Cyrillic scripts), digits and
# punctuation: every character an instruction may contain.
INSTRUCTION_CHARSET = frozenset(
    string.ascii_letters
    + string.digits
    + " .,;:!?'-()\"«»„“”’"
    + "".join(chr(c) for c in range(0xC0, 0x180) if chr(c).isalpha())
    + "".join(chr(c) for c in range(0x386, 0x3CF) if chr(c).isalpha())
    + "".join(chr(c) for c in range(0x400, 0x460) if chr(c).isalpha())
    + "șțȘȚ"
)


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


def check_instructions(task: str, instructions: dict[str, tuple[str, ...]]) -> None:
    """Raise `SpecError` for an instruction that is too long or has a character outside the charset."""
    for language, texts in instructions.items():
        for text in texts:
            size = len(text.encode("utf-8"))
            if size > INSTRUCTION_MAX_BYTES:
                raise SpecError(
                    f"{task} instruction {text!r} ({language}) is {size} bytes of UTF-8; "
                    f"shorten it to {INSTRUCTION_MAX_BYTES}"
                )
            unknown = set(text) - INSTRUCTION_CHARSET
            if unknown:
                raise SpecError(f"{task} instruction {text!r} has characters {sorted(unknown)} outside the charset")


class TwinIndex:
    """Addresses of the arm, gripper, sensors, cameras and the task's part in a composed model.

    Args:
        model: A model compiled by `robota.sim.robots.compose_twin`.
        arm: The arm mounted in it.
        part_body: Name of the task's part body, which has a free joint of the same name.
    """

    def __init__(self, model: mujoco.MjModel, arm: robots.ArmModel, part_body: str):
        arm_joints = [model.joint(robots.ARM_PREFIX + n) for n in arm.joints]
        self.arm_joint_names = tuple(robots.ARM_PREFIX + n for n in arm.joints)
        self.arm_qpos = np.array([j.qposadr[0] for j in arm_joints])
        self.arm_qvel = np.array([j.dofadr[0] for j in arm_joints])
        actuators = arm.actuators if arm.actuators is not None else arm.joints
        self.arm_actuators = np.array([model.actuator(robots.ARM_PREFIX + n).id for n in actuators])
        self.arm_lower_rad = model.jnt_range[[j.id for j in arm_joints], 0].copy()
        self.arm_upper_rad = model.jnt_range[[j.id for j in arm_joints], 1].copy()
        unlimited = ~model.jnt_limited[[j.id for j in arm_joints]].astype(bool)
        self.arm_lower_rad[unlimited] = -2 * np.pi
        self.arm_upper_rad[unlimited] = 2 * np.pi

        fingers = [model.joint(robots.GRIPPER_PREFIX + n) for n in robots.FINGER_JOINTS]
        self.finger_qpos = np.array([j.qposadr[0] for j in fingers])
        self.finger_dofs = np.array([j.dofadr[0] for j in fingers])
        self.gripper_actuator = model.actuator(robots.GRIPPER_PREFIX + robots.GRIPPER_ACTUATOR).id
        self.tcp_site = model.site(robots.GRIPPER_PREFIX + robots.TCP_SITE).id
        self.tcp_site_name = robots.GRIPPER_PREFIX + robots.TCP_SITE
        self.finger_geoms = frozenset(
            model.geom(robots.GRIPPER_PREFIX + n).id for n in robots.FINGER_GEOMS
        )
        force = model.sensor(robots.GRIPPER_PREFIX + robots.FORCE_SENSOR)
        torque = model.sensor(robots.GRIPPER_PREFIX + robots.TORQUE_SENSOR)
        self.wrench = np.r_[force.adr[0] : force.adr[0] + 3, torque.adr[0] : torque.adr[0] + 3]
        self.cameras = {
            "wrist": model.camera(robots.GRIPPER_PREFIX + robots.WRIST_CAMERA).id,
            "overhead": model.camera("overhead").id,
        }
        self.table_geom = model.geom(TABLE_GEOM).id

        self.part_body = model.body(part_body).id
        self.part_qpos = model.joint(part_body).qposadr[0]
        self.part_qvel = model.joint(part_body).dofadr[0]
        self.part_geom = int(np.flatnonzero(model.geom_bodyid == self.part_body)[0])

    def gripper_opening_m(self, data: mujoco.MjData) -> float:
        """Distance between the finger pads."""
        return float(data.qpos[self.finger_qpos].sum())

    def part_pose_world(self, data: mujoco.MjData) -> tuple[np.ndarray, float]:
        """Part centre `(3,)` in metres and its yaw in radians, both in the world frame."""
        position = data.xpos[self.part_body].copy()
        rotation = data.xmat[self.part_body].reshape(3, 3)
        yaw = float(np.arctan2(rotation[1, 0], rotation[0, 0]))
        return position, yaw

    def touches(self, data: mujoco.MjData, geom: int, others: frozenset[int]) -> bool:
        """Return whether an active contact joins `geom` and any geom of `others`."""
        for contact in data.contact[: data.ncon]:
            pair = {int(contact.geom1), int(contact.geom2)}
            if geom in pair and pair & others:
                return True
        return False

    def part_touches_fingers(self, data: mujoco.MjData) -> bool:
        """Return whether any active contact joins the part and a finger pad."""
        return self.touches(data, self.part_geom, self.finger_geoms)


class TwinEnv(gymnasium.Env):
    """Base of the task environments; each task's class docstring is its manual.

    Args:
        robot: `"ur5e"`, `"panda"` or an `ArmModel` (see `robota.sim.robots.ExternalArm`).
        image_size: `(height, width)` of both cameras.
        render_images: False returns all-zero images and skips rendering them.
        max_episode_steps: Steps before truncation; defaults to the task's own limit.
        render_mode: `"rgb_array"` makes `render()` return the overhead image.
        domain_randomization: Draw the task's `randomization` ranges every episode. True uses
            the task's defaults; a `Randomization` sets other ranges.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": CONTROL_HZ}

    # Set by each task.
    task_name: ClassVar[str] = ""
    scene_xml: ClassVar[str] = ""
    part_body: ClassVar[str] = "part"
    object_bodies: ClassVar[tuple[str, ...]] = ("part",)
    instructions: ClassVar[dict[str, tuple[str, ...]]] = {}
    default_max_episode_steps: ClassVar[int] = 120
    randomization: ClassVar[Randomization] = Randomization()
    reset_options: ClassVar[tuple[str, ...]] = ("language",)

    def __init__(
        self,
        robot: str | robots.ArmModel = "ur5e",
        image_size: tuple[int, int] = (96, 96),
        render_images: bool = True,
        max_episode_steps: int | None = None,
        render_mode: str | None = None,
        domain_randomization: bool | Randomization = False,
    ):
        self.image_size = check_image_size(image_size)
        max_episode_steps = self.default_max_episode_steps if max_episode_steps is None else max_episode_steps
        if int(max_episode_steps) < 1:
            raise RobotaError(f"max_episode_steps must be at least 1, got {max_episode_steps}")
        if render_mode not in (None, "rgb_array"):
            raise UnknownNameError("render mode", str(render_mode), self.metadata["render_modes"])
        self.render_images = bool(render_images)
        self.max_episode_steps = int(max_episode_steps)
        self.render_mode = render_mode
        self.arm = robots.get_arm(robot)
        self.all_instructions = tuple(text for texts in self.instructions.values() for text in texts)

        spec = robots.compose_twin(self.scene_xml, self.arm)
        self._edit_scene(spec)
        self.model = robots.compile_twin(spec, f"{self.task_name} with {self.arm.name}")
        self.model.opt.timestep = PHYSICS_TIMESTEP_S
        self.data = mujoco.MjData(self.model)
        self.index = TwinIndex(self.model, self.arm, self.part_body)
        self._index_task()
        self.substeps = round(1.0 / (CONTROL_HZ * PHYSICS_TIMESTEP_S))
        # A Python call per physics step costs about 1 us, so tasks without the hook skip it.
        self._has_physics_hook = type(self)._after_physics_step is not TwinEnv._after_physics_step
        # Fraction of the control period at the end of each physics step, (substeps, 1).
        self._ramp_fractions = (np.arange(1, self.substeps + 1) / self.substeps)[:, None]
        self.max_target_step_rad = np.asarray(self.arm.spec.velocity_limit_rad_s) / CONTROL_HZ
        self.home_qpos_rad = np.asarray(self.arm.home_qpos_rad, dtype=float)

        cameras = {name: self.image_size for name in CAMERAS}
        self.feature_spec: Spec = make_arm_spec(self.arm.spec, CONTROL_HZ, cameras)
        self.observation_space = _observation_space(self.feature_spec)
        self.action_space = gymnasium.spaces.Box(
            low=np.r_[self.index.arm_lower_rad, 0.0].astype(np.float32),
            high=np.r_[self.index.arm_upper_rad, 1.0].astype(np.float32),
            dtype=np.float32,
        )

        if domain_randomization is True:
            domain_randomization = self.randomization
        self._randomizer = None
        if domain_randomization:
            self._randomizer = ModelRandomizer(
                self.model,
                domain_randomization,
                object_bodies=[self.model.body(name).id for name in self.object_bodies],
                finger_geoms=sorted(self.index.finger_geoms),
                arm_dofs=self.index.arm_qvel,
                arm_actuators=self.index.arm_actuators,
                table_geom=self.index.table_geom,
            )
        self._sensors = SensorDraws()
        self._previous_images: dict[str, np.ndarray] = {}

        # Created on the first render, never here: a renderer made before a fork hangs the
        # workers of gymnasium's AsyncVectorEnv. NOTE: forked workers also hang when the parent
        # process has rendered at all (Mesa EGL, mujoco 4.0.1), so such parents must use spawn.
        self._renderer: mujoco.Renderer | None = None
        self._arm_target_rad = self.home_qpos_rad.copy()
        self._elapsed_steps = 0
        self.instruction = self.all_instructions[0]

    # Task hooks.

    def _instruction_choices(self, options: dict[str, Any]) -> tuple[str, ...]:
        """Return the instructions to draw from, given the reset options."""
        language = options.get("language")
        if language is None:
            return self.all_instructions
        if language not in self.instructions:
            raise UnknownNameError("instruction language", str(language), self.instructions)
        return self.instructions[language]

    def _edit_scene(self, spec: mujoco.MjSpec) -> None:
        """Change the composed spec before it compiles; the default changes nothing."""

    def _index_task(self) -> None:
        """Look up the task's own bodies, joints and sites in `self.model`."""

    def _reset_task(self) -> dict[str, Any]:
        """Place the task's objects with `self.np_random` and return what was drawn."""
        raise NotImplementedError

    def _after_physics_step(self) -> None:
        """Run after every physics step, for example to move a conveyor; the default does nothing."""

    def is_success(self) -> bool:
        """Return whether the task's success criterion holds now."""
        raise NotImplementedError

    # gymnasium.Env.

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Start an episode: draw the instruction, the task's scene and the arm's start pose.

        Args:
            seed: Seed of the episode's random draws.
            options: `{"language": code}` restricts the instruction to one language, a key of
                the task's `instructions`. Without it the instruction is drawn from all languages.

        Returns:
            The first observation, and an info dict whose `randomization` entry records every
            draw of this episode: the task's own, the arm's joint offsets and, with domain
            randomisation on, the model, sensor and timing draws.
        """
        super().reset(seed=seed)
        options = dict(options or {})
        for key in options:
            if key not in self.reset_options:
                raise UnknownNameError("reset option", key, self.reset_options)
        choices = self._instruction_choices(options)
        # One uniform draw whatever the choices, so an option never shifts the scene's draws
        # that follow: the same seed gives the same scene with a different instruction.
        self.instruction = choices[min(int(self.np_random.random() * len(choices)), len(choices) - 1)]

        mujoco.mj_resetData(self.model, self.data)
        task_draws = self._reset_task()
        joint_offsets = self.np_random.uniform(
            -HOME_JOINT_NOISE_RAD, HOME_JOINT_NOISE_RAD, self.arm.spec.num_joints
        )
        self._place_arm(self.home_qpos_rad + joint_offsets)
        draws = {**task_draws, "arm_joint_offsets_rad": joint_offsets.tolist()}
        if self._randomizer is not None:
            model_draws, self._sensors = self._randomizer.draw(self.np_random, PHYSICS_TIMESTEP_S)
            draws.update(model_draws)
        mujoco.mj_forward(self.model, self.data)
        self._elapsed_steps = 0
        self._previous_images = {}

        info = self._info()
        info["randomization"] = draws
        return self._observation(), info

    def step(
        self, action: np.ndarray
    ) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        """Apply one action for one control period (`1 / CONTROL_HZ` seconds) of physics."""
        n = self.arm.spec.num_joints
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != (n + 1,) or not np.all(np.isfinite(action)):
            raise SpecError(
                f"action must be {n + 1} finite values ({n} joint targets in rad, then the "
                f"gripper command in [0, 1]), got {action!r}"
            )

        start = self._arm_target_rad
        target = np.clip(action[:n], self.index.arm_lower_rad, self.index.arm_upper_rad)
        target = np.clip(target, start - self.max_target_step_rad, start + self.max_target_step_rad)
        # The gripper is open or closed, as in most industrial pick-and-place. A learned policy's
        # small gripper outputs then leave the fingers open instead of half-closing them, which
        # would show it an opening its demonstrations never had.
        closed = float(action[n]) >= GRIPPER_CLOSE_THRESHOLD
        gripper_ctrl = 0.0 if closed else self.arm.spec.gripper_max_opening_m

        # Ramp the joint targets across the control period, as a trajectory controller
        # interpolates between waypoints, so the arm moves smoothly instead of jumping. The
        # ramp is computed once per control step: computed per physics step, it cost about
        # 150 us of a 1 ms step without rendering (benchmarks/twin_throughput.py). A drawn
        # control latency holds the previous target for its first physics steps.
        ramp = start + self._ramp_fractions * (target - start)  # (substeps, joints)
        latency = min(self._sensors.latency_substeps, self.substeps)
        ramp[:latency] = start
        model, data = self.model, self.data
        arm_actuators, gripper_actuator = self.index.arm_actuators, self.index.gripper_actuator
        if latency == 0:
            data.ctrl[gripper_actuator] = gripper_ctrl
        for substep, arm_ctrl in enumerate(ramp):
            data.ctrl[arm_actuators] = arm_ctrl
            if substep == latency:
                data.ctrl[gripper_actuator] = gripper_ctrl
            mujoco.mj_step(model, data)
            if self._has_physics_hook:
                self._after_physics_step()
        self._arm_target_rad = target
        self._elapsed_steps += 1

        info = self._info()
        success = info["is_success"]
        terminated = success
        truncated = not terminated and self._elapsed_steps >= self.max_episode_steps
        reward = 1.0 if success else 0.0
        return self._observation(), reward, terminated, truncated, info

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

    # Internals.

    def _place_arm(self, arm_qpos: np.ndarray) -> None:
        arm_qpos = np.clip(arm_qpos, self.index.arm_lower_rad, self.index.arm_upper_rad)
        self.data.qpos[self.index.arm_qpos] = arm_qpos
        self.data.qpos[self.index.finger_qpos] = self.arm.spec.gripper_max_opening_m / 2
        self.data.ctrl[self.index.arm_actuators] = arm_qpos
        self.data.ctrl[self.index.gripper_actuator] = self.arm.spec.gripper_max_opening_m
        self._arm_target_rad = arm_qpos.copy()

    def _set_free_body(self, qpos_adr: int, position: np.ndarray, yaw_rad: float) -> None:
        """Put a free joint's body at `position` (m), turned by `yaw_rad` about z."""
        self.data.qpos[qpos_adr : qpos_adr + 3] = position
        self.data.qpos[qpos_adr + 3 : qpos_adr + 7] = (np.cos(yaw_rad / 2), 0.0, 0.0, np.sin(yaw_rad / 2))

    def _part_pose_xy_yaw(self) -> np.ndarray:
        """The part pose `(x, y, yaw)` that the vision system sees, before its noise."""
        position, yaw = self.index.part_pose_world(self.data)
        return np.r_[position[:2], yaw]

    def _observation(self) -> dict[str, Any]:
        index = self.index
        sensors = self._sensors
        noise = self.np_random.normal(0.0, 1.0, 3) * (
            PART_POSITION_NOISE_M,
            PART_POSITION_NOISE_M,
            PART_YAW_NOISE_RAD,
        )
        observation: dict[str, Any] = {}
        for camera in CAMERAS:
            observation[OBS_IMAGES + camera] = self._camera_image(camera)
        arm_qpos = self.data.qpos[index.arm_qpos].copy()
        arm_qvel = self.data.qvel[index.arm_qvel].copy()
        wrench = self.data.sensordata[index.wrench].copy()
        if sensors.joint_noise_std_rad > 0:
            arm_qpos += self.np_random.normal(0.0, sensors.joint_noise_std_rad, arm_qpos.shape)
            arm_qvel += self.np_random.normal(0.0, sensors.joint_noise_std_rad, arm_qvel.shape)
        if sensors.wrench_noise_std_n > 0:
            wrench += self.np_random.normal(0.0, sensors.wrench_noise_std_n, 6)
        opening = index.gripper_opening_m(self.data)
        observation[OBS_STATE] = np.r_[arm_qpos, opening].astype(np.float32)
        observation[OBS_VELOCITY] = arm_qvel.astype(np.float32)
        observation[OBS_WRENCH] = wrench.astype(np.float32)
        observation[OBS_PART_POSE] = (self._part_pose_xy_yaw() + noise).astype(np.float32)
        observation[TASK] = self.instruction
        return observation

    def _camera_image(self, camera: str) -> np.ndarray:
        sensors = self._sensors
        previous = self._previous_images.get(camera)
        if (
            previous is not None
            and sensors.frame_drop_probability > 0
            and self.np_random.random() < sensors.frame_drop_probability
        ):
            return previous.copy()
        image = self._render_camera(camera)
        if sensors.image_noise_std > 0 and self.render_images:
            noisy = image + self.np_random.normal(0.0, sensors.image_noise_std, image.shape)
            image = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
        self._previous_images[camera] = image
        return image

    def _render_camera(self, camera: str, *, always: bool = False) -> np.ndarray:
        height, width = self.image_size
        if not (self.render_images or always):
            return np.zeros((height, width, 3), dtype=np.uint8)
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.model, height, width)
        self._renderer.update_scene(self.data, camera=self.index.cameras[camera])
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


def build_manual(env_class: type[TwinEnv], summary: str, details: str, env_id: str) -> str:
    """Write a task's manual: its summary, the generated spaces, rates, randomisation and details.

    Args:
        env_class: The task's environment class.
        summary: First paragraph: what the task is.
        details: Task-specific sections (scene, success), Markdown.
        env_id: The gymnasium id, for example `robota/PickPlace-v0`.
    """
    spec = make_arm_spec(robots.UR5E, CONTROL_HZ, {name: (96, 96) for name in CAMERAS})
    observation_keys = [key for key in spec.features if key != ACTION]
    languages = ", ".join(sorted(env_class.instructions))
    examples = "\n".join(
        f"- {language}: {texts[0]}" for language, texts in env_class.instructions.items()
    )
    return f"""{summary} (`{env_id}`).

## Robots

`robot="ur5e"` (default, 6 joints), `robot="panda"` (7 joints) or any arm MJCF through
`robota.sim.robots.ExternalArm`. Each carries robota's parallel-jaw gripper (0.085 m stroke,
40 N grip), a wrist force/torque sensor and a wrist camera; an overhead camera looks at the table.
The base frame is the world frame and the table top is at z = 0.

## Observation space

A `gymnasium.spaces.Dict` whose keys are those of `env.unwrapped.feature_spec`, shown for the
UR5e at 96 x 96 (`image_size` sets the images; a 7-joint arm has 8 state values). `task` is a
`gymnasium.spaces.Text` instruction. The part pose carries Gaussian noise of
{PART_POSITION_NOISE_M * 1000:.1f} mm and 1 degree per observation.

{format_feature_table(spec, observation_keys)}

## Action space

`Box(joints + 1)`: absolute joint position targets, then the gripper command.

{format_feature_table(spec, [ACTION])}

Targets are clipped to the joint limits and to the velocity limit per control period, then
ramped linearly across the period. A gripper command of {GRIPPER_CLOSE_THRESHOLD} or more closes
the gripper; a lower one opens it fully.

## Rates

Control at {CONTROL_HZ} Hz; physics at {PHYSICS_TIMESTEP_S * 1000:.0f} ms,
{round(1.0 / (CONTROL_HZ * PHYSICS_TIMESTEP_S))} physics steps per `step`. Episodes truncate after
`max_episode_steps` steps (default {env_class.default_max_episode_steps}).

## Instructions

Languages: {languages}. `reset(options={{"language": code}})` picks one. Examples:

{examples}

{details}

## Domain randomisation

Every episode draws the arm's start offsets U(-{HOME_JOINT_NOISE_RAD}, {HOME_JOINT_NOISE_RAD}) rad
per joint, the instruction and the task's own draws above. With `domain_randomization=True` it
also draws, per episode:

{env_class.randomization.table()}

`info["randomization"]` from `reset` lists every value drawn; recorded datasets keep it in their
episode metadata and evaluation reports list it per episode. The same seed draws the same values.

## Arguments

- `robot`, `image_size`, `render_images` (False returns all-zero images, for physics-only use),
  `max_episode_steps`, `render_mode` (`"rgb_array"`: `render()` returns the overhead image) and
  `domain_randomization` (True, or a `robota.sim.randomization.Randomization` with other ranges).
"""


def load_twin_model(
    scene_xml: str = "pick_place.xml", robot: str | robots.ArmModel = "ur5e", part_body: str = "part"
) -> tuple[mujoco.MjModel, TwinIndex]:
    """Compile a twin without an environment, for kinematics checks and tools.

    Returns:
        The compiled model and its index.
    """
    arm = robots.get_arm(robot)
    model = robots.compile_twin(robots.compose_twin(scene_xml, arm), f"{scene_xml} with {arm.name}")
    return model, TwinIndex(model, arm, part_body)
