"""robota-edge driving the twin over rosbridge, against the same bundle rolled out in-process.

The software-in-the-loop path is the one a robot sees: `robota sim serve` runs the pick-place
twin behind a rosbridge websocket on 127.0.0.1, and the edge runtime reads /joint_states,
/wrench, /part_pose and the JPEG camera topics through roslibpy, runs the bundle with temporal
ensembling and the safety filter, and publishes joint and gripper commands. The in-process path
runs the same bundle in the twin as `robota eval` does, without the safety filter.

`--mode realtime` (the default) runs `AsyncExecutor` against a twin that steps itself at 10 Hz.
`--mode lockstep` takes timing out: each tick predicts from the newest observation, filters and
sends the command, then calls `/robota/step`, so every observation is fresh and every command
reaches the step that follows it, as in-process.

Usage:
    python benchmarks/edge_sil.py --bundle runs/demo-*/bundle --episodes 20
    python benchmarks/edge_sil.py --bundle B --episodes 20 --mode lockstep --stop-on-one-reading

Prints success per path with Wilson intervals, per-seed agreement, the largest wrist force
reading per episode on both paths, protective stops, holds, the inference latency and the load
average.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from robota.edge.bundle import load_bundle
from robota.edge.executor import DEFAULT_ENSEMBLE_DECAY, AsyncExecutor, TemporalEnsembler
from robota.edge.policy import BundlePolicy
from robota.edge.ros import RESET_SERVICE, STATUS_SERVICE, STEP_SERVICE, RosBridgeIO
from robota.edge.safety import SafetyFilter
from robota.evaluate import EVAL_SEED_START, image_size_of
from robota.sim import make_env
from robota.sim.rollout import run_episode
from robota.spec import OBS_STATE, OBS_WRENCH, build_policy_inputs
from robota.stats import wilson_interval

SERVER_DEADLINE_S = 60.0
# Seconds between status calls that watch for the end of a real-time episode.
STATUS_POLL_S = 0.2
# Real-time ticks per twin step limit before an episode is abandoned. A loaded machine makes
# the twin overrun its period, so it may step fewer times than the executor ticks.
TICKS_PER_STEP_LIMIT = 2


def start_server(image_size: int, mode: str, log_path: Path) -> tuple[subprocess.Popen, int]:
    """Start `robota sim serve` on a free loopback port; return it and its port."""
    command = [
        sys.executable, "-m", "robota.sim_cli", "sim", "serve", "--task", "pick-place",
        "--host", "127.0.0.1", "--port", "0", "--mode", mode,
        "--image-size", str(image_size),
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + SERVER_DEADLINE_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}: {log_path.read_text()}")
        found = re.search(r"on ws://127\.0\.0\.1:(\d+)", log_path.read_text())
        if found:
            return process, int(found.group(1))
        time.sleep(0.2)
    stop_server(process)
    raise SystemExit(f"server not ready within {SERVER_DEADLINE_S} s: {log_path.read_text()}")


def stop_server(process: subprocess.Popen) -> None:
    """Stop the server by its PID: SIGTERM, then SIGKILL after a deadline."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def force_n(observation) -> float:
    """Magnitude of the wrist force reading in N."""
    return float(np.linalg.norm(np.asarray(observation[OBS_WRENCH])[:3]))


def run_in_process(bundle_path: Path, seeds: list[int]) -> dict[int, dict]:
    """Roll the bundle out in the twin as `robota eval` does; return a row per seed."""
    policy = BundlePolicy.from_path(bundle_path)
    env = make_env(
        "pick-place", robot=policy.spec.robot.name, image_size=image_size_of(policy.spec)
    )
    rows = {}
    try:
        for seed in seeds:
            forces: list[float] = []

            def record(observation, _action, forces=forces) -> None:
                forces.append(force_n(observation))

            episode = run_episode(env, policy, seed, on_step=record)
            rows[seed] = {
                "success": episode.success,
                "steps": episode.steps,
                "peak_force_n": max(forces),
            }
    finally:
        env.close()
    return rows


