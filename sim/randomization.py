"""Domain randomisation of the twins: declared ranges, per-episode draws and their application.

Every range is a `Uniform(a, b)` and reads as U(a, b) in the manuals. A task declares its ranges
with a `Randomization` (each task's defaults live beside it) and the environment draws them once
per episode from its seed. `TwinEnv.reset` returns the draws in `info["randomization"]`, the
recorder stores them in the dataset's episode metadata and evaluation reports list them per
episode, so a failed episode can be inspected and replayed from its seed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import mujoco
import numpy as np

from robota.errors import SpecError


@dataclasses.dataclass(frozen=True)
class Uniform:
    """The uniform distribution U(low, high)."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not (np.isfinite(self.low) and np.isfinite(self.high)) or self.low > self.high:
            raise SpecError(f"U({self.low}, {self.high}) is not a range; pass finite low <= high")

    def sample(self, rng: np.random.Generator, size: int | None = None) -> Any:
        return rng.uniform(self.low, self.high, size)

    def __str__(self) -> str:
        return f"U({self.low:g}, {self.high:g})"


@dataclasses.dataclass(frozen=True)
class Randomization:
    """Ranges of the physics, appearance, sensor and timing draws of one task.

    Scales multiply the nominal value, offsets add to it. The part pose is drawn by the task
    itself, in every episode, randomised or not.

    Attributes:
        object_mass_scale: Mass of each task object.
        friction_scale: Sliding friction of the task objects and the finger pads.
        joint_damping_scale: Damping of each arm joint.
        actuator_gain_scale: Stiffness and damping of each arm position servo, as if the drive
            were tuned differently.
        light_scale: Brightness of the cell's light and the headlight.
        camera_position_offset_m: Offset of each camera along each world axis (m).
        camera_fovy_offset_deg: Offset of each camera's vertical field of view (degrees).
        color_offset: Offset of each RGB channel of the task objects and the table.
        table_textures: Table-top materials drawn with equal probability; "" is the plain top.
        joint_noise_std_rad: Standard deviation of Gaussian noise on joint positions and
            velocities (rad, rad/s), drawn once per episode.
        wrench_noise_std_n: Standard deviation of Gaussian noise on the wrench (N, N*m).
        image_noise_std: Standard deviation of Gaussian pixel noise (0-255 scale).
        control_latency_s: Delay before a new joint target reaches the servos (s).
        frame_drop_probability: Chance per step that the cameras deliver the previous images.
    """

    object_mass_scale: Uniform = Uniform(0.7, 1.3)
    friction_scale: Uniform = Uniform(0.7, 1.3)
    joint_damping_scale: Uniform = Uniform(0.7, 1.3)
    actuator_gain_scale: Uniform = Uniform(0.9, 1.1)
    light_scale: Uniform = Uniform(0.6, 1.3)
    camera_position_offset_m: Uniform = Uniform(-0.01, 0.01)
    camera_fovy_offset_deg: Uniform = Uniform(-3.0, 3.0)
    color_offset: Uniform = Uniform(-0.15, 0.15)
    table_textures: tuple[str, ...] = ("", "table_checker", "table_grain")
    joint_noise_std_rad: Uniform = Uniform(0.0, 0.002)
    wrench_noise_std_n: Uniform = Uniform(0.0, 0.5)
    image_noise_std: Uniform = Uniform(0.0, 4.0)
    control_latency_s: Uniform = Uniform(0.0, 0.02)
    frame_drop_probability: Uniform = Uniform(0.0, 0.05)

    def table(self) -> str:
        """Return the ranges as a Markdown table for a task's manual."""
        rows = ["| draw | range |", "|---|---|"]
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            text = str(value) if isinstance(value, Uniform) else "one of " + ", ".join(
                repr(v or "plain") for v in value
            )
            rows.append(f"| `{field.name}` | {text} |")
        return "\n".join(rows)


@dataclasses.dataclass
class SensorDraws:
    """The per-episode sensor and timing draws that the environment applies while stepping."""

    joint_noise_std_rad: float = 0.0
    wrench_noise_std_n: float = 0.0
    image_noise_std: float = 0.0
    latency_substeps: int = 0
    frame_drop_probability: float = 0.0


