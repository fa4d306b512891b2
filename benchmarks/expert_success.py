"""Scripted-expert success of every twin task with every built-in arm, randomised or not.

Prints one line per task, arm and randomisation setting: successes over the seeds, the mean
episode length and the failed seeds, so a failure can be replayed with its seed.

    python benchmarks/expert_success.py --seeds 100
    python benchmarks/expert_success.py --task peg-in-hole --robot panda --seeds 100
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import robota.sim
from robota.sim.expert import make_expert
from robota.sim.robots import ROBOTS
from robota.sim.rollout import run_episode


def measure(task: str, robot: str, randomized: bool, seeds: int) -> dict:
    """Run the task's expert on seeds 0 to `seeds - 1` and return its success figures."""
    env = robota.sim.make_env(task, robot=robot, render_images=False, domain_randomization=randomized)
    expert = make_expert(task, env)
    start = time.perf_counter()
    results = [run_episode(env, expert, seed) for seed in range(seeds)]
    env.close()
    return {
        "successes": sum(r.success for r in results),
        "mean_steps": float(np.mean([r.steps for r in results])),
        "failed_seeds": [r.seed for r in results if not r.success],
        "wall_s": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", action="append", help="task name; repeat it (default: every task)")
    parser.add_argument("--robot", action="append", help="arm; repeat it (default: ur5e and panda)")
    parser.add_argument("--seeds", type=int, default=100, help="seeds per setting, from 0")
    args = parser.parse_args()

    for task in args.task or list(robota.sim.TASKS):
        for robot in args.robot or list(ROBOTS):
            for randomized in (False, True):
                figures = measure(task, robot, randomized, args.seeds)
                setting = "randomised" if randomized else "nominal"
                print(
                    f"{task:16s} {robot:6s} {setting:10s} {figures['successes']}/{args.seeds}  "
                    f"mean {figures['mean_steps']:.1f} steps  failed seeds {figures['failed_seeds']}  "
                    f"{figures['wall_s']:.1f} s"
                )


if __name__ == "__main__":
    main()
