"""The `conveyor` task: pick a part off a moving belt and drop it into a bin beside the belt.

The belt is driven in physics, not by moving the part. After every physics step a belt body on
a slide joint gets the belt speed as its joint velocity and is put back to its start. Its
surface stays in place, but the contact solver computes friction against a moving surface.
Friction carries the part, so it can slip, stop against the fingers and fall off the belt's end
into a catch tray, which ends the episode without success.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from robota.sim import twin
from robota.sim.pick_place import BIN_INNER_HALF_SIZE_M, BIN_WALL_TOP_M, SUCCESS_MAX_PART_SPEED_M_S
from robota.sim.twin import TwinEnv, build_manual

# An unpicked part is lost 9.9 to 19.0 s after the reset (measured at the extremes of the part
# and speed ranges), so every episode without a pick ends before truncation.
DEFAULT_MAX_EPISODE_STEPS = 200

# The scene's geometry in metres (see assets/conveyor.xml). The belt runs along +y.
PART_HALF_SIZE_M = 0.02
BELT_TOP_M = 0.04
BELT_X_M = 0.45
BELT_START_Y_M = -0.32
BELT_END_Y_M = 0.30

# Drawn from the episode's seed in this order: instruction, belt speed, part y along the belt,
# part yaw, arm joint offsets. The box is symmetric under quarter turns, so +-pi/4 covers every
# yaw. The part starts at the belt's centre line, upstream of the arm's start pose.
BELT_SPEED_RANGE_M_S = (0.03, 0.05)
PART_Y_RANGE_M = (-0.26, -0.18)
PART_YAW_RANGE_RAD = (-np.pi / 4, np.pi / 4)

INSTRUCTIONS: dict[str, tuple[str, ...]] = {
    "en": (
        "Pick the part off the conveyor and put it in the bin.",
        "Take the moving part from the belt and drop it in the bin.",
        "Grab the part on the conveyor and place it in the bin.",
    ),
    "de": (
        "Nimm das Teil vom Förderband und lege es in den Behälter.",
        "Greif das Teil auf dem Band und lege es in die Kiste.",
    ),
    "fr": (
        "Prends la pièce sur le convoyeur et mets-la dans le bac.",
        "Saisis la pièce sur le tapis et dépose-la dans le bac.",
    ),
    "es": (
        "Toma la pieza de la cinta y ponla en la caja.",
        "Coge la pieza del transportador y déjala en la caja.",
    ),
    "it": (
        "Prendi il pezzo dal nastro e mettilo nel contenitore.",
        "Afferra il pezzo sul nastro e posalo nella cassetta.",
    ),
    "pl": (
        "Zdejmij część z taśmy i włóż ją do pojemnika.",
        "Chwyć detal z przenośnika i odłóż go do skrzynki.",
    ),
}
ALL_INSTRUCTIONS = tuple(text for texts in INSTRUCTIONS.values() for text in texts)
twin.check_instructions("conveyor", INSTRUCTIONS)


class ConveyorPickEnv(TwinEnv):
    """Conveyor picking environment. `build_manual` replaces this line with the generated manual."""

    task_name = "conveyor"
    scene_xml = "conveyor.xml"
    instructions = INSTRUCTIONS
    default_max_episode_steps = DEFAULT_MAX_EPISODE_STEPS

    def _index_task(self) -> None:
        belt_joint = self.model.joint("belt")
        self.belt_qpos = int(belt_joint.qposadr[0])
        self.belt_qvel = int(belt_joint.dofadr[0])
        # Unit vector of the belt's travel in the world frame.
        self.belt_direction = self.model.jnt_axis[belt_joint.id].copy()
        self.belt_top_m = BELT_TOP_M
        self.belt_end_y_m = BELT_END_Y_M
        self.belt_speed_m_s = float(np.mean(BELT_SPEED_RANGE_M_S))
        self.bin_center_m = self.model.body_pos[self.model.body("bin").id, :2].copy()

    def _reset_task(self) -> dict[str, Any]:
        self.belt_speed_m_s = float(self.np_random.uniform(*BELT_SPEED_RANGE_M_S))
        part_y = self.np_random.uniform(*PART_Y_RANGE_M)
        part_yaw = self.np_random.uniform(*PART_YAW_RANGE_RAD)
        position = np.array([BELT_X_M, part_y, BELT_TOP_M + PART_HALF_SIZE_M])
        self._set_free_body(self.index.part_qpos, position, part_yaw)

        # The part has been riding the belt before the episode starts.
        part_qvel = self.index.part_qvel
        self.data.qvel[part_qvel : part_qvel + 3] = self.belt_speed_m_s * self.belt_direction
        self._drive_belt()
        return {
            "belt_speed_m_s": self.belt_speed_m_s,
            "part_y_m": float(part_y),
            "part_yaw_rad": float(part_yaw),
        }

    def _after_physics_step(self) -> None:
        self._drive_belt()

    def _drive_belt(self) -> None:
        # Putting the belt back each step keeps its surface in place. The contact solver computes
        # friction from the joint velocity, so the part rides along at the belt speed.
        self.data.qpos[self.belt_qpos] = 0.0
        self.data.qvel[self.belt_qvel] = self.belt_speed_m_s

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        """Apply one action; the episode also terminates, without success, once the part is lost."""
        observation, reward, terminated, truncated, info = super().step(action)
        if info["part_lost"]:
            terminated, truncated = True, False
        return observation, reward, terminated, truncated, info

    def is_success(self) -> bool:
        """Return whether the part rests inside the bin, free of the fingers."""
        position, _ = self.index.part_pose_world(self.data)
        offset = np.abs(position[:2] - self.bin_center_m)
        inside = bool(np.all(offset < BIN_INNER_HALF_SIZE_M))
        low = position[2] < BIN_WALL_TOP_M
        speed = np.linalg.norm(self.data.qvel[self.index.part_qvel : self.index.part_qvel + 3])
        resting = speed < SUCCESS_MAX_PART_SPEED_M_S
        return inside and low and resting and not self.index.part_touches_fingers(self.data)

    def part_lost(self) -> bool:
        """Return whether the part has fallen off the belt's downstream end or off the table."""
        position, _ = self.index.part_pose_world(self.data)
        off_belt_end = position[1] > self.belt_end_y_m and position[2] < self.belt_top_m
        off_table = position[2] < 0.0
        return bool(off_belt_end or off_table)

    def _info(self) -> dict[str, Any]:
        info = super()._info()
        info["part_lost"] = self.part_lost()
        return info


