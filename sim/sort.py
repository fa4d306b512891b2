"""The `sort` task: put the part into the bin that the instruction names, red or blue.

Both bins are always there, so only the instruction tells a policy where the part goes. With
`reset(seed=s, options={"target": "red"})` and `{"target": "blue"}` the scene is the same and only
the instruction differs, which is how instruction following is measured.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from robota.errors import UnknownNameError
from robota.sim import twin
from robota.sim.expert import PickPlaceExpert
from robota.sim.pick_place import (
    BIN_INNER_HALF_SIZE_M,
    BIN_WALL_TOP_M,
    PART_HALF_SIZE_M,
    PART_X_RANGE_M,
    PART_Y_RANGE_M,
    PART_YAW_RANGE_RAD,
    SUCCESS_MAX_PART_SPEED_M_S,
)
from robota.sim.twin import TwinEnv, build_manual
from robota.spec import TASK

TARGETS = ("red", "blue")

# Instructions per language and target bin.
TARGET_INSTRUCTIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "en": {
        "red": ("Put the part in the red bin.", "Place the part into the red bin."),
        "blue": ("Put the part in the blue bin.", "Place the part into the blue bin."),
    },
    "de": {
        "red": ("Lege das Teil in den roten Behälter.",),
        "blue": ("Lege das Teil in den blauen Behälter.",),
    },
    "fr": {
        "red": ("Mets la pièce dans le bac rouge.",),
        "blue": ("Mets la pièce dans le bac bleu.",),
    },
    "es": {
        "red": ("Pon la pieza en la caja roja.",),
        "blue": ("Pon la pieza en la caja azul.",),
    },
    "it": {
        "red": ("Metti il pezzo nel contenitore rosso.",),
        "blue": ("Metti il pezzo nel contenitore blu.",),
    },
    "pl": {
        "red": ("Włóż część do czerwonego pojemnika.",),
        "blue": ("Włóż część do niebieskiego pojemnika.",),
    },
}
INSTRUCTIONS: dict[str, tuple[str, ...]] = {
    language: tuple(text for target in TARGETS for text in by_target[target])
    for language, by_target in TARGET_INSTRUCTIONS.items()
}
# Instruction text to the bin it names.
TARGET_OF_INSTRUCTION: dict[str, str] = {
    text: target
    for by_target in TARGET_INSTRUCTIONS.values()
    for target, texts in by_target.items()
    for text in texts
}
twin.check_instructions("sort", INSTRUCTIONS)


class SortEnv(TwinEnv):
    """Sort environment. `build_manual` replaces this line with the generated manual."""

    task_name = "sort"
    scene_xml = "sort.xml"
    instructions = INSTRUCTIONS
    reset_options = ("language", "target")

    def _index_task(self) -> None:
        self.bin_centers_m = {
            target: self.model.body_pos[self.model.body(f"bin_{target}").id, :2].copy()
            for target in TARGETS
        }
        self.target = TARGETS[0]

    @property
    def bin_center_m(self) -> np.ndarray:
        """Centre `(2,)` of the instructed bin's footprint, in metres."""
        return self.bin_centers_m[self.target]

    def _instruction_choices(self, options: dict[str, Any]) -> tuple[str, ...]:
        choices = super()._instruction_choices({"language": options.get("language")})
        target = options.get("target")
        if target is None:
            return choices
        if target not in TARGETS:
            raise UnknownNameError("sort target", str(target), TARGETS)
        return tuple(text for text in choices if TARGET_OF_INSTRUCTION[text] == target)

    def _reset_task(self) -> dict[str, Any]:
        self.target = TARGET_OF_INSTRUCTION[self.instruction]
        part_x = self.np_random.uniform(*PART_X_RANGE_M)
        part_y = self.np_random.uniform(*PART_Y_RANGE_M)
        part_yaw = self.np_random.uniform(*PART_YAW_RANGE_RAD)
        self._set_free_body(self.index.part_qpos, np.array([part_x, part_y, PART_HALF_SIZE_M]), part_yaw)
        return {
            "part_x_m": float(part_x),
            "part_y_m": float(part_y),
            "part_yaw_rad": float(part_yaw),
            "target": self.target,
        }

    def bin_holding_part(self) -> str | None:
        """Return the bin in which the part rests, released, or None."""
        position, _ = self.index.part_pose_world(self.data)
        speed = np.linalg.norm(self.data.qvel[self.index.part_qvel : self.index.part_qvel + 3])
        if position[2] >= BIN_WALL_TOP_M or speed >= SUCCESS_MAX_PART_SPEED_M_S:
            return None
        if self.index.part_touches_fingers(self.data):
            return None
        for target, center in self.bin_centers_m.items():
            if np.all(np.abs(position[:2] - center) < BIN_INNER_HALF_SIZE_M):
                return target
        return None

    def is_success(self) -> bool:
        """Return whether the part rests, released, in the bin that the instruction names."""
        return self.bin_holding_part() == self.target

    def _info(self) -> dict[str, Any]:
        return {**super()._info(), "target": self.target, "bin": self.bin_holding_part()}


class SortExpert(PickPlaceExpert):
    """The pick-and-place expert, heading for the bin that the observed instruction names."""

    def __init__(self, env: Any):
        super().__init__(env)
        self.bin_centers_m = dict(env.unwrapped.bin_centers_m)

    def __call__(self, observation: dict[str, Any]) -> np.ndarray:
        self.bin_center_m = self.bin_centers_m[TARGET_OF_INSTRUCTION[observation[TASK]]]
        return super().__call__(observation)


_DETAILS = f"""## Scene

A 4 cm box of 0.1 kg appears at x ~ U({PART_X_RANGE_M[0]}, {PART_X_RANGE_M[1]}) m,
y ~ U({PART_Y_RANGE_M[0]}, {PART_Y_RANGE_M[1]}) m and yaw ~ U(-pi/4, pi/4). Two open bins, each
0.20 m x 0.20 m inside with 0.07 m walls, stand at (0.22, 0.32) m (red) and (0.48, 0.32) m
(blue). The instruction names the target bin; `reset(options={{"target": "red"}})` (or `"blue"`)
picks it without changing the rest of the scene. `info["target"]` is the instructed bin and
`info["bin"]` the bin where the part rests now, or None.

## Reward, termination and truncation

Sparse: 1.0 on the step that succeeds, 0.0 otherwise. Success means the part centre lies inside
the instructed bin's inner footprint, below the wall tops, moving slower than
{SUCCESS_MAX_PART_SPEED_M_S} m/s, with no finger touching it. A part in the other bin is no
success and the episode goes on until truncation.

## Version history

- v0: first version."""

SortEnv.__doc__ = build_manual(
    SortEnv,
    "Pick a part off the table and drop it into the red or the blue bin, as instructed",
    _DETAILS,
    "robota/Sort-v0",
)
