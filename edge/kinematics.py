"""Forward kinematics from standard Denavit-Hartenberg parameters, in numpy only.

The safety filter needs the tool point of a joint command to check it against a workspace box.
The edge runtime may not import MuJoCo, so the chain is computed here from the DH table that
the bundle's manifest stores. Each joint i contributes `Rz(q_i) Tz(d_i) Tx(a_i) Rx(alpha_i)`
(standard DH), and a fixed offset in the last frame moves the flange to the tool point.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

# Universal Robots UR5e, standard DH from Universal Robots' published DH parameter table (metres
# and radians). The twin's MJCF is built from the same table, so its joint angles are DH angles.
UR5E_DH_D_M = (0.1625, 0.0, 0.0, 0.1333, 0.0997, 0.0996)
UR5E_DH_A_M = (0.0, -0.425, -0.3922, 0.0, 0.0, 0.0)
UR5E_DH_ALPHA_RAD = (math.pi / 2, 0.0, 0.0, math.pi / 2, -math.pi / 2, 0.0)
# Tool centre point of the twin's parallel gripper: 0.135 m along the flange's z axis.
UR5E_TOOL_OFFSET_M = (0.0, 0.0, 0.135)


@dataclasses.dataclass(frozen=True)
class DHChain:
    """A serial arm in standard DH parameters, with a tool point fixed to the last frame.

    Attributes:
        d_m: Offset along the previous z axis, per joint.
        a_m: Length along the rotated x axis, per joint.
        alpha_rad: Twist about the rotated x axis, per joint.
        tool_offset_m: Tool point in the last joint's frame (the flange frame).
    """

    d_m: tuple[float, ...]
    a_m: tuple[float, ...]
    alpha_rad: tuple[float, ...]
    tool_offset_m: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        for name in ("d_m", "a_m", "alpha_rad", "tool_offset_m"):
            values = tuple(float(v) for v in getattr(self, name))
            if not all(math.isfinite(v) for v in values):
                raise ValueError(f"DH {name} has a non-finite value: {values}")
            object.__setattr__(self, name, values)
        if not len(self.d_m) == len(self.a_m) == len(self.alpha_rad):
            raise ValueError(
                f"DH d_m, a_m and alpha_rad have {len(self.d_m)}, {len(self.a_m)} and "
                f"{len(self.alpha_rad)} values; each needs one per joint"
            )
        if len(self.tool_offset_m) != 3:
            raise ValueError(f"DH tool_offset_m needs 3 values, got {self.tool_offset_m}")
        # Arrays for tool_points_base, computed once because it runs every control tick.
        object.__setattr__(self, "_d", np.asarray(self.d_m))
        object.__setattr__(self, "_a", np.asarray(self.a_m))
        object.__setattr__(self, "_cos_alpha", np.cos(self.alpha_rad))
        object.__setattr__(self, "_sin_alpha", np.sin(self.alpha_rad))
        object.__setattr__(self, "_tool", np.asarray(self.tool_offset_m))

    @property
    def num_joints(self) -> int:
        return len(self.d_m)

    def tool_points_base(self, joint_positions_rad: np.ndarray) -> np.ndarray:
        """Compute tool points in the base frame for a batch of joint positions.

        Args:
            joint_positions_rad: `(batch, num_joints)` or `(num_joints,)` joint angles.

        Returns:
            float64 tool points `(batch, 3)` or `(3,)` in metres, in the arm's base frame.
        """
        q = np.asarray(joint_positions_rad, dtype=np.float64)
        single = q.ndim == 1
        q = np.atleast_2d(q)  # (batch, num_joints)
        if q.shape[1] != self.num_joints:
            raise ValueError(
                f"expected {self.num_joints} joint positions, got shape {q.shape[1:]}"
            )

        links = _dh_transforms(q, self._d, self._a, self._cos_alpha, self._sin_alpha)  # (batch, joints, 4, 4)
        transform = links[:, 0]
        for i in range(1, self.num_joints):
            transform = transform @ links[:, i]  # (batch, 4, 4)
        points = transform[:, :3, :3] @ self._tool + transform[:, :3, 3]  # (batch, 3)
        return points[0] if single else points

    def to_dict(self) -> dict[str, Any]:
        return {
            "convention": "standard_dh",
            "d_m": list(self.d_m),
            "a_m": list(self.a_m),
            "alpha_rad": list(self.alpha_rad),
            "tool_offset_m": list(self.tool_offset_m),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DHChain:
        convention = data.get("convention", "standard_dh")
        if convention != "standard_dh":
            raise ValueError(f"kinematics convention {convention!r} is unknown; use 'standard_dh'")
        return cls(
            d_m=tuple(data["d_m"]),
            a_m=tuple(data["a_m"]),
            alpha_rad=tuple(data["alpha_rad"]),
            tool_offset_m=tuple(data.get("tool_offset_m", (0.0, 0.0, 0.0))),
        )


def _dh_transforms(
    theta: np.ndarray, d: np.ndarray, a: np.ndarray, cos_alpha: np.ndarray, sin_alpha: np.ndarray
) -> np.ndarray:
    """`Rz(theta) Tz(d) Tx(a) Rx(alpha)` per joint for a batch, shape `(batch, joints, 4, 4)`."""
    cos_t, sin_t = np.cos(theta), np.sin(theta)  # (batch, joints)
    out = np.zeros((*theta.shape, 4, 4))
    out[..., 0, 0], out[..., 0, 1], out[..., 0, 2], out[..., 0, 3] = cos_t, -sin_t * cos_alpha, sin_t * sin_alpha, a * cos_t
    out[..., 1, 0], out[..., 1, 1], out[..., 1, 2], out[..., 1, 3] = sin_t, cos_t * cos_alpha, -cos_t * sin_alpha, a * sin_t
    out[..., 2, 1], out[..., 2, 2], out[..., 2, 3] = sin_alpha, cos_alpha, d
    out[..., 3, 3] = 1.0
    return out


UR5E_CHAIN = DHChain(UR5E_DH_D_M, UR5E_DH_A_M, UR5E_DH_ALPHA_RAD, UR5E_TOOL_OFFSET_M)
# Chains of the built-in robots by `RobotSpec.name`.
KNOWN_CHAINS: dict[str, DHChain] = {"ur5e": UR5E_CHAIN}