_DETAILS = f"""## Scene

A belt conveyor runs along +y at x = {BELT_X_M} m, 0.10 m wide, from y = {BELT_START_Y_M} m to
y = {BELT_END_Y_M} m, its surface {BELT_TOP_M} m above the table. Past its end a catch tray
takes parts that are not picked. The bin beside the belt has an inner footprint of
0.20 m x 0.20 m around (0.22, 0.20) m and walls 0.07 m high.

Each episode draws the belt speed ~ U({BELT_SPEED_RANGE_M_S[0]}, {BELT_SPEED_RANGE_M_S[1]}) m/s
and places a 4 cm box of 0.1 kg on the belt's centre line at
y ~ U({PART_Y_RANGE_M[0]}, {PART_Y_RANGE_M[1]}) m with yaw ~ U(-pi/4, pi/4), already moving
at the belt speed. `info["randomization"]` records them as `belt_speed_m_s`, `part_y_m` and
`part_yaw_rad`. Observations do not include the belt speed; a policy infers it from successive
part poses.

The belt is a body on a slide joint whose velocity is set to the belt speed and whose position
is put back after every physics step. Its surface stays in place, but the contact solver sees it
moving, so friction carries the part: the part can slip, stop against the fingers and fall off
the end.

## Reward, termination and truncation

Sparse: 1.0 on the step that succeeds, 0.0 otherwise. Success means the part centre lies
inside the bin's inner footprint, below the wall tops, moving slower than
{SUCCESS_MAX_PART_SPEED_M_S} m/s, with no finger touching it. `terminated` is True on success,
and also once the part is lost: its centre is past the belt's end (y > {BELT_END_Y_M} m) and
below the belt surface, or below the table top. An unpicked part is lost 9.9 to 19.0 s after
the reset, within the default {DEFAULT_MAX_EPISODE_STEPS} steps. `truncated` is True once
`max_episode_steps` steps have passed otherwise. `info["is_success"]` repeats the success flag
and `info["part_lost"]` flags a lost part.

## Version history

- v0: first version."""

ConveyorPickEnv.__doc__ = build_manual(
    ConveyorPickEnv,
    "Pick a part off a moving conveyor belt and drop it into a bin beside the belt",
    _DETAILS,
    "robota/ConveyorPick-v0",
)
