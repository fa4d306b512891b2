"""Scripted expert for `pick-place`: waypoints in Cartesian space, solved by IK each step.

The expert is written to be imitated. Its action is a deterministic function of what a policy
observes (joint positions, gripper opening, the reported part pose) and of a phase. The phase
advances only on observed events, such as the tool reaching a waypoint or the fingers closing on
the part, and never after a timed wait. Each step it moves the tool centre point (TCP) a
bounded distance from where the observed joints put it towards the phase's waypoint, and
returns the IK solution as absolute joint targets.
"""

from __future__ import annotations

import enum
import importlib
import logging
from typing import Any

import numpy as np

from robota.errors import UnknownNameError
from robota.sim.ik import SiteIK, top_down_rotation
from robota.spec import OBS_PART_POSE, OBS_STATE

logger = logging.getLogger(__name__)

# TCP heights above the table top (m). The part's centre is 0.02 m up, and grasping 0.01 m above
# it keeps the fingertips 0.01 m off the table.
HOVER_HEIGHT_M = 0.10
GRASP_HEIGHT_M = 0.03
CARRY_HEIGHT_M = 0.17
# Held 0.01 m below the TCP, the part's underside clears the bin walls (0.07 m) by 0.03 m here.
RELEASE_HEIGHT_M = 0.13

# Largest TCP move per control step: 0.6 m/s and 3 rad/s at 10 Hz.
MAX_TRANSLATION_STEP_M = 0.06
MAX_ROTATION_STEP_RAD = 0.3

# Observed events that advance the phase.
REACHED_XY_M = 0.01
REACHED_Z_M = 0.008
REACHED_YAW_RAD = 0.05
OPENED_M = 0.075
# The fingers stop at the part's width (0.04 m). Below MISSED_M they closed on nothing.
GRASPED_M = 0.042
MISSED_M = 0.03
BIN_REACHED_XY_M = 0.02


class Phase(enum.IntEnum):
    """Steps of the pick-and-place script, in order."""

    APPROACH = 0
    DESCEND = 1
    CLOSE = 2
    LIFT = 3
    CARRY = 4
    LOWER = 5
    RELEASE = 6
    RETREAT = 7


# Phases in which the gripper is commanded closed.
CLOSED_PHASES = frozenset({Phase.CLOSE, Phase.LIFT, Phase.CARRY, Phase.LOWER})


class PickPlaceExpert:
    """Scripted pick-and-place: above the part, descend, close, lift, above the bin, lower, open.

    Args:
        env: A `robota/PickPlace-v0` environment, wrapped or not. The expert reads the model
            (for IK) and the bin's fixed position from it, and everything else from observations.
    """

    def __init__(self, env: Any):
        unwrapped = env.unwrapped
        self.ik = SiteIK(unwrapped.model, unwrapped.index.tcp_site_name, unwrapped.index.arm_joint_names)
        self.num_joints = len(unwrapped.index.arm_joint_names)
        self.bin_center_m = np.asarray(unwrapped.bin_center_m, dtype=float)
        self.phase = Phase.APPROACH

    def reset(self) -> None:
        """Forget the previous episode."""
        self.phase = Phase.APPROACH

    def __call__(self, observation: dict[str, Any]) -> np.ndarray:
        """Return the action `(joints + 1,)` for one observation: joint targets (rad), gripper command."""
        state = np.asarray(observation[OBS_STATE], dtype=float)
        q, opening = state[: self.num_joints], float(state[self.num_joints])
        part_pose = np.asarray(observation[OBS_PART_POSE], dtype=float)
        tcp_position, tcp_rotation = self.ik.forward(q)
        tcp_yaw = float(np.arctan2(tcp_rotation[1, 0], tcp_rotation[0, 0]))

        self._advance_phase(tcp_position, tcp_yaw, opening, part_pose)
        waypoint, yaw = self._waypoint(tcp_position, tcp_yaw, part_pose)
        position = _step_towards(tcp_position, waypoint, MAX_TRANSLATION_STEP_M)
        yaw = tcp_yaw + float(np.clip(_wrap(yaw - tcp_yaw), -MAX_ROTATION_STEP_RAD, MAX_ROTATION_STEP_RAD))
        joints, _ = self.ik.solve(q, position, top_down_rotation(yaw))

        gripper = 1.0 if self.phase in CLOSED_PHASES else 0.0
        return np.r_[joints, gripper].astype(np.float32)

    def _advance_phase(
        self, tcp: np.ndarray, tcp_yaw: float, opening: float, part_pose: np.ndarray
    ) -> None:
        phase = next_phase(
            self.phase,
            tcp,
            tcp_yaw,
            opening,
            part_pose,
            self.bin_center_m,
            hover_height_m=HOVER_HEIGHT_M,
            grasp_height_m=GRASP_HEIGHT_M,
        )
        if phase != self.phase:
            logger.debug("phase %s -> %s", self.phase.name, phase.name)
            self.phase = phase

    def _waypoint(
        self, tcp: np.ndarray, tcp_yaw: float, part_pose: np.ndarray
    ) -> tuple[np.ndarray, float]:
        """TCP position `(3,)` and yaw that the current phase heads for."""
        part_x, part_y, part_yaw = part_pose
        bin_x, bin_y = self.bin_center_m
        if self.phase == Phase.APPROACH:
            return np.array([part_x, part_y, HOVER_HEIGHT_M]), part_yaw
        if self.phase in (Phase.DESCEND, Phase.CLOSE):
            return np.array([part_x, part_y, GRASP_HEIGHT_M]), part_yaw
        if self.phase == Phase.LIFT:
            return np.array([tcp[0], tcp[1], CARRY_HEIGHT_M]), tcp_yaw
        if self.phase == Phase.CARRY:
            return np.array([bin_x, bin_y, CARRY_HEIGHT_M]), tcp_yaw
        if self.phase in (Phase.LOWER, Phase.RELEASE):
            return np.array([bin_x, bin_y, RELEASE_HEIGHT_M]), tcp_yaw
        return np.array([bin_x, bin_y, CARRY_HEIGHT_M]), tcp_yaw


