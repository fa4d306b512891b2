"""Scripted expert for `machine-tending`: open the door, load the fixture, close the door.

Like the pick-place expert (`robota.sim.expert`), its action depends only on what a policy
observes (joint positions, gripper opening, the reported part pose), on the machine's fixed
geometry read once at construction, and on a phase that advances on observed events. Each step
it moves the tool centre point (TCP) a bounded distance towards the phase's waypoint and returns
the IK solution as absolute joint targets.

The door's position is not observed, so the expert tracks it from its own actions. It assumes
the door starts near closed: a start opening of up to about 20 mm still leaves the handle
between the open fingers at the closed position. While the fingers hold the handle (the
observed opening stays near the handle's thickness), the handle sits between the fingers, so
the door is where the TCP is. The expert remembers the handle's position from the last step it
held it and comes back there to close the door. Fingers that close on nothing mean a missed
handle: the expert opens and grasps again at its latest estimate.
"""

from __future__ import annotations

import enum
import logging
from typing import Any

import numpy as np

from robota.sim.expert import (
    CARRY_HEIGHT_M,
    GRASP_HEIGHT_M,
    GRASPED_M,
    HOVER_HEIGHT_M,
    MAX_ROTATION_STEP_RAD,
    MAX_TRANSLATION_STEP_M,
    MISSED_M,
    OPENED_M,
    REACHED_XY_M,
    REACHED_YAW_RAD,
    REACHED_Z_M,
    _step_towards,
    _wrap,
)
from robota.sim.ik import SiteIK, top_down_rotation
from robota.sim.machine_tending import (
    DOOR_TRAVEL_M,
    HANDLE_THICKNESS_M,
    HANDLE_TOP_M,
    NEST_FLOOR_TOP_M,
    PART_HALF_SIZE_M,
)
from robota.spec import OBS_PART_POSE, OBS_STATE

logger = logging.getLogger(__name__)

# TCP heights above the table top (m). The finger pads reach 0.02 m below the TCP and 0.04 m
# above it: at HANDLE_GRASP_HEIGHT_M they hold the handle's upper 35 mm and stay 14 mm above the
# door plate. At DOOR_HOVER_HEIGHT_M the pads clear the handle's top by 39 mm.
HANDLE_GRASP_HEIGHT_M = 0.145
DOOR_HOVER_HEIGHT_M = 0.22
# The part is held with its centre 0.01 m below the TCP; it is let go 3 mm above the nest floor.
PLACE_HEIGHT_M = NEST_FLOOR_TOP_M + PART_HALF_SIZE_M + (GRASP_HEIGHT_M - PART_HALF_SIZE_M) + 0.003
# Handle yaw: the fingers close along the slide (world y). Placing yaw: the fingers close along
# world x, the roof opening's 0.16 m leaving 21 mm beside each open finger.
HANDLE_YAW_RAD = np.pi / 2
PLACE_YAW_RAD = 0.0

# Handle positions along y that the slides head for: short of the open stop by 5 mm, so the
# door is not driven into it, and 4 mm past the closed stop, so the door closes fully.
OPEN_MARGIN_M = 0.005
CLOSE_OVERSHOOT_M = 0.004
# Slower than free motion (0.3 m/s at 10 Hz), so the damped door follows the fingers.
MAX_SLIDE_STEP_M = 0.03
SLIDE_REACHED_M = 0.005

# The fingers stop at the handle's thickness; below HANDLE_MISSED_M they closed on nothing.
HANDLE_GRASPED_M = HANDLE_THICKNESS_M + 0.004
HANDLE_MISSED_M = HANDLE_THICKNESS_M - 0.008
NEST_REACHED_XY_M = 0.004
# Largest correction of the placing waypoint by the part's observed offset in the fingers.
MAX_GRASP_OFFSET_M = 0.02


