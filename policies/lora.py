"""LoRA adapters for fine-tuning, and freezing of the image encoders.

LoRA (Hu et al., 2021, https://arxiv.org/abs/2106.09685) keeps a linear layer's pretrained
weight `W` `(out, in)` fixed and learns a low-rank update, so the layer computes
`x @ (W + alpha / rank * B @ A).T + bias` with `A` `(rank, in)` and `B` `(out, rank)`. `B`
starts at zero, so an adapted policy starts out computing exactly what the pretrained one did.

The adapters are torch parametrizations of `weight` (`torch.nn.utils.parametrize`), so an adapted
layer stays an `nn.Linear` and the policy's code runs unchanged. `merge_lora` replaces each
adapted layer by a plain one with the updated weight, after which the state dict has the keys of
the unadapted policy: a merged policy saves as an ordinary checkpoint and exports to ONNX like
any other.

Adapters go on the linear layers of every `Attention` and `FeedForward` module (the attention
query, key-value and output projections and both MLP linears of each transformer layer), except
inside an `ImageEncoder` or `InstructionEncoder`.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.nn.utils import parametrize

from robota.errors import SpecError
from robota.policies.layers import Attention, FeedForward, ImageEncoder, InstructionEncoder

# Modules whose linear layers get adapters, and the encoders whose inner modules never do.
_ADAPTED = (Attention, FeedForward)
_NOT_ADAPTED = (ImageEncoder, InstructionEncoder)


class LoRAUpdate(nn.Module):
    """The parametrization `W -> W + alpha / rank * B @ A` of one linear layer's weight.

    Args:
        out_features: Rows of the weight.
        in_features: Columns of the weight.
        rank: Rank of the update.
        alpha: Scaling numerator; the update is scaled by `alpha / rank`.
    """

    def __init__(self, out_features: int, in_features: int, rank: int, alpha: float) -> None:
        super().__init__()
        self.scaling = alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, in_features))
        self.lora_b = nn.Parameter(torch.zeros(out_features, rank))
        # A starts like an nn.Linear weight. B starts at zero, so the first update is zero.
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        # (out, rank) @ (rank, in) -> (out, in), the shape of the weight
        return weight + (self.lora_b @ self.lora_a) * self.scaling


def lora_target_names(policy: nn.Module) -> list[str]:
    """Return the names of the linear layers that `apply_lora` adapts, in module order."""
    excluded = [
        name for name, module in policy.named_modules() if isinstance(module, _NOT_ADAPTED)
    ]
    names = []
    for name, module in policy.named_modules():
        if not isinstance(module, _ADAPTED):
            continue
        if any(name == prefix or name.startswith(f"{prefix}.") for prefix in excluded):
            continue
        names += [
            f"{name}.{child_name}"
            for child_name, child in module.named_children()
            if isinstance(child, nn.Linear)
        ]
    return names


def apply_lora(policy: nn.Module, rank: int, alpha: float) -> list[str]:
    """Add LoRA adapters to the target linear layers and freeze their weights and biases.

    Other parameters keep their `requires_grad`; freeze them first where they should not train.

    Args:
        policy: The policy, changed in place.
        rank: Rank of each adapter; at most the smaller side of every adapted weight.
        alpha: Scaling numerator of the updates.

    Returns:
        The names of the adapted layers.

    Raises:
        SpecError: The policy has no layer to adapt, a layer has adapters already, or `rank`
            exceeds a weight's smaller side.
    """
    names = lora_target_names(policy)
    if not names:
        raise SpecError(
            f"{type(policy).__name__} has no attention or MLP linear layers to adapt with LoRA; "
            "fine-tune it with mode 'full'"
        )
    if has_lora(policy):
        raise SpecError("the policy has LoRA adapters already; merge them with merge_lora first")
    for name in names:
        layer = policy.get_submodule(name)
        smaller = min(layer.out_features, layer.in_features)
        if not 1 <= rank <= smaller:
            raise SpecError(
                f"LoRA rank {rank} does not fit layer {name} of shape "
                f"({layer.out_features}, {layer.in_features}); use a rank from 1 to {smaller}"
            )
    for name in names:
        layer = policy.get_submodule(name)
        layer.weight.requires_grad_(False)
        if layer.bias is not None:
            layer.bias.requires_grad_(False)
        update = LoRAUpdate(layer.out_features, layer.in_features, rank, alpha)
        update.to(device=layer.weight.device, dtype=layer.weight.dtype)
        parametrize.register_parametrization(layer, "weight", update)
    return names


def _adapted_names(module: nn.Module) -> list[str]:
    return [
        name
        for name, layer in module.named_modules()
        if parametrize.is_parametrized(layer, "weight")
        and any(isinstance(p, LoRAUpdate) for p in layer.parametrizations["weight"])
    ]


def has_lora(module: nn.Module) -> bool:
    """Return whether any layer of `module` has a LoRA adapter."""
    return bool(_adapted_names(module))


def merge_lora(module: nn.Module) -> nn.Module:
    """Replace every adapted layer by a plain `nn.Linear` with the updated weight; return `module`.

    Afterwards the state dict has the keys of the module before `apply_lora`. Each merged weight
    and bias keeps its `requires_grad`.
    """
    # Replacing the layer, rather than calling parametrize.remove_parametrizations, leaves alone
    # the parametrized class that deep copies of the module (a moving average) share.
    for name in _adapted_names(module):
        layer = module.get_submodule(name)
        original = layer.parametrizations["weight"].original
        plain = nn.Linear(
            layer.in_features,
            layer.out_features,
            bias=layer.bias is not None,
            device=original.device,
            dtype=original.dtype,
        )
        with torch.no_grad():
            plain.weight.copy_(layer.weight)
            if layer.bias is not None:
                plain.bias.copy_(layer.bias)
                plain.bias.requires_grad_(layer.bias.requires_grad)
        plain.weight.requires_grad_(original.requires_grad)
        plain.train(layer.training)
        parent_name, _, child_name = name.rpartition(".")
        setattr(module.get_submodule(parent_name), child_name, plain)
    return module


def merged_copy(module: nn.Module) -> nn.Module:
    """Return `module` itself without adapters, or a copy with every LoRA update merged."""
    if not has_lora(module):
        return module
    return merge_lora(copy.deepcopy(module))


def freeze_image_encoders(policy: nn.Module) -> int:
    """Stop gradients to every `ImageEncoder` of the policy; return the parameters frozen."""
    frozen = 0
    for module in policy.modules():
        if isinstance(module, ImageEncoder):
            for parameter in module.parameters():
                parameter.requires_grad_(False)
                frozen += parameter.numel()
    return frozen


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """Return `(trainable, total)` parameter counts, adapters included."""
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in module.parameters())