def next_phase(
    phase: Phase,
    tcp: np.ndarray,
    tcp_yaw: float,
    opening: float,
    part_pose: np.ndarray,
    bin_center_m: np.ndarray,
    *,
    hover_height_m: float,
    grasp_height_m: float,
) -> Phase:
    """Return the pick-and-place phase that follows `phase` after one observation.

    Args:
        phase: The current phase.
        tcp: Tool centre point `(3,)` in the base frame, from the observed joints.
        tcp_yaw: The tool's yaw in radians.
        opening: Observed distance between the fingers in metres.
        part_pose: Reported part `(x, y, yaw)`.
        bin_center_m: Centre `(2,)` of the bin's footprint.
        hover_height_m: TCP height of the approach above the part.
        grasp_height_m: TCP height of the grasp.
    """
    part_xy_error = float(np.linalg.norm(tcp[:2] - part_pose[:2]))
    bin_xy_error = float(np.linalg.norm(tcp[:2] - bin_center_m))

    if phase in (Phase.LIFT, Phase.CARRY, Phase.LOWER) and opening < MISSED_M:
        logger.debug("part lost in phase %s (opening %.4f m); approaching again", phase.name, opening)
        phase = Phase.APPROACH
    elif phase == Phase.APPROACH:
        if (
            part_xy_error < REACHED_XY_M
            and abs(tcp[2] - hover_height_m) < 2 * REACHED_Z_M
            and abs(_wrap(part_pose[2] - tcp_yaw)) < REACHED_YAW_RAD
            and opening > OPENED_M
        ):
            phase = Phase.DESCEND
    elif phase == Phase.DESCEND:
        if tcp[2] < grasp_height_m + REACHED_Z_M and part_xy_error < REACHED_XY_M:
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
        if bin_xy_error < BIN_REACHED_XY_M:
            phase = Phase.LOWER
    elif phase == Phase.LOWER:
        if tcp[2] < RELEASE_HEIGHT_M + REACHED_Z_M:
            phase = Phase.RELEASE
    elif phase == Phase.RELEASE:
        if opening > OPENED_M:
            phase = Phase.RETREAT
    return phase


def _step_towards(start: np.ndarray, goal: np.ndarray, max_step: float) -> np.ndarray:
    offset = goal - start
    distance = float(np.linalg.norm(offset))
    if distance <= max_step:
        return goal
    return start + offset * (max_step / distance)


def _wrap(angle_rad: float) -> float:
    """Wrap an angle into [-pi, pi)."""
    return float((angle_rad + np.pi) % (2 * np.pi) - np.pi)


# Task name -> "module:class" of its scripted expert; every task in `robota.sim.TASKS` has one.
# Each expert module is imported when its expert is first made.
EXPERTS: dict[str, str] = {
    "pick-place": "robota.sim.expert:PickPlaceExpert",
    "peg-in-hole": "robota.sim.peg_in_hole_expert:PegInHoleExpert",
    "conveyor": "robota.sim.conveyor_expert:ConveyorExpert",
    "machine-tending": "robota.sim.machine_tending_expert:MachineTendingExpert",
    "sort": "robota.sim.sort:SortExpert",
}


def make_expert(task: str, env: Any) -> Any:
    """Create the scripted expert of a task for an environment made by `make_env(task)`.

    The expert has `reset()` and `__call__(observation) -> action`, like every rollout policy.

    Raises:
        UnknownNameError: `task` has no scripted expert; the message suggests the nearest name.
    """
    if task not in EXPERTS:
        raise UnknownNameError("task", task, EXPERTS)
    module_name, class_name = EXPERTS[task].split(":")
    return getattr(importlib.import_module(module_name), class_name)(env)
