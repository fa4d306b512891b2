"""Scripted expert for `conveyor`: intercept the moving part, lift it off the belt, drop it in the bin.

It follows the pick-and-place script of `robota.sim.expert` (same phases, events and step
limits) with two changes. Heights over the belt count from the belt surface. While the part is
on the belt, the expert estimates its velocity from the part poses observed since the approach
began (a least-squares line through at most the last `VELOCITY_WINDOW` of them) and leads its
target by that velocity. The belt speed drawn for the episode is never read: a policy with a
short history of observations can make the same estimate.
"""

from __future__ import annotations

import collections
import logging
from typing import Any

import numpy as np

from robota.errors import RobotaError
from robota.sim.expert import (
    CARRY_HEIGHT_M,
    CLOSED_PHASES,
    MAX_ROTATION_STEP_RAD,
    MAX_TRANSLATION_STEP_M,
    RELEASE_HEIGHT_M,
    Phase,
    _step_towards,
    _wrap,
    next_phase,
)
from robota.sim.ik import SiteIK, top_down_rotation
from robota.sim.twin import CONTROL_HZ
from robota.spec import OBS_PART_POSE, OBS_STATE

logger = logging.getLogger(__name__)

# TCP heights above the belt surface (m): the part's centre rides 0.02 m up, and grasping 0.01 m
# above it keeps the fingertips 0.01 m off the belt.
HOVER_ABOVE_BELT_M = 0.10
GRASP_ABOVE_BELT_M = 0.03

# Observed part poses in the velocity fit: 1 s at 10 Hz. Pose noise of 1.5 mm then leaves an
# error of about 3 mm/s on the estimate.
VELOCITY_WINDOW = 10
# How far ahead of the observed part pose the tool aims (s): one control period, over which the
# joint targets ramp, plus about half a period of servo lag.
LEAD_S = 0.15

# Phases in which the part is still on the belt, so its observed motion is the belt's.
ON_BELT_PHASES = frozenset({Phase.APPROACH, Phase.DESCEND, Phase.CLOSE})


class ConveyorExpert:
    """Scripted conveyor picking: track the part, descend, close, lift, above the bin, lower, open.

    Args:
        env: A `robota/ConveyorPick-v0` environment, wrapped or not. The expert reads the model
            (for IK), the belt surface height and the bin's fixed position from it, and
            everything else from observations.

    Raises:
        RobotaError: `env` is not a conveyor environment.
    """

    def __init__(self, env: Any):
        unwrapped = env.unwrapped
        if not hasattr(unwrapped, "belt_top_m"):
            raise RobotaError(
                f"ConveyorExpert needs a robota/ConveyorPick-v0 environment, got "
                f"{type(unwrapped).__name__}; create one with robota.sim.make_env('conveyor')"
            )
        self.ik = SiteIK(unwrapped.model, unwrapped.index.tcp_site_name, unwrapped.index.arm_joint_names)
        self.num_joints = len(unwrapped.index.arm_joint_names)
        self.bin_center_m = np.asarray(unwrapped.bin_center_m, dtype=float)
        self.hover_height_m = unwrapped.belt_top_m + HOVER_ABOVE_BELT_M
        self.grasp_height_m = unwrapped.belt_top_m + GRASP_ABOVE_BELT_M
        self.phase = Phase.APPROACH
        self._part_history: collections.deque[np.ndarray] = collections.deque(maxlen=VELOCITY_WINDOW)

    def reset(self) -> None:
        """Forget the previous episode."""
        self.phase = Phase.APPROACH
        self._part_history.clear()

    def __call__(self, observation: dict[str, Any]) -> np.ndarray:
        """Return the action `(joints + 1,)` for one observation: joint targets (rad), gripper command."""
        state = np.asarray(observation[OBS_STATE], dtype=float)
        q, opening = state[: self.num_joints], float(state[self.num_joints])
        part_pose = np.asarray(observation[OBS_PART_POSE], dtype=float)
        tcp_position, tcp_rotation = self.ik.forward(q)
        tcp_yaw = float(np.arctan2(tcp_rotation[1, 0], tcp_rotation[0, 0]))

        self._advance_phase(tcp_position, tcp_yaw, opening, part_pose)
        if self.phase in ON_BELT_PHASES:
            self._part_history.append(part_pose[:2].copy())
        waypoint, yaw = self._waypoint(tcp_position, tcp_yaw, part_pose)
        position = _step_towards(tcp_position, waypoint, MAX_TRANSLATION_STEP_M)
        yaw = tcp_yaw + float(np.clip(_wrap(yaw - tcp_yaw), -MAX_ROTATION_STEP_RAD, MAX_ROTATION_STEP_RAD))
        joints, _ = self.ik.solve(q, position, top_down_rotation(yaw))

        gripper = 1.0 if self.phase in CLOSED_PHASES else 0.0
        return np.r_[joints, gripper].astype(np.float32)

    def part_velocity_m_s(self) -> np.ndarray:
        """Part velocity `(2,)` in the world xy plane, fitted to the observed poses; zero before two."""
        count = len(self._part_history)
        if count < 2:
            return np.zeros(2)
        times_s = np.arange(count) / CONTROL_HZ
        positions = np.stack(self._part_history)  # (count, 2)
        centred_s = times_s - times_s.mean()
        return centred_s @ (positions - positions.mean(axis=0)) / (centred_s @ centred_s)

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
            hover_height_m=self.hover_height_m,
            grasp_height_m=self.grasp_height_m,
        )
        if phase != self.phase:
            logger.debug("phase %s -> %s", self.phase.name, phase.name)
            if phase == Phase.APPROACH:
                # The part fell from the fingers: its earlier poses no longer show its motion.
                self._part_history.clear()
            self.phase = phase

    def _waypoint(
        self, tcp: np.ndarray, tcp_yaw: float, part_pose: np.ndarray
    ) -> tuple[np.ndarray, float]:
        """TCP position `(3,)` and yaw that the current phase heads for."""
        part_yaw = float(part_pose[2])
        part_x, part_y = part_pose[:2] + LEAD_S * self.part_velocity_m_s()
        bin_x, bin_y = self.bin_center_m
        if self.phase == Phase.APPROACH:
            return np.array([part_x, part_y, self.hover_height_m]), part_yaw
        if self.phase in (Phase.DESCEND, Phase.CLOSE):
            return np.array([part_x, part_y, self.grasp_height_m]), part_yaw
        if self.phase == Phase.LIFT:
            return np.array([tcp[0], tcp[1], CARRY_HEIGHT_M]), tcp_yaw
        if self.phase == Phase.CARRY:
            return np.array([bin_x, bin_y, CARRY_HEIGHT_M]), tcp_yaw
        if self.phase in (Phase.LOWER, Phase.RELEASE):
            return np.array([bin_x, bin_y, RELEASE_HEIGHT_M]), tcp_yaw
        return np.array([bin_x, bin_y, CARRY_HEIGHT_M]), tcp_yaw