class Phase(enum.IntEnum):
    """Steps of the machine-tending script, in order."""

    OPEN_APPROACH = 0
    OPEN_DESCEND = 1
    OPEN_GRASP = 2
    OPEN_SLIDE = 3
    OPEN_RELEASE = 4
    OPEN_LIFT = 5
    APPROACH = 6
    DESCEND = 7
    CLOSE = 8
    LIFT = 9
    CARRY = 10
    LOWER = 11
    RELEASE = 12
    RETREAT = 13
    SHUT_APPROACH = 14
    SHUT_DESCEND = 15
    SHUT_GRASP = 16
    SHUT_SLIDE = 17
    SHUT_RELEASE = 18
    SHUT_LIFT = 19


# Each door sequence: approach, descend, grasp, slide, release, lift, then the next phase.
OPEN_PHASES = (Phase.OPEN_APPROACH, Phase.OPEN_DESCEND, Phase.OPEN_GRASP, Phase.OPEN_SLIDE,
               Phase.OPEN_RELEASE, Phase.OPEN_LIFT)
SHUT_PHASES = (Phase.SHUT_APPROACH, Phase.SHUT_DESCEND, Phase.SHUT_GRASP, Phase.SHUT_SLIDE,
               Phase.SHUT_RELEASE, Phase.SHUT_LIFT)
DOOR_STEPS = ("approach", "descend", "grasp", "slide", "release", "lift")
# Phases in which the gripper is commanded closed.
CLOSED_PHASES = frozenset({
    Phase.OPEN_GRASP, Phase.OPEN_SLIDE, Phase.CLOSE, Phase.LIFT, Phase.CARRY, Phase.LOWER,
    Phase.SHUT_GRASP, Phase.SHUT_SLIDE,
})