def make_safety(bundle, args: argparse.Namespace) -> SafetyFilter:
    """Build the manifest's filter, with the wrench rule of old bundles if asked."""
    config = bundle.manifest.safety_config()
    if args.stop_on_one_reading:
        config = dataclasses.replace(
            config,
            wrench_debounce_samples=1,
            max_transient_force_n=config.max_force_n,
            max_transient_torque_n_m=config.max_torque_n_m,
        )
    return SafetyFilter(bundle.spec.robot, config, bundle.spec.fps)


def run_realtime_episode(bundle, bridge: RosBridgeIO, args, step_limit: int) -> tuple[dict, dict]:
    """Run `AsyncExecutor` until the twin reports the episode's end; return status and counts."""
    forces: list[float] = []

    def record(frame, proposed, safe) -> None:
        if frame.observation is not None:
            forces.append(force_n(frame.observation))

    executor = AsyncExecutor(
        bundle, bridge.read_frame, bridge.send_command,
        safety=make_safety(bundle, args), ensemble_decay=args.ensemble_decay, recorder=record,
    )
    ended: dict = {}

    def watch_status() -> None:
        while "status" not in ended:
            status = bridge.call_service(STATUS_SERVICE)
            if status.get("terminated") or status.get("truncated"):
                ended["status"] = status
                executor.stop()
                return
            time.sleep(STATUS_POLL_S)

    watcher = threading.Thread(target=watch_status, daemon=True)
    watcher.start()
    stats = executor.run(max_ticks=TICKS_PER_STEP_LIMIT * step_limit)
    ended.setdefault("status", bridge.call_service(STATUS_SERVICE))
    counts = {"holds": stats.holds, "inference_p50_ms": stats.inference_p50_ms, "forces": forces}
    return ended["status"], counts | {"stop": executor.safety.protective_stop}


def run_lockstep_episode(bundle, bridge: RosBridgeIO, args, step_limit: int) -> tuple[dict, dict]:
    """Predict, filter, send and step the twin once per tick; return status and counts."""
    spec = bundle.spec
    num_joints = spec.robot.num_joints
    safety = make_safety(bundle, args)
    ensembler = TemporalEnsembler(bundle.manifest.chunk_size, args.ensemble_decay)
    forces: list[float] = []
    holds = 0
    status: dict = {}
    for tick in range(step_limit):
        observation = bridge.read_frame().observation
        state = np.asarray(observation[OBS_STATE], dtype=np.float64)
        if tick == 0:
            opening = state[num_joints] / spec.robot.gripper_max_opening_m
            safety.reset(state[:num_joints], gripper_command=float(np.clip(1.0 - opening, 0, 1)))
        ensembler.add(tick, bundle.run(build_policy_inputs(spec, [observation]))[0])
        safe = safety.filter(
            ensembler.action_at(tick),
            wrench=observation[OBS_WRENCH],
            joint_positions_rad=state[:num_joints],
        )
        bridge.send_command(safe.command)
        forces.append(force_n(observation))
        holds += safe.held
        # The server handles one connection's frames in order: the commands before the step.
        status = bridge.call_service(STEP_SERVICE)
        if status.get("terminated") or status.get("truncated"):
            break
    counts = {"holds": holds, "inference_p50_ms": float("nan"), "forces": forces}
    return status, counts | {"stop": safety.protective_stop}


def run_sil_episodes(bundle_path: Path, url: str, seeds: list[int], args) -> dict[int, dict]:
    """Run one edge episode per seed against the served twin; return a row per seed."""
    bundle = load_bundle(bundle_path)
    bridge = RosBridgeIO(url, bundle.spec)
    bridge.connect()
    run = run_realtime_episode if args.mode == "realtime" else run_lockstep_episode
    step_limit = args.step_limit
    rows = {}
    try:
        for seed in seeds:
            bridge.call_trigger(RESET_SERVICE, args={"seed": seed})
            time.sleep(0.3)  # let the first messages of the new episode arrive
            status, counts = run(bundle, bridge, args, step_limit)
            forces = counts.pop("forces")
            rows[seed] = {
                # The twin latches `terminated` on success and `truncated` at its step limit,
                # whichever comes first, as the in-process episode ends.
                "success": bool(status.get("terminated")),
                "steps": int(status.get("steps", 0)),
                "peak_force_n": max(forces, default=float("nan")),
                **counts,
            }
            row = rows[seed]
            print(
                f"  seed {seed}: success={row['success']} steps={row['steps']} "
                f"peak force {row['peak_force_n']:.0f} N, stop: {row['stop'] or 'none'}",
                flush=True,
            )
    finally:
        bridge.close()
    return rows


