"""The safety filter between the policy and the robot.

Every control tick the policy's action passes through `SafetyFilter.filter` before it is sent.
The filter applies, in this order:

1. a latched protective stop after a wrench limit was exceeded (hold until `release()`);
2. the watchdog: joint states, camera images or the wrench older than `watchdog_periods`
   control periods make the robot hold;
3. the wrench limits: a force or torque above the sustained limit on `wrench_debounce_samples`
   consecutive readings, or above the transient limit on one reading, latches the stop;
4. a missing action (no chunk ready) or a NaN or Inf action holds;
5. joint position limits (clamp), then velocity and acceleration limits of the commanded
   positions (clamp of the step and of its change), then the gripper command to [0, 1];
6. the workspace box for the tool point, computed by forward kinematics: a command that leaves
   the box is cut back along the straight joint-space path to the last point inside it.

"Hold" re-sends the last command that passed the filter, so a position-controlled arm stops where
that command put it. A hold may decelerate faster than the acceleration limit, because stopping
wins over smoothness. A protective stop instead holds the measured joint positions when the
caller passes them. The last command of an arm that pushes into an obstacle lies inside it, and
re-sending it would keep pressing. Every intervention is counted by reason and logged (the
first one of each reason, then at most one line per second and reason with the count since).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from robota.edge.kinematics import KNOWN_CHAINS, DHChain
from robota.spec import RobotSpec

logger = logging.getLogger(__name__)

# NOTE: the UR5e datasheet gives no joint acceleration limit. This project's conservative
# default of 8 rad/s^2 takes a joint from rest to 180 deg/s in about 0.4 s. Set it per cell.
DEFAULT_ACCELERATION_LIMIT_RAD_S2 = 8.0
# Protective-stop thresholds of the wrist sensor reading, which includes the tool's weight: the
# twin's gripper reads about 10 N at rest and 11 N carrying the part. The sustained limits trip
# after `DEFAULT_WRENCH_DEBOUNCE_SAMPLES` consecutive readings above them (0.3 s at 10 Hz), and
# the transient limits trip on one reading. In the pick-place twin, successful episodes read up
# to 130 N at the grasp, 180 N at a regrasp and 16 N*m, each for one control period, while the
# fingers pressed the part onto the table (docs/sil.md). These are this project's defaults, to
# be set per cell at export.
DEFAULT_MAX_FORCE_N = 100.0
DEFAULT_MAX_TORQUE_N_M = 10.0
DEFAULT_WRENCH_DEBOUNCE_SAMPLES = 3
DEFAULT_MAX_TRANSIENT_FORCE_N = 200.0
DEFAULT_MAX_TRANSIENT_TORQUE_N_M = 20.0
# A source whose last message is older than this many control periods makes the robot hold.
DEFAULT_WATCHDOG_PERIODS = 5
# Workspace box of the UR5e tool point in the base frame: its 0.85 m reach around the base,
# above the table plane z = 0 that the arm is mounted on.
UR5E_WORKSPACE_BASE_M = ((-0.9, -0.9, 0.0), (0.9, 0.9, 1.0))

# Fractions of the joint-space step checked against the workspace box.
_WORKSPACE_FRACTIONS = np.linspace(0.0, 1.0, 17)[1:]
# Interventions kept in `SafetyFilter.events`.
EVENT_HISTORY = 1000


class Reason:
    """Names of the interventions, as counted in `SafetyFilter.counts`."""

    PROTECTIVE_STOP = "protective_stop"
    WATCHDOG = "watchdog"
    WRENCH_LIMIT = "wrench_limit"
    NO_ACTION = "no_action"
    NON_FINITE_ACTION = "non_finite_action"
    POSITION_LIMIT = "position_limit"
    VELOCITY_LIMIT = "velocity_limit"
    ACCELERATION_LIMIT = "acceleration_limit"
    GRIPPER_RANGE = "gripper_range"
    WORKSPACE = "workspace"


@dataclasses.dataclass(frozen=True)
class SafetyConfig:
    """Limits of the safety filter beyond the robot's position and velocity limits.

    The manifest stores this as its `safety` section. Position and velocity limits come from
    the spec's robot, so they are not repeated here.

    Attributes:
        acceleration_limit_rad_s2: Max change of commanded joint velocity per second, per joint.
        kinematics: DH chain of the arm with its tool point; `None` skips the workspace check,
            so the joint position limits are the only spatial bound.
        workspace_lower_m: Lower corner `(x, y, z)` of the tool-point box in the base frame, or
            `None` for no box.
        workspace_upper_m: Upper corner of the box.
        max_force_n: Sustained force limit: a wrist force magnitude above it on
            `wrench_debounce_samples` consecutive readings triggers a protective stop.
        max_torque_n_m: Sustained torque limit, debounced like the force.
        wrench_debounce_samples: Consecutive readings above a sustained limit that trigger the
            stop; 1 stops on the first reading.
        max_transient_force_n: Force magnitude that triggers the stop on a single reading.
        max_transient_torque_n_m: Torque magnitude that triggers the stop on a single reading.
        watchdog_periods: Control periods after which a silent source makes the robot hold.
    """

    acceleration_limit_rad_s2: tuple[float, ...]
    kinematics: DHChain | None = None
    workspace_lower_m: tuple[float, float, float] | None = None
    workspace_upper_m: tuple[float, float, float] | None = None
    max_force_n: float = DEFAULT_MAX_FORCE_N
    max_torque_n_m: float = DEFAULT_MAX_TORQUE_N_M
    watchdog_periods: int = DEFAULT_WATCHDOG_PERIODS
    wrench_debounce_samples: int = DEFAULT_WRENCH_DEBOUNCE_SAMPLES
    max_transient_force_n: float = DEFAULT_MAX_TRANSIENT_FORCE_N
    max_transient_torque_n_m: float = DEFAULT_MAX_TRANSIENT_TORQUE_N_M

    def __post_init__(self) -> None:
        acceleration = tuple(float(v) for v in self.acceleration_limit_rad_s2)
        if not all(v > 0 and math.isfinite(v) for v in acceleration):
            raise ValueError(f"acceleration_limit_rad_s2 must be positive, got {acceleration}")
        object.__setattr__(self, "acceleration_limit_rad_s2", acceleration)
        if (self.workspace_lower_m is None) != (self.workspace_upper_m is None):
            raise ValueError("workspace_lower_m and workspace_upper_m must be given together")
        if self.workspace_lower_m is not None:
            lower = tuple(float(v) for v in self.workspace_lower_m)
            upper = tuple(float(v) for v in self.workspace_upper_m)
            if len(lower) != 3 or len(upper) != 3 or not all(a < b for a, b in zip(lower, upper)):
                raise ValueError(
                    f"workspace box {lower}..{upper} needs 3 values per corner, lower below upper"
                )
            object.__setattr__(self, "workspace_lower_m", lower)
            object.__setattr__(self, "workspace_upper_m", upper)
        if not (self.max_force_n > 0 and self.max_torque_n_m > 0):
            raise ValueError(
                f"wrench limits must be positive, got {self.max_force_n} N, "
                f"{self.max_torque_n_m} N*m"
            )
        if isinstance(self.watchdog_periods, bool) or int(self.watchdog_periods) < 1:
            raise ValueError(f"watchdog_periods must be >= 1, got {self.watchdog_periods}")
        debounce = self.wrench_debounce_samples
        if isinstance(debounce, bool) or int(debounce) != debounce or debounce < 1:
            raise ValueError(f"wrench_debounce_samples must be an integer >= 1, got {debounce}")
        if not (
            self.max_transient_force_n >= self.max_force_n
            and self.max_transient_torque_n_m >= self.max_torque_n_m
        ):
            raise ValueError(
                f"transient wrench limits ({self.max_transient_force_n} N, "
                f"{self.max_transient_torque_n_m} N*m) must be at least the sustained ones "
                f"({self.max_force_n} N, {self.max_torque_n_m} N*m)"
            )

    @classmethod
    def default_for(cls, robot: RobotSpec) -> SafetyConfig:
        """Return this project's defaults: the built-in chain and box for a known robot.

        An unknown robot gets no kinematics and no box, so only joint-space limits apply.
        """
        chain = KNOWN_CHAINS.get(robot.name)
        lower, upper = UR5E_WORKSPACE_BASE_M if robot.name == "ur5e" else (None, None)
        if chain is None:
            logger.warning(
                "no kinematics known for robot %r; the workspace box is not checked", robot.name
            )
        return cls(
            acceleration_limit_rad_s2=(DEFAULT_ACCELERATION_LIMIT_RAD_S2,) * robot.num_joints,
            kinematics=chain,
            workspace_lower_m=lower,
            workspace_upper_m=upper,
        )

    def to_dict(self) -> dict[str, Any]:
        workspace = None
        if self.workspace_lower_m is not None:
            workspace = {"lower": list(self.workspace_lower_m), "upper": list(self.workspace_upper_m)}
        return {
            "acceleration_limit_rad_s2": list(self.acceleration_limit_rad_s2),
            "kinematics": None if self.kinematics is None else self.kinematics.to_dict(),
            "workspace_base_m": workspace,
            "max_force_n": self.max_force_n,
            "max_torque_n_m": self.max_torque_n_m,
            "watchdog_periods": int(self.watchdog_periods),
            "wrench_debounce_samples": int(self.wrench_debounce_samples),
            "max_transient_force_n": self.max_transient_force_n,
            "max_transient_torque_n_m": self.max_transient_torque_n_m,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SafetyConfig:
        """Parse the manifest's `safety` section; raises KeyError, TypeError or ValueError.

        Bundles exported before the debounced wrench rule lack its keys. They get
        `wrench_debounce_samples` 1 and transient limits equal to the sustained ones, so every
        reading above a limit stops the arm, as it did when they were exported.
        """
        kinematics = data.get("kinematics")
        workspace = data.get("workspace_base_m")
        return cls(
            acceleration_limit_rad_s2=tuple(data["acceleration_limit_rad_s2"]),
            kinematics=None if kinematics is None else DHChain.from_dict(kinematics),
            workspace_lower_m=None if workspace is None else tuple(workspace["lower"]),
            workspace_upper_m=None if workspace is None else tuple(workspace["upper"]),
            max_force_n=float(data["max_force_n"]),
            max_torque_n_m=float(data["max_torque_n_m"]),
            watchdog_periods=int(data["watchdog_periods"]),
            wrench_debounce_samples=int(data.get("wrench_debounce_samples", 1)),
            max_transient_force_n=float(data.get("max_transient_force_n", data["max_force_n"])),
            max_transient_torque_n_m=float(
                data.get("max_transient_torque_n_m", data["max_torque_n_m"])
            ),
        )


@dataclasses.dataclass(frozen=True)
class Intervention:
    """One change the filter made to an action.

    Attributes:
        tick: Filter call index, from 0 at `reset`.
        time_s: `time.monotonic()` of the call.
        reason: One of the `Reason` names.
        detail: What was seen, for the log.
    """

    tick: int
    time_s: float
    reason: str
    detail: str


@dataclasses.dataclass(frozen=True)
class SafeCommand:
    """The filter's output for one tick.

    Attributes:
        command: float64 command `(action_dim,)`: joint positions in rad, then the gripper
            command in [0, 1].
        held: Whether the command is the previous one re-sent.
        reasons: Interventions of this tick, in the order they were applied.
    """

    command: np.ndarray
    held: bool
    reasons: tuple[str, ...]


class SafetyFilter:
    """Check and limit every action before it reaches the robot.

    Args:
        robot: Joint names and position and velocity limits.
        config: Acceleration, workspace, wrench and watchdog limits.
        rate_hz: Control rate; the velocity and acceleration limits are applied per period.
        clock: Time source in seconds, `time.monotonic` unless a test replaces it.
    """

    def __init__(self, robot: RobotSpec, config: SafetyConfig, rate_hz: float, *, clock=time.monotonic):
        if len(config.acceleration_limit_rad_s2) != robot.num_joints:
            raise ValueError(
                f"acceleration_limit_rad_s2 has {len(config.acceleration_limit_rad_s2)} values "
                f"for {robot.num_joints} joints of {robot.name!r}"
            )
        if config.kinematics is not None and config.kinematics.num_joints != robot.num_joints:
            raise ValueError(
                f"kinematics has {config.kinematics.num_joints} joints, robot {robot.name!r} "
                f"has {robot.num_joints}"
            )
        self.robot = robot
        self.config = config
        self.period_s = 1.0 / float(rate_hz)
        self.clock = clock
        self._lower = np.asarray(robot.lower_rad)
        self._upper = np.asarray(robot.upper_rad)
        self._max_step = np.asarray(robot.velocity_limit_rad_s) * self.period_s
        self._max_step_change = np.asarray(config.acceleration_limit_rad_s2) * self.period_s**2
        self.counts: collections.Counter[str] = collections.Counter()
        self.events: collections.deque[Intervention] = collections.deque(maxlen=EVENT_HISTORY)
        self._log_state: dict[str, tuple[float, int]] = {}
        self._command: np.ndarray | None = None
        self._start_inside = False
        if config.workspace_lower_m is not None:
            self._workspace_lower = np.asarray(config.workspace_lower_m)
            self._workspace_upper = np.asarray(config.workspace_upper_m)
        self._step = np.zeros(robot.num_joints)
        self._stopped_reason: str | None = None
        self._wrench_streak = 0
        self._tick = 0

    @property
    def max_age_s(self) -> float:
        """Age of a source's last message beyond which the watchdog holds."""
        return self.config.watchdog_periods * self.period_s

    @property
    def last_command(self) -> np.ndarray | None:
        """The last command that passed the filter, or `None` before `reset`."""
        return None if self._command is None else self._command.copy()

    @property
    def protective_stop(self) -> str | None:
        """Why the latched protective stop is active, or `None` when it is not."""
        return self._stopped_reason

    def reset(self, joint_positions_rad: np.ndarray, gripper_command: float = 0.0) -> None:
        """Start from the measured joint positions at rest; call before the first `filter`."""
        q = np.asarray(joint_positions_rad, dtype=np.float64).reshape(-1)
        if q.shape != (self.robot.num_joints,) or not np.isfinite(q).all():
            raise ValueError(
                f"reset needs {self.robot.num_joints} finite joint positions, got {q.tolist()}"
            )
        self._command = np.append(q, float(np.clip(gripper_command, 0.0, 1.0)))
        self._step = np.zeros(self.robot.num_joints)
        self._wrench_streak = 0
        self._tick = 0
        self._start_inside = False  # unknown until the first workspace check

    def release(self) -> None:
        """Clear a latched protective stop after the cause was checked."""
        if self._stopped_reason is not None:
            logger.warning("protective stop released (was: %s)", self._stopped_reason)
        self._stopped_reason = None

    def filter(
        self,
        action: np.ndarray | None,
        *,
        wrench: np.ndarray | None = None,
        stamps_s: Mapping[str, float | None] | None = None,
        now_s: float | None = None,
        joint_positions_rad: np.ndarray | None = None,
    ) -> SafeCommand:
        """Check one action and return the command to send.

        Args:
            action: Proposed action `(action_dim,)`, or `None` when no action is ready.
            wrench: Latest wrist reading `(6,)`: force in N, then torque in N*m; `None` skips
                the wrench limits. Pass one reading per call: the sustained limits count
                consecutive calls.
            stamps_s: Time of the last message per source (for example `joint_states`,
                `camera/wrist`, `wrench`) on this filter's clock; `None` for a source that
                never sent one. Every listed source is watched.
            now_s: Current time on the filter's clock; `None` reads the clock.
            joint_positions_rad: Measured arm joint positions `(joints,)`. When a wrench limit
                trips, the stop holds these instead of the last command; `None` holds the last
                command.

        Raises:
            RuntimeError: `reset` was never called, so there is no command to hold.
        """
        if self._command is None:
            raise RuntimeError("SafetyFilter.filter called before reset(joint_positions_rad)")
        now_s = self.clock() if now_s is None else now_s
        self._tick += 1

        hold_reason = self._hold_reason(action, wrench, stamps_s or {}, now_s)
        if hold_reason is not None:
            reason, detail = hold_reason
            self._record(reason, detail, now_s)
            if reason == Reason.WRENCH_LIMIT:
                self._hold_measured(joint_positions_rad)
            self._step = np.zeros(self.robot.num_joints)
            return SafeCommand(self._command.copy(), True, (reason,))

        reasons: list[str] = []
        command = self._limit(np.asarray(action, dtype=np.float64), reasons, now_s)
        self._step = command[:-1] - self._command[:-1]
        self._command = command
        return SafeCommand(command.copy(), False, tuple(reasons))

    def _hold_reason(self, action, wrench, stamps_s, now_s) -> tuple[str, str] | None:
        """Return the reason and detail of a hold, or `None` if the action may proceed."""
        if self._stopped_reason is not None:
            return Reason.PROTECTIVE_STOP, self._stopped_reason

        stale = []
        for source, stamp in stamps_s.items():
            if stamp is None:
                stale.append(f"{source} never received")
            elif now_s - stamp > self.max_age_s:
                stale.append(f"{source} {1e3 * (now_s - stamp):.0f} ms old")
        if stale:
            limit_ms = 1e3 * self.max_age_s
            return Reason.WATCHDOG, f"{', '.join(stale)} (limit {limit_ms:.0f} ms)"

        if wrench is not None:
            violation = self._wrench_violation(np.asarray(wrench, dtype=np.float64))
            if violation is not None:
                self._stopped_reason = violation
                self._wrench_streak = 0
                return Reason.WRENCH_LIMIT, violation

        if action is None:
            return Reason.NO_ACTION, "no action ready"
        values = np.asarray(action, dtype=np.float64).reshape(-1)
        if values.shape != (self.robot.action_dim,):
            return Reason.NON_FINITE_ACTION, f"action shape {np.shape(action)} is invalid"
        if not np.isfinite(values).all():
            return Reason.NON_FINITE_ACTION, f"action {values.tolist()}"
        return None

    def _wrench_violation(self, wrench: np.ndarray) -> str | None:
        """Return why this reading trips the stop, or `None`; counts readings above a limit."""
        config = self.config
        force = float(np.linalg.norm(wrench[:3]))
        torque = float(np.linalg.norm(wrench[3:6]))
        if not (math.isfinite(force) and math.isfinite(torque)):
            return f"non-finite wrench {wrench.tolist()}"
        if force > config.max_transient_force_n:
            limit_n = config.max_transient_force_n
            return f"force {force:.1f} N above the transient limit {limit_n:.1f} N"
        if torque > config.max_transient_torque_n_m:
            return (
                f"torque {torque:.2f} N*m above the transient limit "
                f"{config.max_transient_torque_n_m:.2f} N*m"
            )

        # A contact transient, such as fingers closing on a part that rests on the table, lasts
        # a reading or two. A collision or a clamped part keeps the wrench up.
        if force <= config.max_force_n and torque <= config.max_torque_n_m:
            self._wrench_streak = 0
            return None
        self._wrench_streak += 1
        if self._wrench_streak < config.wrench_debounce_samples:
            return None
        samples = f"{self._wrench_streak} consecutive readings"
        if force > config.max_force_n:
            return f"force {force:.1f} N above {config.max_force_n:.1f} N on {samples}"
        return f"torque {torque:.2f} N*m above {config.max_torque_n_m:.2f} N*m on {samples}"

    def _hold_measured(self, joint_positions_rad: np.ndarray | None) -> None:
        """Make the measured joint positions the held command, keeping the gripper command.

        An arm that pushes into an obstacle lags its command, which lies inside the obstacle.
        Holding that command would keep pressing, so the stop holds where the arm is instead.
        """
        if joint_positions_rad is None:
            return
        measured = np.asarray(joint_positions_rad, dtype=np.float64).reshape(-1)
        if measured.shape != (self.robot.num_joints,) or not np.isfinite(measured).all():
            logger.warning(
                "protective stop holds the last command: measured joint positions %s are invalid",
                measured.tolist(),
            )
            return
        self._command[:-1] = np.clip(measured, self._lower, self._upper)

    def _limit(self, action: np.ndarray, reasons: list[str], now_s: float) -> np.ndarray:
        """Clamp positions, the step and its change, the gripper and the workspace."""
        previous = self._command[:-1]
        target = action[:-1]

        clamped = np.clip(target, self._lower, self._upper)
        if not np.array_equal(clamped, target):
            self._note(reasons, Reason.POSITION_LIMIT, _joint_detail(target, clamped), now_s)

        step = clamped - previous
        limited = np.clip(step, -self._max_step, self._max_step)
        if not np.array_equal(limited, step):
            self._note(reasons, Reason.VELOCITY_LIMIT, _joint_detail(step / self.period_s, limited / self.period_s), now_s)
        changed = np.clip(limited, self._step - self._max_step_change, self._step + self._max_step_change)
        if not np.array_equal(changed, limited):
            self._note(reasons, Reason.ACCELERATION_LIMIT, "joint step change clamped", now_s)
        joints = np.clip(previous + changed, self._lower, self._upper)

        gripper = float(action[-1])
        if not 0.0 <= gripper <= 1.0:
            self._note(reasons, Reason.GRIPPER_RANGE, f"gripper command {gripper:.3f}", now_s)
            gripper = min(max(gripper, 0.0), 1.0)

        joints = self._inside_workspace(previous, joints, reasons, now_s)
        return np.append(joints, gripper)

    def _inside_workspace(self, previous, joints, reasons, now_s) -> np.ndarray:
        """Cut the step from `previous` to `joints` back to the last point inside the box."""
        chain = self.config.kinematics
        if chain is None or self.config.workspace_lower_m is None:
            return joints
        lower, upper = self._workspace_lower, self._workspace_upper
        end_point = chain.tool_points_base(joints)
        if self._start_inside and np.all((end_point >= lower) & (end_point <= upper)):
            # NOTE: only the end of the step is checked here. One step is at most one period
            # at the velocity limit (0.31 rad at 10 Hz for the UR5e), so the path between two
            # points inside the box can leave it only briefly, by an amount not bounded here.
            self._start_inside = True
            return joints

        path = previous + _WORKSPACE_FRACTIONS[:, None] * (joints - previous)  # (fractions, joints)
        points = chain.tool_points_base(path)  # (fractions, 3)
        inside = np.all((points >= lower) & (points <= upper), axis=1)
        if inside.all():
            self._start_inside = True
            return joints

        start_outside = _box_distance(chain.tool_points_base(previous), lower, upper)
        if start_outside > 0:
            # Started outside (for example after a manual move): allow steps that approach the box.
            if _box_distance(points[-1], lower, upper) <= start_outside:
                self._start_inside = _box_distance(points[-1], lower, upper) == 0
                return joints
            self._note(reasons, Reason.WORKSPACE, "tool point outside the box moves away", now_s)
            return previous.copy()

        first_outside = int(np.argmin(inside))
        kept = path[first_outside - 1] if first_outside > 0 else previous.copy()
        self._start_inside = True
        point = np.round(points[first_outside], 3).tolist()
        self._note(reasons, Reason.WORKSPACE, f"tool point {point} m leaves the box", now_s)
        return kept

    def _note(self, reasons: list[str], reason: str, detail: str, now_s: float) -> None:
        reasons.append(reason)
        self._record(reason, detail, now_s)

    def _record(self, reason: str, detail: str, now_s: float) -> None:
        """Count an intervention and log it, at most once per second and reason."""
        self.counts[reason] += 1
        self.events.append(Intervention(self._tick, now_s, reason, detail))
        last_s, suppressed = self._log_state.get(reason, (-math.inf, 0))
        if now_s - last_s < 1.0:
            self._log_state[reason] = (last_s, suppressed + 1)
            return
        more = f" ({suppressed} more since the last line)" if suppressed else ""
        logger.warning("safety %s: %s%s", reason, detail, more)
        self._log_state[reason] = (now_s, 0)


def _joint_detail(requested: np.ndarray, allowed: np.ndarray) -> str:
    joint = int(np.argmax(np.abs(requested - allowed)))
    return f"joint {joint}: {requested[joint]:.3f} limited to {allowed[joint]:.3f}"


def _box_distance(point: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Euclidean distance of a point from the box, 0 inside it."""
    return float(np.linalg.norm(np.maximum(lower - point, 0) + np.maximum(point - upper, 0)))
