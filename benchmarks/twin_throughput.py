"""Measure the pick-place twin's throughput side by side and print the ratios.

Rows, each the median of `--rounds` interleaved rounds (with the range):

- raw `mj_step` of the twin's model in the same scene, as control periods per second
  (`substeps` physics steps each): the baseline that the environment's overhead is relative to;
- `env.step` without rendering, and its overhead ratio (time per step / time of its physics);
- `env.step` with both cameras rendering at 96 x 96 and at 224 x 224;
- a two-worker `make_vector_env` against one process, both without rendering and at 96 x 96;
- lock-step round trips through the SIL server (`/robota/step` with joint states).

Run: `python benchmarks/twin_throughput.py [--steps 300] [--rounds 3] [--workers 2]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections.abc import Callable

# MuJoCo reads MUJOCO_GL on import, and this script imports it before robota.sim sets it.
os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

import robota.sim  # noqa: E402
from robota.sim.vector import make_vector_env  # noqa: E402
from robota.spec import OBS_STATE  # noqa: E402

WARMUP_STEPS = 5


def hold_action(observation: dict) -> np.ndarray:
    """Return the action that holds the arm still with the gripper open."""
    return np.r_[observation[OBS_STATE][:6], 0.0].astype(np.float32)


def env_steps_per_s(steps: int, **env_kwargs) -> float:
    """Return `env.step` calls per second of one environment holding the arm still."""
    env = robota.sim.make_env("pick-place", **env_kwargs)
    observation, _ = env.reset(seed=0)
    action = hold_action(observation)
    for _ in range(WARMUP_STEPS):
        env.step(action)
    start = time.perf_counter()
    for _ in range(steps):
        env.step(action)
    elapsed_s = time.perf_counter() - start
    env.close()
    return steps / elapsed_s


def raw_periods_per_s(steps: int) -> float:
    """Return control periods per second of bare `mj_step` calls in the same scene."""
    env = robota.sim.make_env("pick-place", render_images=False)
    env.reset(seed=0)
    unwrapped = env.unwrapped
    model, data, substeps = unwrapped.model, unwrapped.data, unwrapped.substeps
    for _ in range(WARMUP_STEPS * substeps):
        mujoco.mj_step(model, data)
    start = time.perf_counter()
    for _ in range(steps * substeps):
        mujoco.mj_step(model, data)
    elapsed_s = time.perf_counter() - start
    env.close()
    return steps / elapsed_s


def vector_steps_per_s(steps: int, workers: int, **env_kwargs) -> float:
    """Return environment steps per second, summed over `workers` spawned workers."""
    vector_env = make_vector_env("pick-place", workers, **env_kwargs)
    try:
        observations, _ = vector_env.reset(seed=0)
        actions = np.concatenate(
            [observations[OBS_STATE][:, :6], np.zeros((workers, 1), dtype=np.float32)], axis=1
        )
        for _ in range(WARMUP_STEPS):
            vector_env.step(actions)
        start = time.perf_counter()
        for _ in range(steps):
            vector_env.step(actions)
        elapsed_s = time.perf_counter() - start
    finally:
        vector_env.close()
    return workers * steps / elapsed_s


def sil_steps_per_s(steps: int, image_size: int, cameras: bool) -> float:
    """Return lock-step `/robota/step` round trips per second through an in-process SIL server."""
    from websockets.asyncio.client import connect

    from robota.sim.sil import SilConfig, SilServer

    async def measure() -> float:
        server = SilServer(SilConfig(port=0, mode="lockstep", image_size=image_size))
        await server.start()
        try:
            async with connect(f"ws://127.0.0.1:{server.port}", max_size=2**24) as websocket:
                topics = ["/joint_states"]
                if cameras:
                    topics += ["/camera/wrist/image/compressed", "/camera/overhead/image/compressed"]
                for topic in topics:
                    await websocket.send(json.dumps({"op": "subscribe", "topic": topic}))
                request = json.dumps({"op": "call_service", "service": "/robota/step", "id": "s"})

                async def step() -> None:
                    await websocket.send(request)
                    while json.loads(await websocket.recv())["op"] != "service_response":
                        pass

                for _ in range(WARMUP_STEPS):
                    await step()
                start = time.perf_counter()
                for _ in range(steps):
                    await step()
                return steps / (time.perf_counter() - start)
        finally:
            await server.close()

    return asyncio.run(measure())


def measure_rounds(rounds: int, measures: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """Run every measure once per round, interleaved, so a busy spell hits all rows alike."""
    results: dict[str, list[float]] = {name: [] for name in measures}
    for _ in range(rounds):
        for name, measure in measures.items():
            results[name].append(measure())
    return results


def format_rate(values: list[float]) -> str:
    return f"{statistics.median(values):8.0f}  ({min(values):.0f}-{max(values):.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="timed steps per measure")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per measure")
    parser.add_argument("--workers", type=int, default=2, help="vector-env worker processes")
    args = parser.parse_args()
    steps, workers = args.steps, args.workers
    few = max(steps // 5, 20)

    results = measure_rounds(
        args.rounds,
        {
            "raw mj_step (per control period)": lambda: raw_periods_per_s(steps),
            "env.step, no rendering": lambda: env_steps_per_s(steps, render_images=False),
            "env.step, 2 cameras 96x96": lambda: env_steps_per_s(few, image_size=(96, 96)),
            "env.step, 2 cameras 224x224": lambda: env_steps_per_s(few, image_size=(224, 224)),
            f"vector env {workers} workers, no rendering": lambda: vector_steps_per_s(
                steps, workers, render_images=False
            ),
            f"vector env {workers} workers, 96x96": lambda: vector_steps_per_s(
                few, workers, image_size=(96, 96)
            ),
            "SIL lock-step, joint states": lambda: sil_steps_per_s(steps, 96, cameras=False),
            "SIL lock-step, + 2 JPEG 96x96": lambda: sil_steps_per_s(few, 96, cameras=True),
        },
    )
    median = {name: statistics.median(values) for name, values in results.items()}
    baselines = {
        "env.step, no rendering": "raw mj_step (per control period)",
        "env.step, 2 cameras 224x224": "env.step, 2 cameras 96x96",
        f"vector env {workers} workers, no rendering": "env.step, no rendering",
        f"vector env {workers} workers, 96x96": "env.step, 2 cameras 96x96",
        "SIL lock-step, joint states": "env.step, no rendering",
        "SIL lock-step, + 2 JPEG 96x96": "env.step, 2 cameras 96x96",
    }

    print(f"steps per second, median (range) of {args.rounds} rounds")
    width = max(len(name) for name in results)
    for name, values in results.items():
        line = f"{name.ljust(width)}  {format_rate(values)}"
        if name in baselines:
            line += f"   {median[name] / median[baselines[name]]:5.2f}x {baselines[name]}"
        print(line)
    overhead = median["raw mj_step (per control period)"] / median["env.step, no rendering"]
    print(f"env overhead ratio (env step time / its physics time): {overhead:.2f}")


if __name__ == "__main__":
    main()
