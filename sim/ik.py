"""Inverse kinematics for a site: damped least squares on MuJoCo's site Jacobian.

Each iteration solves `dq = J^T (J J^T + lambda^2 I)^-1 e` for the 6-vector error `e`
(position, then rotation as an axis-angle vector, both in the world frame), takes a fraction of
that step and clips to the joint limits. A scratch `MjData` keeps the simulation state untouched.
"""

from __future__ import annotations

import mujoco
import numpy as np

DAMPING = 0.05
STEP_FRACTION = 0.5


def top_down_rotation(yaw_rad: float) -> np.ndarray:
    """Tool rotation `(3, 3)` with the tool z axis pointing down and its x axis at `yaw_rad`."""
    c, s = np.cos(yaw_rad), np.sin(yaw_rad)
    # Columns are the tool's x, y and z axes in the world frame: Rz(yaw) @ Rx(pi).
    return np.array([[c, s, 0.0], [s, -c, 0.0], [0.0, 0.0, -1.0]])


def rotation_error(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Axis-angle vector `(3,)` in the world frame that turns `current` into `target`."""
    target_quat = np.empty(4)
    current_quat = np.empty(4)
    mujoco.mju_mat2Quat(target_quat, target.reshape(-1))
    mujoco.mju_mat2Quat(current_quat, current.reshape(-1))
    error = np.empty(3)
    # mju_subQuat returns the rotation in the frame of `current`; rotate it into the world.
    mujoco.mju_subQuat(error, target_quat, current_quat)
    return current @ error


class SiteIK:
    """Damped least-squares IK that moves a site of a model to a target pose.

    Args:
        model: The compiled model.
        site: Name of the site to place.
        joint_names: Joints the solver may move, in the order of the returned vector.
        damping: Damping factor lambda of the least-squares step.
        step_fraction: Fraction of each least-squares step that is applied.
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        site: str,
        joint_names: tuple[str, ...],
        *,
        damping: float = DAMPING,
        step_fraction: float = STEP_FRACTION,
    ):
        self.model = model
        self.data = mujoco.MjData(model)
        self.site = model.site(site).id
        joint_ids = [model.joint(n).id for n in joint_names]
        self.qpos_adr = model.jnt_qposadr[joint_ids]
        self.dof_adr = model.jnt_dofadr[joint_ids]
        self.lower = model.jnt_range[joint_ids, 0]
        self.upper = model.jnt_range[joint_ids, 1]
        self.damping = damping
        self.step_fraction = step_fraction
        self._jac_pos = np.zeros((3, model.nv))
        self._jac_rot = np.zeros((3, model.nv))

    def forward(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Site position `(3,)` and rotation `(3, 3)` in the world frame at joint positions `q`."""
        self.data.qpos[self.qpos_adr] = q
        mujoco.mj_kinematics(self.model, self.data)
        return self.data.site_xpos[self.site].copy(), self.data.site_xmat[self.site].reshape(3, 3).copy()

    def solve(
        self,
        q_init: np.ndarray,
        position: np.ndarray,
        rotation: np.ndarray,
        *,
        max_iterations: int = 40,
        tolerance: float = 1e-4,
    ) -> tuple[np.ndarray, float]:
        """Find joint positions that put the site at `position` with `rotation`.

        Args:
            q_init: Joint positions to start from. The solution stays close to them.
            position: Target site position `(3,)` in metres, world frame.
            rotation: Target site rotation `(3, 3)`, world frame.
            max_iterations: Iterations before giving up.
            tolerance: Stop once the error norm (metres and radians together) is below this.

        Returns:
            The joint positions and the final error norm.
        """
        q = np.array(q_init, dtype=float)
        eye = np.eye(6)
        error_norm = np.inf
        for _ in range(max_iterations):
            site_position, site_rotation = self.forward(q)
            error = np.concatenate([position - site_position, rotation_error(rotation, site_rotation)])
            error_norm = float(np.linalg.norm(error))
            if error_norm < tolerance:
                break
            mujoco.mj_comPos(self.model, self.data)
            mujoco.mj_jacSite(self.model, self.data, self._jac_pos, self._jac_rot, self.site)
            jac = np.vstack([self._jac_pos, self._jac_rot])[:, self.dof_adr]  # (6, joints)
            step = jac.T @ np.linalg.solve(jac @ jac.T + self.damping**2 * eye, error)
            q = np.clip(q + self.step_fraction * step, self.lower, self.upper)
        return q, error_norm
