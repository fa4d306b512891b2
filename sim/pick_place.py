"""The `pick-place` task: move a part from the table into an open bin.

The task's randomisation ranges, instructions and success criterion live here as module
constants; the environment class below documents the observation and action layout.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from robota.sim import twin
from robota.sim.twin import TwinEnv, build_manual

DEFAULT_MAX_EPISODE_STEPS = 120

# The scene's part and bin, in metres (see assets/pick_place.xml).
PART_HALF_SIZE_M = 0.02
BIN_INNER_HALF_SIZE_M = 0.1
BIN_FLOOR_TOP_M = 0.01
BIN_WALL_TOP_M = 0.07

# Drawn from the episode's seed in this order: instruction, part x, part y, part yaw, arm joint
# offsets. The box is symmetric under quarter turns, so +-pi/4 covers every yaw.
PART_X_RANGE_M = (0.35, 0.55)
PART_Y_RANGE_M = (-0.25, -0.05)
PART_YAW_RANGE_RAD = (-np.pi / 4, np.pi / 4)

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
    "fr": (
        "Mets la pièce dans le bac.",
        "Dépose la pièce dans le bac.",
    ),
    "es": (
        "Pon la pieza en la caja.",
        "Coloca la pieza en el contenedor.",
    ),
    "it": (
        "Metti il pezzo nel contenitore.",
        "Sposta il pezzo nella cassetta.",
    ),
    "pl": (
        "Włóż część do pojemnika.",
        "Przenieś detal do skrzynki.",
    ),
}
ALL_INSTRUCTIONS = tuple(text for texts in INSTRUCTIONS.values() for text in texts)
twin.check_instructions("pick-place", INSTRUCTIONS)


class PickPlaceEnv(TwinEnv):
    """Pick-and-place environment. `build_manual` replaces this line with the generated manual."""

    task_name = "pick-place"
    scene_xml = "pick_place.xml"
    instructions = INSTRUCTIONS
    default_max_episode_steps = DEFAULT_MAX_EPISODE_STEPS

    def _index_task(self) -> None:
        self.bin_body = self.model.body("bin").id
        self.index.bin_body = self.bin_body
        self.bin_center_m = self.model.body_pos[self.bin_body, :2].copy()

    def _reset_task(self) -> dict[str, Any]:
        part_x = self.np_random.uniform(*PART_X_RANGE_M)
        part_y = self.np_random.uniform(*PART_Y_RANGE_M)
        part_yaw = self.np_random.uniform(*PART_YAW_RANGE_RAD)
        self._set_free_body(self.index.part_qpos, np.array([part_x, part_y, PART_HALF_SIZE_M]), part_yaw)
        return {"part_x_m": float(part_x), "part_y_m": float(part_y), "part_yaw_rad": float(part_yaw)}

    def is_success(self) -> bool:
        """Return whether the part rests inside the bin, free of the fingers."""
        position, _ = self.index.part_pose_world(self.data)
        offset = np.abs(position[:2] - self.bin_center_m)
        inside = bool(np.all(offset < BIN_INNER_HALF_SIZE_M))
        low = position[2] < BIN_WALL_TOP_M
        speed = np.linalg.norm(self.data.qvel[self.index.part_qvel : self.index.part_qvel + 3])
        resting = speed < SUCCESS_MAX_PART_SPEED_M_S
        return inside and low and resting and not self.index.part_touches_fingers(self.data)


_DETAILS = f"""## Scene

A 4 cm box of 0.1 kg appears at x ~ U({PART_X_RANGE_M[0]}, {PART_X_RANGE_M[1]}) m,
y ~ U({PART_Y_RANGE_M[0]}, {PART_Y_RANGE_M[1]}) m and yaw ~ U(-pi/4, pi/4). The bin's inner
footprint is 0.20 m x 0.20 m around (0.35, 0.32) m, its walls 0.07 m high.

## Reward, termination and truncation

Sparse: 1.0 on the step that succeeds, 0.0 otherwise. Success means the part centre lies
inside the bin's inner footprint, below the wall tops, moving slower than
{SUCCESS_MAX_PART_SPEED_M_S} m/s, with no finger touching it. `terminated` is True on success;
`truncated` is True once `max_episode_steps` steps have passed without success.
`info["is_success"]` repeats the success flag.

## Version history

- v0: first version."""

PickPlaceEnv.__doc__ = build_manual(
    PickPlaceEnv,
    "Pick a part off the table and drop it into an open bin",
    _DETAILS,
    "robota/PickPlace-v0",
)