class ModelRandomizer:
    """Draws a `Randomization` and writes it into a compiled model, from the nominal values.

    Args:
        model: The twin's compiled model; it is edited in place.
        ranges: The task's ranges.
        object_bodies: Body ids of the task objects (mass, friction and colour draws).
        finger_geoms: Geom ids of the finger pads (friction draws).
        arm_dofs: Dof ids of the arm joints.
        arm_actuators: Actuator ids of the arm's position servos.
        table_geom: Geom id of the table top.
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        ranges: Randomization,
        *,
        object_bodies: Sequence[int],
        finger_geoms: Sequence[int],
        arm_dofs: Sequence[int],
        arm_actuators: Sequence[int],
        table_geom: int,
    ) -> None:
        self.model = model
        self.ranges = ranges
        self.object_bodies = np.asarray(object_bodies, dtype=int)
        self.object_geoms = np.flatnonzero(np.isin(model.geom_bodyid, self.object_bodies))
        self.friction_geoms = np.r_[self.object_geoms, np.asarray(finger_geoms, dtype=int)]
        self.color_geoms = np.r_[self.object_geoms, table_geom]
        self.arm_dofs = np.asarray(arm_dofs, dtype=int)
        self.arm_actuators = np.asarray(arm_actuators, dtype=int)
        self.table_geom = table_geom
        for name in ranges.table_textures:
            if name and mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_MATERIAL, name) < 0:
                raise SpecError(f"table texture {name!r} is not a material of the twin's model")
        self._nominal = {
            "body_mass": model.body_mass.copy(),
            "body_inertia": model.body_inertia.copy(),
            "geom_friction": model.geom_friction.copy(),
            "geom_rgba": model.geom_rgba.copy(),
            "geom_matid": model.geom_matid.copy(),
            "dof_damping": model.dof_damping.copy(),
            "actuator_gainprm": model.actuator_gainprm.copy(),
            "actuator_biasprm": model.actuator_biasprm.copy(),
            "light_diffuse": model.light_diffuse.copy(),
            "light_ambient": model.light_ambient.copy(),
            "cam_pos": model.cam_pos.copy(),
            "cam_fovy": model.cam_fovy.copy(),
        }
        self._headlight = (
            np.array(model.vis.headlight.ambient),
            np.array(model.vis.headlight.diffuse),
        )
        # mj_setConst overwrites the state of the data it is given, so it gets its own.
        self._scratch = mujoco.MjData(model)

    def restore(self) -> None:
        """Put every randomised model value back to its nominal value."""
        for name, value in self._nominal.items():
            getattr(self.model, name)[:] = value
        self.model.vis.headlight.ambient[:] = self._headlight[0]
        self.model.vis.headlight.diffuse[:] = self._headlight[1]
        mujoco.mj_setConst(self.model, self._scratch)

    def draw(self, rng: np.random.Generator, timestep_s: float) -> tuple[dict[str, Any], SensorDraws]:
        """Draw one episode's values, apply them to the model and return them.

        Returns:
            The draws as JSON-ready values, and the sensor and timing draws for stepping.
        """
        r = self.ranges
        n_objects = len(self.object_bodies)
        n_cameras = self.model.ncam
        draws: dict[str, Any] = {
            "object_mass_scale": r.object_mass_scale.sample(rng, n_objects).tolist(),
            "friction_scale": r.friction_scale.sample(rng, len(self.friction_geoms)).tolist(),
            "joint_damping_scale": r.joint_damping_scale.sample(rng, len(self.arm_dofs)).tolist(),
            "actuator_gain_scale": r.actuator_gain_scale.sample(rng, len(self.arm_actuators)).tolist(),
            "light_scale": float(r.light_scale.sample(rng)),
            "camera_position_offset_m": r.camera_position_offset_m.sample(rng, (n_cameras, 3)).tolist(),
            "camera_fovy_offset_deg": r.camera_fovy_offset_deg.sample(rng, n_cameras).tolist(),
            "color_offset": r.color_offset.sample(rng, (len(self.color_geoms), 3)).tolist(),
            "table_texture": r.table_textures[int(rng.integers(len(r.table_textures)))],
            "joint_noise_std_rad": float(r.joint_noise_std_rad.sample(rng)),
            "wrench_noise_std_n": float(r.wrench_noise_std_n.sample(rng)),
            "image_noise_std": float(r.image_noise_std.sample(rng)),
            "control_latency_s": float(r.control_latency_s.sample(rng)),
            "frame_drop_probability": float(r.frame_drop_probability.sample(rng)),
        }
        self.apply(draws)
        sensors = SensorDraws(
            joint_noise_std_rad=draws["joint_noise_std_rad"],
            wrench_noise_std_n=draws["wrench_noise_std_n"],
            image_noise_std=draws["image_noise_std"],
            latency_substeps=int(round(draws["control_latency_s"] / timestep_s)),
            frame_drop_probability=draws["frame_drop_probability"],
        )
        return draws, sensors

    def apply(self, draws: dict[str, Any]) -> None:
        """Write recorded draws into the model, starting from the nominal values."""
        model = self.model
        self.restore()

        mass_scale = np.asarray(draws["object_mass_scale"])
        model.body_mass[self.object_bodies] *= mass_scale
        # A uniformly denser body keeps its shape, so its inertia scales like its mass.
        model.body_inertia[self.object_bodies] *= mass_scale[:, None]
        model.geom_friction[self.friction_geoms, 0] *= np.asarray(draws["friction_scale"])
        model.dof_damping[self.arm_dofs] *= np.asarray(draws["joint_damping_scale"])

        # A position servo has gain kp and bias (0, -kp, -kv): scale both terms together.
        gain = np.asarray(draws["actuator_gain_scale"])
        model.actuator_gainprm[self.arm_actuators, 0] *= gain
        model.actuator_biasprm[self.arm_actuators, 1:3] *= gain[:, None]

        light = draws["light_scale"]
        model.light_diffuse[:] *= light
        model.light_ambient[:] *= light
        model.vis.headlight.ambient[:] = self._headlight[0] * light
        model.vis.headlight.diffuse[:] = self._headlight[1] * light

        model.cam_pos[:] += np.asarray(draws["camera_position_offset_m"])
        model.cam_fovy[:] += np.asarray(draws["camera_fovy_offset_deg"])

        rgb = model.geom_rgba[self.color_geoms, :3] + np.asarray(draws["color_offset"])
        model.geom_rgba[self.color_geoms, :3] = np.clip(rgb, 0.0, 1.0)
        texture = draws["table_texture"]
        if texture:
            model.geom_matid[self.table_geom] = mujoco.mj_name2id(
                model, mujoco.mjtObj.mjOBJ_MATERIAL, texture
            )
            # A material's texture shows through the geom's colour, so the top turns white.
            model.geom_rgba[self.table_geom, :3] = 1.0

        # The constraint solver scales its softness by inverse inertias computed at compile
        # time. Left stale after a mass change, they let a dropped part gain energy at each
        # bounce until the simulation diverged (1 of 100 Panda sort episodes before this call).
        mujoco.mj_setConst(model, self._scratch)
