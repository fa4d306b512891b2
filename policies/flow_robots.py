"""The robots of a flow-matching policy: each robot's normalisation, joint padding and token.

A `FlowMatchingPolicy` keeps its primary robot's parts as its own attributes (`normalizer`,
`gripper`, `action_layout`, `joint_layouts`, `robot_id`, `action_valid`) and every other robot's
in an `Embodiment` with the same attributes, so code that takes "a robot's parts" works on both.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from robota.errors import SpecError
from robota.policies.base import gripper_index_of
from robota.policies.flow_layers import JointLayout, robot_index
from robota.policies.normalize import GripperChannel, Normalizer
from robota.spec import ACTION, Spec, is_joint_indexed

if TYPE_CHECKING:
    from robota.policies.flow import FlowMatchingConfig

logger = logging.getLogger(__name__)

# Training batch entry that selects the robot: int64 `(batch,)`, an index into
# `FlowMatchingPolicy.robot_names`, the same in every row.
ROBOT = "robot"
# State-dict prefixes of the primary robot's own tensors; another robot's are under
# `embodiments.<name>.`.
_PRIMARY_PREFIXES = ("normalizer.", "gripper.")


class Embodiment(nn.Module):
    """One more robot of a flow policy: its normalisation, joint padding, gripper and token.

    Args:
        config: The policy's hyperparameters.
        spec: The robot's feature spec.
        stats: Statistics of the robot's data, in LeRobot's `stats.json` form.

    Attributes:
        spec: The robot's feature spec.
        stats: The robot's statistics.
        gripper: The gripper channel, or None where the action has no gripper element.
        normalizer, action_layout, joint_layouts, robot_id, action_valid: As the policy's own.
    """

    def __init__(self, config: FlowMatchingConfig, spec: Spec, stats: Mapping[str, Any]) -> None:
        super().__init__()
        self.spec = spec
        self.stats = stats
        index = gripper_index_of(spec)
        self.gripper: GripperChannel | None = None
        if index is not None:
            self.gripper = GripperChannel(stats, index, spec.features[ACTION].shape[0])
        add_robot_parts(self, config, spec, stats)


def add_robot_parts(
    module: nn.Module, config: FlowMatchingConfig, spec: Spec, stats: Mapping[str, Any]
) -> None:
    """Give `module` one robot's joint layouts, normaliser, robot token and valid action slots."""
    module.action_layout = JointLayout(ACTION, spec.features[ACTION], config.max_action_dim)
    module.joint_layouts = {
        key: JointLayout(key, spec.features[key], config.max_state_dim)
        for key in spec.vector_keys
        if is_joint_indexed(spec.features[key], spec.robot)
    }
    module.normalizer = Normalizer(stats, _normalized_features(config, spec))
    robot_id = robot_index(spec.robot.name, config.robot_vocabulary)
    module.register_buffer("robot_id", torch.tensor(robot_id), persistent=False)
    module.register_buffer("action_valid", module.action_layout.valid, persistent=False)


def build_embodiments(
    config: FlowMatchingConfig,
    primary: Spec,
    embodiments: Mapping[str, tuple[Spec, Mapping[str, Any]]],
) -> nn.ModuleDict:
    """Check the other robots against the primary one and build their parts."""
    modules = nn.ModuleDict()
    tokens = {robot_index(primary.robot.name, config.robot_vocabulary): primary.robot.name}
    for name, (spec, stats) in embodiments.items():
        if name != spec.robot.name or name == primary.robot.name or "." in name or not name:
            raise SpecError(
                f"embodiment {name!r} must be keyed by its spec's robot name "
                f"({spec.robot.name!r}), without dots, and differ from the primary robot "
                f"{primary.robot.name!r}"
            )
        mismatch = _embodiment_mismatch(primary, spec)
        if mismatch is not None:
            raise SpecError(
                f"robot {name!r} cannot share a flow policy with {primary.robot.name!r}: "
                f"{mismatch}; record both with the same cameras and observations"
            )
        modules[name] = Embodiment(config, spec, stats)
        token = int(modules[name].robot_id)
        if token in tokens:
            # NOTE: the trunk then distinguishes these robots only by their joint observations.
            logger.warning(
                "robots %r and %r share the robot token %r; add them to robot_vocabulary to "
                "give each its own",
                tokens[token],
                name,
                config.robot_vocabulary[token],
            )
        tokens.setdefault(token, name)
    return modules


