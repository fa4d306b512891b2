"""robota-edge driving the twin over rosbridge, against the same bundle rolled out in-process.

The software-in-the-loop path is the one a robot sees: `robota sim serve` runs the pick-place
twin in real time behind a rosbridge websocket on 127.0.0.1, and the edge runtime reads
/joint_states, /wrench, /part_pose and the JPEG camera topics through roslibpy, runs the bundle
with asynchronous inference, temporal ensembling and the safety filter, and publishes joint and
gripper commands. The in-process path runs the same bundle through `robota eval`.

Usage:
    python benchmarks/edge_sil.py --bundle runs/demo-*/bundle --episodes 10

Prints success per path with Wilson intervals, their per-seed agreement, and the runtime's
holds, safety interventions and inference latency.
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from robota.edge.bundle import load_bundle
from robota.edge.executor import AsyncExecutor
from robota.edge.ros import RESET_SERVICE, STATUS_SERVICE, RosBridgeIO
from robota.evaluate import EVAL_SEED_START, EvalConfig, evaluate, image_size_of
from robota.stats import wilson_interval

SERVER_DEADLINE_S = 60.0


def start_server(image_size: int, log_path: Path) -> tuple[subprocess.Popen, int]:
    """Start `robota sim serve` in real time on a free loopback port; return it and its port."""
    command = [
        sys.executable, "-m", "robota.sim_cli", "sim", "serve", "--task", "pick-place",
        "--host", "127.0.0.1", "--port", "0", "--mode", "realtime",
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


def run_sil_episodes(bundle_path: Path, url: str, seeds: list[int], max_ticks: int) -> list[dict]:
    """Run one edge episode per seed against the served twin; return a row per episode."""
    bundle = load_bundle(bundle_path)
    bridge = RosBridgeIO(url, bundle.spec)
    bridge.connect()
    rows = []
    try:
        for seed in seeds:
            bridge.call_trigger(RESET_SERVICE, args={"seed": seed})
            time.sleep(0.3)  # let the first messages of the new episode arrive
            executor = AsyncExecutor(bundle, bridge.read_frame, bridge.send_command)
            stats = executor.run(max_ticks=max_ticks)
            status = bridge.call_service(STATUS_SERVICE)
            rows.append(
                {
                    "seed": seed,
                    "success": bool(status.get("terminated") or status.get("is_success")),
                    "holds": stats.holds,
                    "interventions": dict(stats.interventions),
                    "inference_p50_ms": stats.inference_p50_ms,
                }
            )
            print(f"  seed {seed}: success={rows[-1]['success']} holds={stats.holds}", flush=True)
    finally:
        bridge.close()
    return rows


def describe(successes: int, episodes: int) -> str:
    low, high = wilson_interval(successes, episodes)
    return f"{successes}/{episodes} ({successes / episodes:.0%}), 95% CI [{low:.0%}, {high:.0%}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True, help="bundle folder")
    parser.add_argument("--episodes", type=int, default=10, help="seeds per path")
    parser.add_argument("--seed-start", type=int, default=EVAL_SEED_START, help="first seed")
    parser.add_argument("--max-ticks", type=int, default=80, help="control ticks per episode")
    args = parser.parse_args()
    seeds = [args.seed_start + k for k in range(args.episodes)]

    print("in-process rollout (robota eval, bundle through robota.edge)")
    report = evaluate(EvalConfig(policy=args.bundle, episodes=args.episodes, seed_start=seeds[0]))
    in_process = {row["seed"]: row["success"] for row in report["rows"]}

    print("software in the loop (robota-edge over rosbridge, real time)")
    image_size = image_size_of(load_bundle(args.bundle).spec)[0]
    with tempfile.TemporaryDirectory() as folder:
        server, port = start_server(image_size, Path(folder) / "server.log")
        try:
            rows = run_sil_episodes(args.bundle, f"ws://127.0.0.1:{port}", seeds, args.max_ticks)
        finally:
            stop_server(server)

    sil_successes = sum(row["success"] for row in rows)
    agreement = sum(row["success"] == in_process[row["seed"]] for row in rows)
    interventions: dict[str, int] = {}
    for row in rows:
        for reason, count in row["interventions"].items():
            interventions[reason] = interventions.get(reason, 0) + count
    print()
    print(f"{'in-process success':28s} {describe(sum(in_process.values()), len(seeds))}")
    print(f"{'software-in-the-loop success':28s} {describe(sil_successes, len(seeds))}")
    print(f"{'per-seed agreement':28s} {agreement}/{len(seeds)}")
    print(f"{'holds per episode (mean)':28s} {sum(r['holds'] for r in rows) / len(rows):.1f}")
    print(f"{'safety interventions':28s} {interventions or 'none'}")
    median_ms = sorted(r["inference_p50_ms"] for r in rows)[len(rows) // 2]
    print(f"{'inference p50 (median ep.)':28s} {median_ms:.2f} ms")


if __name__ == "__main__":
    main()
