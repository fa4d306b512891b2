"""Scripted expert for `peg-in-hole`: grasp the peg, carry it over the hole, insert by feel.

Like the pick-place expert, its action is a deterministic function of what a policy observes
(joint positions, gripper opening, wrench, the reported peg pose), of fixed scene geometry
(the hole's position and height) and of a phase that advances on observed events. The reported
peg position carries 1.5 mm of noise, three times the hole's clearance, so the peg usually
lands on the block's top face beside the hole. The expert notices that as an axial force on the
wrist sensor and searches: pressing lightly, it slides the peg in steps across the hole until
the force vanishes because the peg dropped in, then pushes it down, opens and retreats.
"""

from __future__ import annotations

import enum
import logging
from typing import Any

import numpy as np

from robota.sim.expert import MAX_TRANSLATION_STEP_M, OPENED_M, REACHED_XY_M, REACHED_Z_M, _step_towards
from robota.sim.ik import SiteIK, top_down_rotation
from robota.sim.peg_in_hole import HOLE_HALF_WIDTH_M, PEG_HALF_HEIGHT_M, PEG_RADIUS_M
from robota.spec import OBS_PART_POSE, OBS_STATE, OBS_VELOCITY, OBS_WRENCH

logger = logging.getLogger(__name__)

# The fingers close along the tool x axis, which stays on the world x axis. The peg is round,
# so its yaw never matters.
TOOL_YAW_RAD = 0.0

# TCP heights above the table top (m). Grasped 15 mm below its top, the peg's bottom hangs
# GRASP_HEIGHT_M below the TCP and the fingertips stay 45 mm above the table.
HOVER_HEIGHT_M = 0.15
GRASP_HEIGHT_M = 2 * PEG_HALF_HEIGHT_M - 0.015
CARRY_HEIGHT_M = 0.14
# Peg bottom heights relative to the hole's top face (m).
LOWER_CLEARANCE_M = 0.005
# Below this the peg is inside the hole: the fingers never reach the block (30 mm of peg
# stick out below them at full depth).
ENTERED_DEPTH_M = 0.003
# Pushed to this depth, 2 mm above the hole's floor, the peg is released.
RELEASE_DEPTH_M = 0.026

# Slow moves near the block, per control step: 1 mm against the block's top face makes about
# 12 N on the UR5e's position servos, so a landing beside the hole cannot crush anything.
INSERT_STEP_M = 0.0015
PUSH_STEP_M = 0.003
# Between search offsets the peg hovers this far above the top face, so it moves sideways
# without dragging over the block (friction held it back while pressed).
SEARCH_LIFT_M = 0.0005

# The fingers centre the peg along x, so the grasp's error is mostly along y: the vision noise
# of 1.5 mm at the moment of the grasp. Along x the servos leave up to about 0.5 mm. The search
# visits a grid with a spacing under the hole's 1 mm capture window, out to 4.8 mm (3.2 standard
# deviations) along y and 0.8 mm along x, the likeliest offsets first.
SEARCH_SPACING_M = 0.8 * 2 * (HOLE_HALF_WIDTH_M - PEG_RADIUS_M)
SEARCH_OFFSETS_M = tuple(
    sorted(
        ((i * SEARCH_SPACING_M, j * SEARCH_SPACING_M) for i in (-1, 0, 1) for j in range(-6, 7)),
        key=lambda xy: (xy[0] / 0.5e-3) ** 2 + (xy[1] / 1.5e-3) ** 2,
    )
)

# Axial contact force (N) beyond the weight of the gripper and the peg: a landing, a jam or
# the hole's floor. Domain randomisation adds up to 0.5 N of noise and varies the peg's weight
# by 0.24 N, well below it.
CONTACT_FORCE_N = 4.0
GRAVITY_M_S2 = 9.81

# The arm has stopped at its waypoint when every joint moves slower than this (rad/s).
SETTLED_RAD_S = 0.02

# Gripper openings (m): the fingers stop at the peg's diameter (0.02 m, less the pads' sink).
GRASPED_M = 2 * PEG_RADIUS_M + 0.002
MISSED_M = 2 * PEG_RADIUS_M - 0.008


class Phase(enum.IntEnum):
    """Steps of the peg-in-hole script, in order."""

    APPROACH = 0
    DESCEND = 1
    CLOSE = 2
    LIFT = 3
    CARRY = 4
    LOWER = 5
    INSERT = 6
    SEARCH = 7
    PUSH = 8
    RELEASE = 9
    RETREAT = 10


