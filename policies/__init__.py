"""Torch policies: the `ChunkPolicy` interface, ACT, normalisation, checkpoints and a runner.

Build a policy with `make_policy("act", spec, stats)`, save it with `save_checkpoint`, load it with
`load_checkpoint`, and drive a twin with `TorchPolicyRunner.from_checkpoint(path)`.
"""

from robota.policies.act import ACTConfig, ACTPolicy
from robota.policies.base import ChunkPolicy, ChunkPolicyConfig
from robota.policies.checkpoint import checkpoint_sha256, load_checkpoint, save_checkpoint
from robota.policies.normalize import Normalizer
from robota.policies.registry import POLICIES, make_config, make_policy
from robota.policies.runner import TorchPolicyRunner

__all__ = [
    "ACTConfig",
    "ACTPolicy",
    "ChunkPolicy",
    "ChunkPolicyConfig",
    "Normalizer",
    "POLICIES",
    "TorchPolicyRunner",
    "checkpoint_sha256",
    "load_checkpoint",
    "make_config",
    "make_policy",
    "save_checkpoint",
]
