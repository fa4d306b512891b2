"""GPU figures for every registered policy: training step speed and memory, ORT CUDA latency.

For each policy in `robota.policies.POLICIES`, at the twin's spec (two 96x96 cameras):
- samples per second and peak GPU memory of a training step (forward, backward, AdamW) in
  fp32, with bf16 autocast, and with bf16 autocast plus `torch.compile`;
- ONNX Runtime latency p50/p99 at batch 1 on the CUDA execution provider, against torch eager.

Weights and statistics are random (no dataset needed), so the figures measure speed only.

Usage on a machine with a CUDA GPU:
    python benchmarks/gpu_figures.py [--batch-size 64] [--steps 50]
`--device cpu` runs the same code on the CPU, to check the script before a GPU session.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import torch

from robota.edge.bundle import load_bundle, select_providers
from robota.edge.synthetic import synthesize_observations, synthesize_stats
from robota.export import export_policy
from robota.policies.registry import POLICIES, make_policy
from robota.spec import ACTION, TASK_TOKENS, UR5E, build_policy_inputs, make_arm_spec
from robota.stats import latency_percentiles_ms


def training_batch(spec, batch_size: int, chunk_size: int, device: torch.device) -> dict:
    """Random raw inputs plus an action chunk, in the training loader's sample contract."""
    observations = synthesize_observations(spec, batch_size)
    batch = {k: torch.from_numpy(v) for k, v in build_policy_inputs(spec, observations).items()}
    action_dim = spec.features[ACTION].shape[0]
    batch[ACTION] = torch.randn(batch_size, chunk_size, action_dim)
    batch["action_is_pad"] = torch.zeros(batch_size, chunk_size, dtype=torch.bool)
    return {k: v.to(device) for k, v in batch.items()}


def time_training(policy, batch, steps: int, precision: str, compiled: bool, device) -> dict:
    """Samples per second and peak memory (MiB, CUDA only) of `steps` training steps."""
    model = torch.compile(policy) if compiled else policy
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-4)
    dtype = torch.bfloat16 if precision == "bf16" else None

    def step() -> None:
        autocast = (
            torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
        )
        with autocast:
            loss = model(batch)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(5):  # warm-up, and compilation when compiled
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    batch_size = batch[TASK_TOKENS].shape[0]
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else float("nan")
    return {"samples_per_s": steps * batch_size / elapsed, "peak_mib": peak}


def time_inference(policy, spec, device, providers: list[str], calls: int) -> dict:
    """Batch-1 latency of torch eager and of ONNX Runtime on `providers`."""
    observations = synthesize_observations(spec, 16, seed=1)
    with tempfile.TemporaryDirectory() as folder:
        export_policy(policy.cpu(), Path(folder) / "bundle", observations=observations)
        bundle = load_bundle(Path(folder) / "bundle", providers=providers)
        feeds = [build_policy_inputs(spec, [o]) for o in observations]
        ort = _time_calls(bundle.run, feeds, calls)
    policy.to(device)
    torch_feeds = [{k: torch.from_numpy(v).to(device) for k, v in f.items()} for f in feeds]

    def torch_call(inputs) -> None:
        with torch.inference_mode():
            policy.predict_action_chunk(inputs)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return {"torch": _time_calls(torch_call, torch_feeds, calls), "onnxruntime": ort,
            "provider": bundle.provider}


def _time_calls(call, feeds: list, calls: int) -> dict[str, float]:
    for feed in feeds[:5]:
        call(feed)
    durations = []
    for k in range(calls):
        start = time.perf_counter()
        call(feeds[k % len(feeds)])
        durations.append(time.perf_counter() - start)
    return latency_percentiles_ms(durations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda or cpu")
    parser.add_argument("--batch-size", type=int, default=64, help="training samples per step")
    parser.add_argument("--steps", type=int, default=50, help="timed training steps")
    parser.add_argument("--calls", type=int, default=300, help="timed inference calls")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run this on a GPU machine, or pass --device cpu")
    device = torch.device(args.device)
    spec = make_arm_spec(UR5E, 10, {"wrist": (96, 96), "overhead": (96, 96)})
    stats = synthesize_stats(spec)
    wanted = ["CUDAExecutionProvider"] if device.type == "cuda" else ["CPUExecutionProvider"]
    providers = select_providers(wanted)
    if device.type == "cuda":
        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")

    for name in sorted(POLICIES):
        policy = make_policy(name, spec, stats).to(device).train()
        batch = training_batch(spec, args.batch_size, policy.config.chunk_size, device)
        print(f"\n{name} ({sum(p.numel() for p in policy.parameters()):,} parameters), "
              f"batch {args.batch_size}")
        fp32 = None
        for label, precision, compiled in (
            ("fp32", "fp32", False),
            ("bf16 autocast", "bf16", False),
            ("bf16 autocast + torch.compile", "bf16", True),
        ):
            result = time_training(policy, batch, args.steps, precision, compiled, device)
            fp32 = fp32 or result["samples_per_s"]
            print(f"  train {label:32s} {result['samples_per_s']:9.1f} samples/s "
                  f"({result['samples_per_s'] / fp32:.2f}x fp32), peak {result['peak_mib']:.0f} MiB")
        latency = time_inference(policy.eval(), spec, device, providers, args.calls)
        ratio = latency["torch"]["p50_ms"] / latency["onnxruntime"]["p50_ms"]
        print(f"  batch-1 torch eager          p50 {latency['torch']['p50_ms']:.2f} ms, "
              f"p99 {latency['torch']['p99_ms']:.2f} ms")
        print(f"  batch-1 ONNX Runtime ({latency['provider']}) p50 "
              f"{latency['onnxruntime']['p50_ms']:.2f} ms, p99 "
              f"{latency['onnxruntime']['p99_ms']:.2f} ms ({ratio:.2f}x faster than torch)")


if __name__ == "__main__":
    main()