# Phases in which the gripper is commanded closed, and those that hold the peg.
CLOSED_PHASES = frozenset(
    {Phase.CLOSE, Phase.LIFT, Phase.CARRY, Phase.LOWER, Phase.INSERT, Phase.SEARCH, Phase.PUSH}
)
HOLDING_PHASES = CLOSED_PHASES - {Phase.CLOSE}
AT_HOLE_PHASES = frozenset({Phase.INSERT, Phase.SEARCH, Phase.PUSH, Phase.RELEASE})


class PegInHoleExpert:
    """Scripted peg-in-hole: grasp, carry over the hole, lower, search by force, push, release.

    Args:
        env: A `robota/PegInHole-v0` environment, wrapped or not. The expert reads the model
            (for IK and the gripper's weight) and the hole's fixed position from it, and
            everything else from observations.
    """

    def __init__(self, env: Any):
        unwrapped = env.unwrapped
        model = unwrapped.model
        self.ik = SiteIK(model, unwrapped.index.tcp_site_name, unwrapped.index.arm_joint_names)
        self.num_joints = len(unwrapped.index.arm_joint_names)
        self.hole_center_m = np.asarray(unwrapped.hole_center_m, dtype=float)
        self.hole_top_m = float(unwrapped.hole_top_m)
        # The wrist sensor carries the gripper's and the peg's weight along the tool axis, which
        # points down: the sensor reads about -10.6 N while holding the peg in free air.
        gripper_body = model.site_bodyid[model.site(unwrapped.index.tcp_site_name).id]
        held_mass_kg = model.body_subtreemass[gripper_body] + model.body_mass[unwrapped.index.part_body]
        self.held_force_z_n = -GRAVITY_M_S2 * float(held_mass_kg)
        self.phase = Phase.APPROACH
        self.search_index = 0

    def reset(self) -> None:
        """Forget the previous episode."""
        self.phase = Phase.APPROACH
        self.search_index = 0

    def __call__(self, observation: dict[str, Any]) -> np.ndarray:
        """Return the action `(joints + 1,)` for one observation: joint targets (rad), gripper command."""
        state = np.asarray(observation[OBS_STATE], dtype=float)
        q, opening = state[: self.num_joints], float(state[self.num_joints])
        part_pose = np.asarray(observation[OBS_PART_POSE], dtype=float)
        contact_n = float(observation[OBS_WRENCH][2]) - self.held_force_z_n
        settled = bool(np.all(np.abs(observation[OBS_VELOCITY]) < SETTLED_RAD_S))
        tcp_position, _ = self.ik.forward(q)

        self._advance_phase(tcp_position, opening, part_pose, contact_n, settled)
        waypoint, max_step = self._waypoint(part_pose)
        if self.phase in AT_HOLE_PHASES:
            # Near the hole the target's x and y are exact and only z moves in bounded steps: a
            # step from the measured TCP would carry the joint noise sideways into the walls.
            position = waypoint.copy()
            position[2] = tcp_position[2] + np.clip(waypoint[2] - tcp_position[2], -max_step, max_step)
        else:
            position = _step_towards(tcp_position, waypoint, max_step)
        joints, _ = self.ik.solve(q, position, top_down_rotation(TOOL_YAW_RAD))

        gripper = 1.0 if self.phase in CLOSED_PHASES else 0.0
        return np.r_[joints, gripper].astype(np.float32)

    def _peg_depth_m(self, tcp: np.ndarray) -> float:
        """Depth of the held peg's bottom below the hole's top face, from the TCP height."""
        return self.hole_top_m - (tcp[2] - GRASP_HEIGHT_M)

    def _advance_phase(
        self, tcp: np.ndarray, opening: float, part_pose: np.ndarray, contact_n: float, settled: bool
    ) -> None:
        phase = self.phase
        part_xy_error = float(np.linalg.norm(tcp[:2] - part_pose[:2]))
        hole_xy_error = float(np.linalg.norm(tcp[:2] - self.hole_center_m))
        depth = self._peg_depth_m(tcp)
        touching = contact_n > CONTACT_FORCE_N

        if phase in HOLDING_PHASES and opening < MISSED_M:
            logger.debug("peg lost in phase %s (opening %.4f m); approaching again", phase.name, opening)
            phase = Phase.APPROACH
        elif phase == Phase.APPROACH:
            if part_xy_error < REACHED_XY_M and abs(tcp[2] - HOVER_HEIGHT_M) < 2 * REACHED_Z_M and opening > OPENED_M:
                phase = Phase.DESCEND
        elif phase == Phase.DESCEND:
            # Closing only once the arm is still fixes the peg's height in the grip, which
            # every later height in the script relies on.
            if tcp[2] < GRASP_HEIGHT_M + REACHED_Z_M / 2 and settled and part_xy_error < REACHED_XY_M:
                phase = Phase.CLOSE
        elif phase == Phase.CLOSE:
            if opening < MISSED_M:
                phase = Phase.APPROACH
            elif opening < GRASPED_M:
                phase = Phase.LIFT
        elif phase == Phase.LIFT:
            if tcp[2] > CARRY_HEIGHT_M - 3 * REACHED_Z_M:
                phase = Phase.CARRY
        elif phase == Phase.CARRY:
            if hole_xy_error < REACHED_XY_M / 4:
                phase = Phase.LOWER
        elif phase == Phase.LOWER:
            if depth > -LOWER_CLEARANCE_M - REACHED_Z_M / 4:
                phase = Phase.INSERT
        elif phase == Phase.INSERT:
            if depth > ENTERED_DEPTH_M:
                phase = Phase.PUSH
            elif touching:
                # The peg landed on the top face: lift it off and try the next search offset.
                phase = Phase.SEARCH
                self.search_index = (self.search_index + 1) % len(SEARCH_OFFSETS_M)
        elif phase == Phase.SEARCH:
            if not touching:
                phase = Phase.INSERT
        elif phase == Phase.PUSH:
            if depth > RELEASE_DEPTH_M - PUSH_STEP_M or (touching and depth > RELEASE_DEPTH_M / 2):
                phase = Phase.RELEASE
            elif touching:
                # Joint noise made the peg look inside while it still sat on the top face.
                phase = Phase.SEARCH
                self.search_index = (self.search_index + 1) % len(SEARCH_OFFSETS_M)
        elif phase == Phase.RELEASE:
            if opening > OPENED_M:
                phase = Phase.RETREAT

        if phase != self.phase:
            logger.debug("phase %s -> %s", self.phase.name, phase.name)
            self.phase = phase

    def _waypoint(self, part_pose: np.ndarray) -> tuple[np.ndarray, float]:
        """TCP position `(3,)` that the current phase heads for, and the largest step towards it."""
        part_x, part_y, _ = part_pose
        hole_x, hole_y = self.hole_center_m
        top = self.hole_top_m + GRASP_HEIGHT_M
        phase = self.phase
        if phase == Phase.APPROACH:
            return np.array([part_x, part_y, HOVER_HEIGHT_M]), MAX_TRANSLATION_STEP_M
        if phase in (Phase.DESCEND, Phase.CLOSE):
            return np.array([part_x, part_y, GRASP_HEIGHT_M]), MAX_TRANSLATION_STEP_M
        if phase == Phase.LIFT:
            return np.array([part_x, part_y, CARRY_HEIGHT_M]), MAX_TRANSLATION_STEP_M
        if phase == Phase.CARRY:
            return np.array([hole_x, hole_y, CARRY_HEIGHT_M]), MAX_TRANSLATION_STEP_M
        if phase == Phase.LOWER:
            return np.array([hole_x, hole_y, top + LOWER_CLEARANCE_M]), MAX_TRANSLATION_STEP_M / 2
        if phase == Phase.INSERT:
            offset_x, offset_y = SEARCH_OFFSETS_M[self.search_index]
            return np.array([hole_x + offset_x, hole_y + offset_y, top - RELEASE_DEPTH_M]), INSERT_STEP_M
        if phase == Phase.SEARCH:
            offset_x, offset_y = SEARCH_OFFSETS_M[self.search_index]
            return np.array([hole_x + offset_x, hole_y + offset_y, top + SEARCH_LIFT_M]), 2 * INSERT_STEP_M
        if phase in (Phase.PUSH, Phase.RELEASE):
            offset_x, offset_y = SEARCH_OFFSETS_M[self.search_index]
            return np.array([hole_x + offset_x, hole_y + offset_y, top - RELEASE_DEPTH_M]), PUSH_STEP_M
        return np.array([hole_x, hole_y, CARRY_HEIGHT_M]), MAX_TRANSLATION_STEP_M