def describe(successes: int, episodes: int) -> str:
    low, high = wilson_interval(successes, episodes)
    return f"{successes}/{episodes} ({successes / episodes:.0%}), 95% CI [{low:.0%}, {high:.0%}]"


def describe_forces(rows: dict[int, dict]) -> str:
    peaks = np.array([row["peak_force_n"] for row in rows.values()])
    return (
        f"median {np.median(peaks):.0f} N, max {peaks.max():.0f} N, "
        f"{int((peaks > 100).sum())} episodes above 100 N"
    )


def print_summary(in_process: dict[int, dict], sil: dict[int, dict], args) -> None:
    seeds = sorted(in_process)
    stops = [f"{seed}: {sil[seed]['stop']}" for seed in seeds if sil[seed]["stop"]]
    agreement = sum(sil[seed]["success"] == in_process[seed]["success"] for seed in seeds)
    inference = sorted(row["inference_p50_ms"] for row in sil.values())[len(sil) // 2]
    in_process_successes = sum(row["success"] for row in in_process.values())
    sil_successes = sum(row["success"] for row in sil.values())
    holds = sum(row["holds"] for row in sil.values()) / len(sil)
    print()
    print(f"{'in-process success':30s} {describe(in_process_successes, len(seeds))}")
    print(f"{'software-in-the-loop success':30s} {describe(sil_successes, len(seeds))}")
    print(f"{'per-seed agreement':30s} {agreement}/{len(seeds)}")
    print(f"{'peak force, in-process':30s} {describe_forces(in_process)}")
    print(f"{'peak force, SIL':30s} {describe_forces(sil)}")
    print(f"{'protective stops':30s} {len(stops)}")
    for line in stops:
        print(f"  {line}")
    print(f"{'holds per episode (mean)':30s} {holds:.1f}")
    print(f"{'inference p50 (median ep.)':30s} {inference:.2f} ms")
    mode = f"{args.mode}, ensemble decay {args.ensemble_decay}"
    rule = "one reading" if args.stop_on_one_reading else "the manifest's wrench rule"
    print(f"{'settings':30s} {mode}, stop on {rule}")
    print(f"{'load average (1, 5, 15 min)':30s} {', '.join(f'{v:.1f}' for v in os.getloadavg())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True, help="bundle folder")
    parser.add_argument("--episodes", type=int, default=20, help="seeds per path")
    parser.add_argument("--seed-start", type=int, default=EVAL_SEED_START, help="first seed")
    parser.add_argument("--mode", choices=("realtime", "lockstep"), default="realtime",
                        help="how the served twin steps (default: realtime)")
    parser.add_argument("--step-limit", type=int, default=120,
                        help="the twin's episode step limit (default: 120, the pick-place default)")
    parser.add_argument("--no-ensemble", dest="ensemble_decay", action="store_const", const=None,
                        default=DEFAULT_ENSEMBLE_DECAY, help="execute the newest chunk alone")
    parser.add_argument("--stop-on-one-reading", action="store_true",
                        help="stop on any wrench reading above the sustained limit, as bundles "
                        "exported before the debounced rule do")
    args = parser.parse_args()
    seeds = [args.seed_start + k for k in range(args.episodes)]

    print(f"in-process rollout ({len(seeds)} seeds from {seeds[0]})", flush=True)
    in_process = run_in_process(args.bundle, seeds)

    print(f"software in the loop (robota-edge over rosbridge, {args.mode})", flush=True)
    image_size = image_size_of(load_bundle(args.bundle).spec)[0]
    with tempfile.TemporaryDirectory() as folder:
        server, port = start_server(image_size, args.mode, Path(folder) / "server.log")
        try:
            sil = run_sil_episodes(args.bundle, f"ws://127.0.0.1:{port}", seeds, args)
        finally:
            stop_server(server)
    print_summary(in_process, sil, args)


if __name__ == "__main__":
    main()
