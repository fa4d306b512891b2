"""Edge latency: ONNX Runtime against torch eager per policy, loop jitter and the runtime's overhead.

Runs once for every policy in `robota.policies.POLICIES`, or for those named with --policy.
Each run builds a default-size model with random weights for the pick-place twin's spec (two
96x96 cameras) and dataset-like statistics and exports it with fp16 and int8 variants. It then
measures, in one run on this machine:

1. batch-1 latency p50/p99: torch eager, and ONNX Runtime (CPU) on the fp32, fp16 and int8
   models, with ratios against torch;
2. tick start jitter p99 of `ControlLoop` at 30 Hz and 100 Hz with an empty tick (measured once,
   since no policy runs in it), and of `AsyncExecutor` with the policy's inference running in
   its worker thread;
3. the executor's own time per tick (blending, safety filter) and the time of
   `build_policy_inputs`, both beyond `session.run`.

No training is needed: the weights are random, so the figures are timings only.

    python benchmarks/edge_latency.py --threads 1 --iterations 100
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from robota.edge.bundle import load_bundle
from robota.edge.executor import AsyncExecutor, SensorFrame
from robota.edge.runtime import ControlLoop
from robota.edge.synthetic import synthesize_observations, synthesize_stats
from robota.export import export_policy
from robota.policies.registry import POLICIES, make_policy
from robota.spec import OBS_STATE, UR5E, build_policy_inputs, make_arm_spec, policy_input_names

# Joint angles of the twin's start pose, so the safety filter starts inside its box.
HOME_RAD = np.array([2.896648, -1.966792, 2.017901, -1.621908, -1.570789, -1.815746])


def percentiles_ms(durations_s: list[float]) -> tuple[float, float]:
    p50, p99 = np.percentile(durations_s, [50, 99]) * 1e3
    return float(p50), float(p99)


def time_calls(call, feeds: list, iterations: int, warmup: int) -> list[float]:
    for k in range(warmup):
        call(feeds[k % len(feeds)])
    durations = []
    for k in range(iterations):
        started = time.perf_counter()
        call(feeds[k % len(feeds)])
        durations.append(time.perf_counter() - started)
    return durations


def measure_inference(policy, bundle_dir: Path, spec, args) -> dict[str, tuple[float, float]]:
    observations = synthesize_observations(spec, 16, seed=1)
    feeds = [build_policy_inputs(spec, [o]) for o in observations]
    names = policy_input_names(spec)
    module = policy.inference_module().eval()

    def torch_call(feed):
        with torch.inference_mode():
            module(*(torch.from_numpy(feed[name]) for name in names))

    results = {"torch eager": percentiles_ms(time_calls(torch_call, feeds, args.iterations, args.warmup))}
    for variant in (None, "fp16", "int8"):
        bundle = load_bundle(bundle_dir, providers=["CPUExecutionProvider"], intra_op_threads=args.threads, variant=variant)
        durations = time_calls(bundle.run, feeds, args.iterations, args.warmup)
        results[f"onnxruntime {variant or 'fp32'}"] = percentiles_ms(durations)
    inputs_s = time_calls(lambda o: build_policy_inputs(spec, [o]), observations, args.iterations, args.warmup)
    results["build_policy_inputs"] = percentiles_ms(inputs_s)
    return results


def measure_empty_loop(args) -> dict[str, tuple[float, float, int]]:
    """Jitter p99, tick latency p99 and overruns of `ControlLoop` with an empty tick."""
    results = {}
    for rate_hz in (30.0, 100.0):
        stats = ControlLoop(lambda o: None, lambda: None, lambda a: None, rate_hz).run(duration_s=args.loop_seconds)
        results[f"ControlLoop, empty tick, {rate_hz:.0f} Hz"] = (stats.jitter_p99_ms, stats.latency_p99_ms, stats.overruns)
    return results


def measure_executor(name: str, bundle_dir: Path, spec, args):
    """Jitter p99, tick latency p99 and overruns of the executor, and its overhead per rate."""
    results = {}
    bundle = load_bundle(bundle_dir, providers=["CPUExecutionProvider"], intra_op_threads=args.threads)
    observation = synthesize_observations(spec, 1, seed=2)[0]
    observation[OBS_STATE] = np.append(HOME_RAD, 0.085).astype(np.float32)
    overheads = {}
    for rate_hz in (30.0, 100.0):
        def frame() -> SensorFrame:
            now = time.monotonic()
            return SensorFrame(observation, {"joint_states": now, "wrench": now})

        executor = AsyncExecutor(bundle, frame, lambda c: None, rate_hz=rate_hz)
        stats = executor.run(duration_s=args.loop_seconds)
        loop = stats.loop
        results[f"AsyncExecutor with {name} inference, {rate_hz:.0f} Hz"] = (loop.jitter_p99_ms, loop.latency_p99_ms, loop.overruns)
        overheads[rate_hz] = (stats.tick_overhead_p50_ms, stats.tick_overhead_p99_ms, stats.no_action_ticks, loop.ticks)
    return results, overheads


def measure_policy(name: str, spec, empty_loop: dict, args) -> None:
    """Export policy `name` with random weights, measure it and print its tables."""
    torch.manual_seed(0)
    policy = make_policy(name, spec, synthesize_stats(spec)).eval()
    parameters = sum(p.numel() for p in policy.parameters())

    with tempfile.TemporaryDirectory() as scratch:
        bundle_dir = Path(scratch) / "bundle"
        started = time.perf_counter()
        result = export_policy(policy, bundle_dir, variants=("fp16", "int8"))
        export_s = time.perf_counter() - started
        latency = measure_inference(policy, bundle_dir, spec, args)
        executor, overheads = measure_executor(name, bundle_dir, spec, args)

    image_size = args.image_size
    print(f"{name}, default size, {parameters / 1e6:.2f} M parameters, 2 cameras {image_size}x{image_size}, "
          f"chunk {result.manifest.chunk_size}; {args.threads} thread(s); exported in {export_s:.1f} s")
    for variant in result.manifest.variants:
        print(f"  variant {variant.name}: max abs error against fp32 {variant.parity_max_abs_error:.2e}")
    print()
    torch_p50 = latency["torch eager"][0]
    print(f"{'batch-1 latency':<28}{'p50 ms':>10}{'p99 ms':>10}{'torch p50 / this p50':>24}")
    for row, (p50, p99) in latency.items():
        ratio = f"{torch_p50 / p50:.2f}x" if row != "build_policy_inputs" else "-"
        print(f"{row:<28}{p50:>10.3f}{p99:>10.3f}{ratio:>24}")
    print()
    print(f"{'loop':<46}{'jitter p99 ms':>15}{'tick p99 ms':>13}{'overruns':>10}")
    for row, (jitter_p99, latency_p99, overruns) in {**empty_loop, **executor}.items():
        print(f"{row:<46}{jitter_p99:>15.3f}{latency_p99:>13.3f}{overruns:>10d}")
    print()
    session_p50 = latency["onnxruntime fp32"][0]
    for rate_hz, (p50, p99, no_action, ticks) in overheads.items():
        print(
            f"executor overhead per tick at {rate_hz:.0f} Hz: p50 {p50:.3f} ms, p99 {p99:.3f} ms "
            f"({100 * p50 / session_p50:.1f}% of an fp32 session.run p50); "
            f"{no_action} of {ticks} ticks had no action ready"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime intra-op threads")
    parser.add_argument("--iterations", type=int, default=100, help="timed calls per engine")
    parser.add_argument("--warmup", type=int, default=10, help="untimed calls first")
    parser.add_argument("--image-size", type=int, default=96, help="camera image height and width")
    parser.add_argument("--loop-seconds", type=float, default=3.0, help="seconds per loop measurement")
    parser.add_argument(
        "--policy",
        action="append",
        choices=sorted(POLICIES),
        help="policy to measure; repeat for several (default: every registered policy)",
    )
    args = parser.parse_args()
    # Random weights make the safety filter intervene on most ticks. Its log lines would bury
    # the table, but its time still counts in the executor overhead.
    logging.getLogger("robota.edge.safety").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)

    cameras = {"wrist": (args.image_size, args.image_size), "overhead": (args.image_size, args.image_size)}
    spec = make_arm_spec(UR5E, 10, cameras)
    empty_loop = measure_empty_loop(args)
    for index, name in enumerate(args.policy or list(POLICIES)):
        if index:
            print()
        measure_policy(name, spec, empty_loop, args)


if __name__ == "__main__":
    main()