def _embodiment_mismatch(primary: Spec, other: Spec) -> str | None:
    """Describe why `other` cannot use the encoders and projections built for `primary`."""
    if other.image_keys != primary.image_keys:
        return f"its cameras {other.image_keys} differ from {primary.image_keys}"
    for key in primary.image_keys:
        if other.features[key].shape != primary.features[key].shape:
            return f"{key!r} has shape {other.features[key].shape}, not {primary.features[key].shape}"
    if other.vector_keys != primary.vector_keys:
        return f"its vector observations {other.vector_keys} differ from {primary.vector_keys}"
    for key in (*primary.vector_keys, ACTION):
        joint_indexed = is_joint_indexed(primary.features[key], primary.robot)
        if is_joint_indexed(other.features[key], other.robot) != joint_indexed:
            return f"{key!r} is indexed by the arm joints for one robot only"
        if not joint_indexed and other.features[key].shape != primary.features[key].shape:
            return f"{key!r} has shape {other.features[key].shape}, not {primary.features[key].shape}"
    return None


def vector_input(parts: nn.Module, key: str, value: torch.Tensor) -> torch.Tensor:
    """Normalise a vector observation `(batch, dim)`; pad a joint-indexed one to its width."""
    normalized = parts.normalizer.normalize(key, value)
    layout = parts.joint_layouts.get(key)
    if layout is None:
        return normalized
    gripper = None
    if layout.has_gripper:
        # Opening as a fraction of the maximum, on [-1, 1], so every robot's gripper agrees.
        opening = value[..., -1].to(torch.float32) / parts.spec.robot.gripper_max_opening_m
        gripper = 2.0 * opening - 1.0
    return layout.pad(normalized[..., : layout.n_arm], gripper)


def batch_robot(robot: torch.Tensor | None, names: tuple[str, ...]) -> int:
    """Return the robot index of a batch's `robot` entry; 0 (the primary robot) without one."""
    if robot is None:
        return 0
    if robot.dtype != torch.int64 or robot.ndim != 1 or robot.numel() == 0:
        raise SpecError(
            f"batch entry {ROBOT!r} must be int64 (batch,), got {robot.dtype} {tuple(robot.shape)}"
        )
    index = int(robot[0])
    if not 0 <= index < len(names) or bool((robot != index).any()):
        raise SpecError(
            f"batch entry {ROBOT!r} must hold one index into the policy's robots {list(names)} "
            f"in every row, got {robot.unique().tolist()}; draw batches of one robot with "
            "ChunkMixture.batch_sampler"
        )
    return index


def move_primary(state: Mapping[str, torch.Tensor], saved: str, primary: str) -> dict[str, torch.Tensor]:
    """Rename a flow policy's state dict saved with primary robot `saved` for primary `primary`.

    The primary robot's normaliser and gripper tensors sit at the top level and another robot's
    under `embodiments.<name>.`, so making another robot primary swaps those two groups. The
    shared weights keep their names.
    """
    if saved == primary:
        return dict(state)
    incoming = f"embodiments.{primary}."
    renamed: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key.startswith(_PRIMARY_PREFIXES):
            renamed[f"embodiments.{saved}.{key}"] = tensor
        elif key.startswith(incoming):
            renamed[key[len(incoming) :]] = tensor
        else:
            renamed[key] = tensor
    return renamed


def _normalized_features(
    config: FlowMatchingConfig, spec: Spec
) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Return the normalisation mode and shape of every feature the policy reads or predicts."""
    features = {key: ("mean_std", spec.features[key].shape) for key in spec.image_keys}
    for key in spec.vector_keys:
        features[key] = (config.state_normalization, spec.features[key].shape)
    features[ACTION] = (config.action_normalization, spec.features[ACTION].shape)
    return features
