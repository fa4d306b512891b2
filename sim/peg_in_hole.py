"""The `peg-in-hole` task: insert a cylindrical peg into a tight square hole in a fixed block.

The scene's geometry, the task's draws and its success criterion live here as module constants;
the environment class below documents the observation and action layout.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from robota.sim import twin
from robota.sim.twin import TwinEnv, build_manual

DEFAULT_MAX_EPISODE_STEPS = 200

# The scene's peg and block, in metres (see assets/peg_in_hole.xml). The hole is a square of
# half-width 10.5 mm around a peg of radius 10 mm: 0.5 mm of clearance per side.
PEG_RADIUS_M = 0.01
PEG_HALF_HEIGHT_M = 0.04
HOLE_HALF_WIDTH_M = 0.0105
HOLE_TOP_M = 0.03
HOLE_DEPTH_M = 0.03

# Drawn from the episode's seed in this order: instruction, peg x, peg y, peg yaw, arm joint
# offsets. The peg is round, so its yaw only changes what the vision system reports.
PEG_X_RANGE_M = (0.35, 0.55)
PEG_Y_RANGE_M = (-0.25, -0.05)
PEG_YAW_RANGE_RAD = (-np.pi, np.pi)

# Success: the peg's bottom is at least this far below the hole's top face, its axis inside
# the hole, and no finger touches it.
SUCCESS_MIN_DEPTH_M = 0.02

INSTRUCTIONS: dict[str, tuple[str, ...]] = {
    "en": (
        "Insert the peg into the hole.",
        "Put the peg in the hole of the block.",
        "Pick up the peg and insert it into the hole.",
    ),
    "de": (
        "Stecke den Stift in die Bohrung.",
        "Setze den Bolzen in das Loch im Block.",
    ),
    "fr": (
        "Insère la goupille dans le trou.",
        "Mets la cheville dans le trou du bloc.",
    ),
    "es": (
        "Inserta la clavija en el agujero.",
        "Mete el perno en el orificio del bloque.",
    ),
    "it": (
        "Inserisci il perno nel foro.",
        "Metti il perno nel foro del blocco.",
    ),
    "pl": (
        "Włóż kołek do otworu.",
        "Wsuń trzpień w otwór bloku.",
    ),
}
twin.check_instructions("peg-in-hole", INSTRUCTIONS)


class PegInHoleEnv(TwinEnv):
    """Peg-in-hole environment. `build_manual` replaces this line with the generated manual."""

    task_name = "peg-in-hole"
    scene_xml = "peg_in_hole.xml"
    part_body = "peg"
    object_bodies = ("peg",)
    instructions = INSTRUCTIONS
    default_max_episode_steps = DEFAULT_MAX_EPISODE_STEPS

    def _index_task(self) -> None:
        hole_top = self.model.site("hole_top").id
        # The block is fixed to the world, so the site's compiled position is its world position.
        self.hole_center_m = self.model.site_pos[hole_top, :2] + self.model.body_pos[self.model.body("block").id, :2]
        self.hole_top_m = float(self.model.site_pos[hole_top, 2])

    def _reset_task(self) -> dict[str, Any]:
        peg_x = self.np_random.uniform(*PEG_X_RANGE_M)
        peg_y = self.np_random.uniform(*PEG_Y_RANGE_M)
        peg_yaw = self.np_random.uniform(*PEG_YAW_RANGE_RAD)
        self._set_free_body(self.index.part_qpos, np.array([peg_x, peg_y, PEG_HALF_HEIGHT_M]), peg_yaw)
        return {"peg_x_m": float(peg_x), "peg_y_m": float(peg_y), "peg_yaw_rad": float(peg_yaw)}

    def inserted_depth_m(self) -> float:
        """Depth of the peg's bottom below the hole's top face (m); negative above it or outside."""
        position = self.data.xpos[self.index.part_body]
        axis = self.data.xmat[self.index.part_body].reshape(3, 3)[:, 2]
        bottom = position - PEG_HALF_HEIGHT_M * axis * np.sign(axis[2] or 1.0)
        offset = np.abs(bottom[:2] - self.hole_center_m)
        if np.any(offset > HOLE_HALF_WIDTH_M):
            return min(0.0, self.hole_top_m - float(bottom[2]))
        return self.hole_top_m - float(bottom[2])

    def is_success(self) -> bool:
        """Return whether the peg sits at least `SUCCESS_MIN_DEPTH_M` deep, free of the fingers."""
        deep = self.inserted_depth_m() >= SUCCESS_MIN_DEPTH_M
        return deep and not self.index.part_touches_fingers(self.data)

    def _info(self) -> dict[str, Any]:
        info = super()._info()
        info["inserted_depth_m"] = self.inserted_depth_m()
        return info


_DETAILS = f"""## Scene

A steel-like cylindrical peg, 20 mm across, 80 mm tall and 0.08 kg, stands on the table at
x ~ U({PEG_X_RANGE_M[0]}, {PEG_X_RANGE_M[1]}) m, y ~ U({PEG_Y_RANGE_M[0]}, {PEG_Y_RANGE_M[1]}) m
and yaw ~ U(-pi, pi) (the peg is round, so the yaw only changes the reported pose). A fixed
80 mm x 80 mm x 30 mm block at (0.35, 0.30) m has a square hole 21 mm wide and
{HOLE_DEPTH_M * 1000:.0f} mm deep through to the table: 0.5 mm of clearance per side, a third of
the vision system's noise. The hole has no chamfer, so a peg that lands 1 mm or more beside the
centre rests on the top face until it is moved; the wrist force/torque sensor shows the landing.

## Reward, termination and truncation

Sparse: 1.0 on the step that succeeds, 0.0 otherwise. Success means the peg's bottom lies at
least {SUCCESS_MIN_DEPTH_M * 1000:.0f} mm below the hole's top face, inside the hole's footprint,
with no finger touching the peg. `info["inserted_depth_m"]` reports that depth on every step
(0 or less while the peg is above the top face or beside the hole). `terminated` is True on
success; `truncated` is True once `max_episode_steps` steps have passed without success.
`info["is_success"]` repeats the success flag.

## Version history

- v0: first version."""

PegInHoleEnv.__doc__ = build_manual(
    PegInHoleEnv,
    "Pick up a peg and insert it into a hole with 0.5 mm of clearance",
    _DETAILS,
    "robota/PegInHole-v0",
)