class MachineTendingExpert:
    """Scripted machine tending: slide the door open, pick the part, place it, slide the door shut.

    Args:
        env: A `robota/MachineTending-v0` environment, wrapped or not. The expert reads the model
            (for IK), the nest's position and the handle's closed position from it, and everything
            else from observations.
    """

    def __init__(self, env: Any):
        unwrapped = env.unwrapped
        self.ik = SiteIK(unwrapped.model, unwrapped.index.tcp_site_name, unwrapped.index.arm_joint_names)
        self.num_joints = len(unwrapped.index.arm_joint_names)
        self.nest_center_m = np.asarray(unwrapped.nest_center_m, dtype=float)
        self.handle_closed_m = np.asarray(unwrapped.handle_closed_m[:2], dtype=float)
        self.open_handle_y_m = self.handle_closed_m[1] + DOOR_TRAVEL_M - OPEN_MARGIN_M
        self.shut_handle_y_m = self.handle_closed_m[1] - CLOSE_OVERSHOOT_M
        self.reset()

    def reset(self) -> None:
        """Forget the previous episode: the door is taken to be closed."""
        self.phase = Phase.OPEN_APPROACH
        self.handle_y_m = float(self.handle_closed_m[1])

    def __call__(self, observation: dict[str, Any]) -> np.ndarray:
        """Return the action `(joints + 1,)` for one observation: joint targets (rad), gripper command."""
        state = np.asarray(observation[OBS_STATE], dtype=float)
        q, opening = state[: self.num_joints], float(state[self.num_joints])
        part_pose = np.asarray(observation[OBS_PART_POSE], dtype=float)
        tcp_position, tcp_rotation = self.ik.forward(q)
        tcp_yaw = float(np.arctan2(tcp_rotation[1, 0], tcp_rotation[0, 0]))

        self._advance_phase(tcp_position, tcp_yaw, opening, part_pose)
        waypoint, yaw = self._waypoint(tcp_position, tcp_yaw, part_pose)
        max_step = MAX_SLIDE_STEP_M if self.phase in (Phase.OPEN_SLIDE, Phase.SHUT_SLIDE) else MAX_TRANSLATION_STEP_M
        position = _step_towards(tcp_position, waypoint, max_step)
        yaw = tcp_yaw + float(np.clip(_wrap(yaw - tcp_yaw), -MAX_ROTATION_STEP_RAD, MAX_ROTATION_STEP_RAD))
        joints, _ = self.ik.solve(q, position, top_down_rotation(yaw))

        gripper = 1.0 if self.phase in CLOSED_PHASES else 0.0
        return np.r_[joints, gripper].astype(np.float32)

    # Phase transitions.

    def _advance_phase(
        self, tcp: np.ndarray, tcp_yaw: float, opening: float, part_pose: np.ndarray
    ) -> None:
        if self.phase in OPEN_PHASES:
            phase = self._advance_door(OPEN_PHASES, Phase.APPROACH, self.open_handle_y_m, tcp, tcp_yaw, opening)
        elif self.phase in SHUT_PHASES:
            phase = self._advance_door(SHUT_PHASES, Phase.SHUT_LIFT, self.shut_handle_y_m, tcp, tcp_yaw, opening)
        else:
            phase = self._advance_pick(tcp, tcp_yaw, opening, part_pose)
        if phase != self.phase:
            logger.debug("phase %s -> %s (handle at y %.3f m)", self.phase.name, phase.name, self.handle_y_m)
            self.phase = phase

    def _advance_door(
        self,
        phases: tuple[Phase, ...],
        next_phase: Phase,
        goal_y_m: float,
        tcp: np.ndarray,
        tcp_yaw: float,
        opening: float,
    ) -> Phase:
        """Next phase of one door sequence, `phases` in `DOOR_STEPS` order, then `next_phase`."""
        step = DOOR_STEPS[phases.index(self.phase)]
        approach, descend, grasp, slide, release, lift = phases
        handle_xy_error = float(np.linalg.norm(tcp[:2] - (self.handle_closed_m[0], self.handle_y_m)))

        if step in ("grasp", "slide") and opening < HANDLE_MISSED_M:
            logger.debug("handle missed in phase %s (opening %.4f m)", self.phase.name, opening)
            return approach
        if step == "approach":
            if (
                handle_xy_error < REACHED_XY_M
                and abs(tcp[2] - DOOR_HOVER_HEIGHT_M) < 2 * REACHED_Z_M
                and abs(_wrap(HANDLE_YAW_RAD - tcp_yaw)) < REACHED_YAW_RAD
                and opening > OPENED_M
            ):
                return descend
        elif step == "descend":
            if tcp[2] < HANDLE_GRASP_HEIGHT_M + REACHED_Z_M and handle_xy_error < REACHED_XY_M:
                return grasp
        elif step == "grasp":
            if opening < HANDLE_GRASPED_M:
                self.handle_y_m = float(tcp[1])
                return slide
        elif step == "slide":
            # Held between the fingers, the handle is where the TCP is.
            self.handle_y_m = float(tcp[1])
            if abs(tcp[1] - goal_y_m) < SLIDE_REACHED_M:
                return release
        elif step == "release":
            if opening > OPENED_M:
                return lift
        elif tcp[2] > DOOR_HOVER_HEIGHT_M - 2 * REACHED_Z_M:
            return next_phase
        return self.phase

    def _advance_pick(
        self, tcp: np.ndarray, tcp_yaw: float, opening: float, part_pose: np.ndarray
    ) -> Phase:
        phase = self.phase
        part_xy_error = float(np.linalg.norm(tcp[:2] - part_pose[:2]))
        place_xy_error = float(np.linalg.norm(tcp[:2] - self._place_xy(tcp, part_pose)))

        if phase in (Phase.LIFT, Phase.CARRY, Phase.LOWER) and opening < MISSED_M:
            logger.debug("part lost in phase %s (opening %.4f m); approaching again", phase.name, opening)
            return Phase.APPROACH
        if phase == Phase.APPROACH:
            if (
                part_xy_error < REACHED_XY_M
                and abs(tcp[2] - HOVER_HEIGHT_M) < 2 * REACHED_Z_M
                and abs(_wrap(_grasp_yaw(part_pose) - tcp_yaw)) < REACHED_YAW_RAD
                and opening > OPENED_M
            ):
                return Phase.DESCEND
        elif phase == Phase.DESCEND:
            if tcp[2] < GRASP_HEIGHT_M + REACHED_Z_M and part_xy_error < REACHED_XY_M:
                return Phase.CLOSE
        elif phase == Phase.CLOSE:
            if opening < MISSED_M:
                return Phase.APPROACH
            if opening < GRASPED_M:
                return Phase.LIFT
        elif phase == Phase.LIFT:
            if tcp[2] > CARRY_HEIGHT_M - 3 * REACHED_Z_M:
                return Phase.CARRY
        elif phase == Phase.CARRY:
            if place_xy_error < NEST_REACHED_XY_M and abs(_wrap(PLACE_YAW_RAD - tcp_yaw)) < REACHED_YAW_RAD:
                return Phase.LOWER
        elif phase == Phase.LOWER:
            if tcp[2] < PLACE_HEIGHT_M + REACHED_Z_M:
                return Phase.RELEASE
        elif phase == Phase.RELEASE:
            if opening > OPENED_M:
                return Phase.RETREAT
        elif phase == Phase.RETREAT:
            if tcp[2] > CARRY_HEIGHT_M - 3 * REACHED_Z_M:
                return Phase.SHUT_APPROACH
        return phase

    # Waypoints.

    def _waypoint(
        self, tcp: np.ndarray, tcp_yaw: float, part_pose: np.ndarray
    ) -> tuple[np.ndarray, float]:
        """TCP position `(3,)` and yaw that the current phase heads for."""
        phase = self.phase
        if phase in OPEN_PHASES:
            return self._door_waypoint(OPEN_PHASES, self.open_handle_y_m, tcp)
        if phase in SHUT_PHASES:
            return self._door_waypoint(SHUT_PHASES, self.shut_handle_y_m, tcp)

        part_x, part_y, _ = part_pose
        if phase == Phase.APPROACH:
            return np.array([part_x, part_y, HOVER_HEIGHT_M]), _grasp_yaw(part_pose)
        if phase in (Phase.DESCEND, Phase.CLOSE):
            return np.array([part_x, part_y, GRASP_HEIGHT_M]), _grasp_yaw(part_pose)
        if phase == Phase.LIFT:
            return np.array([tcp[0], tcp[1], CARRY_HEIGHT_M]), tcp_yaw
        place_x, place_y = self._place_xy(tcp, part_pose)
        if phase == Phase.CARRY:
            return np.array([place_x, place_y, CARRY_HEIGHT_M]), PLACE_YAW_RAD
        if phase in (Phase.LOWER, Phase.RELEASE):
            return np.array([place_x, place_y, PLACE_HEIGHT_M]), PLACE_YAW_RAD
        return np.array([tcp[0], tcp[1], CARRY_HEIGHT_M]), PLACE_YAW_RAD

    def _door_waypoint(
        self, phases: tuple[Phase, ...], goal_y_m: float, tcp: np.ndarray
    ) -> tuple[np.ndarray, float]:
        step = DOOR_STEPS[phases.index(self.phase)]
        handle_x = self.handle_closed_m[0]
        if step == "approach":
            return np.array([handle_x, self.handle_y_m, DOOR_HOVER_HEIGHT_M]), HANDLE_YAW_RAD
        if step in ("descend", "grasp"):
            return np.array([handle_x, self.handle_y_m, HANDLE_GRASP_HEIGHT_M]), HANDLE_YAW_RAD
        if step == "slide":
            return np.array([handle_x, goal_y_m, HANDLE_GRASP_HEIGHT_M]), HANDLE_YAW_RAD
        if step == "release":
            return tcp.copy(), HANDLE_YAW_RAD
        return np.array([tcp[0], tcp[1], DOOR_HOVER_HEIGHT_M]), HANDLE_YAW_RAD

    def _place_xy(self, tcp: np.ndarray, part_pose: np.ndarray) -> np.ndarray:
        """TCP position over the nest that centres the held part on it, from its observed offset."""
        if self.phase not in (Phase.CARRY, Phase.LOWER, Phase.RELEASE):
            return self.nest_center_m
        offset = np.clip(tcp[:2] - part_pose[:2], -MAX_GRASP_OFFSET_M, MAX_GRASP_OFFSET_M)
        return self.nest_center_m + offset


def _grasp_yaw(part_pose: np.ndarray) -> float:
    """Grasp yaw for the part: its observed yaw folded into [-pi/4, pi/4) by the box's symmetry."""
    return float((part_pose[2] + np.pi / 4) % (np.pi / 2) - np.pi / 4)
