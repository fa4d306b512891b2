"""Export modules of the flow-matching policy: Euler integration unrolled, or as an ONNX Loop.

Both take the raw inputs positionally in `policy_input_names(spec)` order, start the
integration from zeros and return the chunk in physical units, so they match
`FlowMatchingPolicy.predict_action_chunk` to float rounding.

- `unrolled`: `ChunkPolicy.inference_module`, whose Python loop the ONNX exporter traces, so the
  graph contains one copy of the action expert per Euler step.
- `loop`: the action expert is traced once, the Euler loop is compiled by TorchScript, and the
  whole module is traced around it. The TorchScript ONNX exporter (`dynamo=False`) turns the
  compiled loop into one ONNX `Loop` node whose body is the expert. The step count is a buffer,
  not a constant, because the exporter unrolls a loop whose trip count it can fold.

NOTE: torch 2.13 marks `torch.jit.trace` and `torch.jit.script` as deprecated, as it does the
TorchScript ONNX exporter that `robota.export` uses. The `loop` mode needs both for as long as
the export uses that exporter.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import torch
from torch import nn

from robota.errors import SpecError
from robota.spec import INSTRUCTION_MAX_BYTES, TASK_TOKENS

if TYPE_CHECKING:
    from robota.policies.flow import FlowMatchingPolicy

# Batch of the example inputs that tracing uses; 2, so that no size-1 batch becomes a constant.
_TRACE_BATCH = 2


class _Velocity(nn.Module):
    """`FlowMatchingPolicy.velocity` as a module, so it can be traced on its own."""

    def __init__(self, policy: FlowMatchingPolicy) -> None:
        super().__init__()
        self.policy = policy

    def forward(
        self, noisy: torch.Tensor, time: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        return self.policy.velocity(noisy, time, memory, mask)


class EulerLoop(nn.Module):
    """Euler integration from `t = 0` to 1, written for `torch.jit.script`.

    Args:
        velocity: Traced velocity `(x, time (1,), memory, mask) -> dx/dt`.
        num_steps: Euler steps.
    """

    def __init__(self, velocity: nn.Module, num_steps: int) -> None:
        super().__init__()
        self.velocity = velocity
        # A buffer rather than an int attribute: the exporter unrolls loops with constant counts.
        self.register_buffer("num_steps", torch.tensor(num_steps, dtype=torch.int64))

    def forward(self, start: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        steps = int(self.num_steps)
        dt = 1.0 / steps
        x = start
        for step in range(steps):
            # The same `step * dt` as `FlowMatchingPolicy.integrate`, so the times agree bit for bit.
            time = torch.full([1], step * dt, dtype=x.dtype, device=x.device)
            x = x + dt * self.velocity(x, time, memory, mask)
        return x


class FlowLoopModule(nn.Module):
    """The policy's trunk and output mapping around a compiled Euler loop; traced for export."""

    def __init__(self, policy: FlowMatchingPolicy, integrator: torch.jit.ScriptModule) -> None:
        super().__init__()
        self.policy = policy
        self.integrator = integrator

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        memory, mask = self.policy.encode(_named(self.policy, inputs))
        padded = self.integrator(self.policy.start_chunk(memory), memory, mask)
        return self.policy.unnormalize_action(padded)


def loop_inference_module(policy: FlowMatchingPolicy) -> torch.jit.ScriptModule:
    """Return a traced module whose Euler loop exports to one ONNX `Loop` node.

    The policy is traced in eval mode (no dropout) on zero-valued example inputs and put back
    in its mode afterwards. The traced module shares the policy's weights. Its dynamic batch
    axis comes from the traced shape operations.
    """
    was_training = policy.training
    policy.eval()
    try:
        inputs = example_inputs(policy)
        with warnings.catch_warnings(), torch.no_grad():
            # Tracing warns about every Python int it records; the traced shapes are checked by
            # the export parity tests at several batch sizes.
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.\w+. is deprecated")
            memory, mask = policy.encode(_named(policy, inputs))
            start = policy.start_chunk(memory)
            time = torch.zeros(1)
            velocity = torch.jit.trace(_Velocity(policy), (start, time, memory, mask))
            integrator = torch.jit.script(EulerLoop(velocity, policy.config.num_inference_steps))
            return torch.jit.trace(FlowLoopModule(policy, integrator), inputs)
    finally:
        policy.train(was_training)


def example_inputs(policy: FlowMatchingPolicy) -> tuple[torch.Tensor, ...]:
    """Return zero-valued raw inputs of batch 2 in `policy_input_names(spec)` order."""
    spec = policy.spec
    tensors: list[torch.Tensor] = []
    for name in policy.input_names:
        if name == TASK_TOKENS:
            tensors.append(torch.zeros(_TRACE_BATCH, INSTRUCTION_MAX_BYTES, dtype=torch.int64))
        elif spec.features[name].is_image:
            shape = spec.features[name].shape
            tensors.append(torch.zeros(_TRACE_BATCH, *shape, dtype=torch.uint8))
        else:
            tensors.append(torch.zeros(_TRACE_BATCH, *spec.features[name].shape))
    return tuple(tensors)


def _named(policy: FlowMatchingPolicy, inputs: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
    names = policy.input_names
    if len(inputs) != len(names):
        raise SpecError(f"expected {len(names)} inputs in the order {names}, got {len(inputs)}")
    return dict(zip(names, inputs, strict=True))
