"""robota-edge: inspect and benchmark policy bundles on the robot's computer, without torch.

Commands:
    inspect BUNDLE: print the manifest summary and verify the folder, the manifest, the
        model's sha256 and, with --trusted-key, the signature; then load the model with ONNX
        Runtime.
    bench --bundle BUNDLE: time batch-1 inference on observations synthesised from the spec.
    keygen: write a new Ed25519 key pair for signing bundles.
    sign BUNDLE: sign a bundle's manifest with a private key.
    run --bundle BUNDLE --ros ws://HOST:PORT: drive a robot (or the twin's rosbridge endpoint)
        with the bundle through the asynchronous executor and the safety filter. The bundle
        must be signed by a --trusted-key unless --allow-unsigned is given.
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from robota import __version__
from robota.edge.bundle import load_bundle, verify_bundle
from robota.edge.manifest import MANIFEST_FILE, SIGNATURE_FILE, Manifest, read_manifest
from robota.edge.signing import generate_key_pair, sign_manifest
from robota.edge.synthetic import synthesize_observations
from robota.errors import BundleError, RobotaError
from robota.spec import build_policy_inputs

logger = logging.getLogger(__name__)


def _summary_rows(manifest: Manifest) -> list[tuple[str, str]]:
    spec = manifest.spec
    robot = spec.robot
    provenance = manifest.provenance
    validation = manifest.validation
    inputs = "\n".join(f"{t.name} {t.dtype}{list(t.shape)}" for t in manifest.onnx.inputs)
    outputs = "\n".join(f"{t.name} {t.dtype}{list(t.shape)}" for t in manifest.onnx.outputs)
    chunking = f"{manifest.chunk_size} actions per chunk, {manifest.n_action_steps} executed"
    model = f"{manifest.onnx.file}, opset {manifest.onnx.opset}, sha256 {manifest.onnx.sha256}"
    return [
        ("format version", str(manifest.format_version)),
        ("robot", f"{robot.name}, joints {', '.join(robot.joint_names)}"),
        ("control rate", f"{spec.fps} Hz"),
        ("chunking", chunking),
        ("cameras", ", ".join(spec.camera_names) or "none"),
        ("model", model),
        ("inputs", inputs),
        ("outputs", outputs),
        (
            "parity",
            f"max abs error {validation.parity_max_abs_error:.2e} over {validation.parity_frames} "
            f"frames (tolerance {validation.tolerance:.0e})",
        ),
        ("dataset", provenance.dataset_fingerprint or "unknown"),
        ("checkpoint sha256", provenance.checkpoint_sha256 or "unknown"),
        ("exported", f"{provenance.created_utc} by robota {provenance.robota_version}"),
    ]


def _print_rows(rows: list[tuple[str, str]]) -> None:
    """Print name-value rows with aligned values; a multi-line value continues under itself."""
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        first, *rest = value.splitlines() or [""]
        print(f"  {name.ljust(width)}  {first}")
        for line in rest:
            print(f"  {' ' * width}  {line}")


def _cmd_inspect(args: argparse.Namespace) -> int:
    path = Path(args.bundle)
    manifest_path = path / MANIFEST_FILE
    print(f"bundle {path}")
    if manifest_path.is_file():
        try:
            _print_rows(_summary_rows(read_manifest(manifest_path)))
        except RobotaError:
            pass  # load_bundle below reports the same fault as the verification result.

    try:
        bundle = load_bundle(path, trusted_keys=args.trusted_key)
    except RobotaError as error:
        print(f"verification: FAILED: {error}")
        return 1
    if bundle.signed_by is not None:
        signature = f"signature valid, key {bundle.signed_by[:16]}…"
    elif bundle.signature_path is not None:
        signature = "signature file present, not checked without --trusted-key"
    else:
        signature = "unsigned"
    print(f"verification: OK (sha256 matches, model loads on {bundle.provider}; {signature})")
    return 0


def _cmd_keygen(args: argparse.Namespace) -> int:
    key = generate_key_pair(args.private_key, args.public_key)
    print(f"wrote private key {args.private_key} and public key {args.public_key} (id {key})")
    return 0


def _cmd_sign(args: argparse.Namespace) -> int:
    verify_bundle(args.bundle)
    path = sign_manifest(args.bundle, args.private_key)
    print(f"wrote {path}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.iterations < 1 or args.warmup < 0:
        print("error: --iterations must be >= 1 and --warmup >= 0", file=sys.stderr)
        return 2
    bundle = load_bundle(args.bundle, intra_op_threads=args.threads, variant=args.variant)
    observations = synthesize_observations(bundle.spec, 16, seed=args.seed)
    feeds = [build_policy_inputs(bundle.spec, [o]) for o in observations]

    for k in range(args.warmup):
        bundle.run(feeds[k % len(feeds)])
    durations_s = np.empty(args.iterations)
    for k in range(args.iterations):
        start = time.perf_counter()
        bundle.run(feeds[k % len(feeds)])
        durations_s[k] = time.perf_counter() - start

    p50, p99 = np.percentile(durations_s, [50, 99]) * 1e3
    print(
        f"bundle {bundle.path} on {bundle.provider}: batch-1 latency over {args.iterations} "
        f"runs: p50 {p50:.3f} ms, p99 {p99:.3f} ms, mean {durations_s.mean() * 1e3:.3f} ms"
    )
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from robota.edge.executor import AsyncExecutor
    from robota.edge.recorder import EdgeLogWriter
    from robota.edge.ros import RESET_SERVICE, RosBridgeIO

    if args.max_steps is not None and args.max_steps < 0:
        print("error: --max-steps must be >= 0", file=sys.stderr)
        return 2
    if args.duration is not None and not args.duration >= 0:
        print("error: --duration must be >= 0 seconds", file=sys.stderr)
        return 2
    if args.rate is not None and not (math.isfinite(args.rate) and args.rate > 0):
        print("error: --rate must be a positive number of Hz", file=sys.stderr)
        return 2
    bundle = _load_run_bundle(args)
    rate_hz = float(args.rate or bundle.spec.fps)
    if rate_hz != bundle.spec.fps:
        logger.warning(
            "running at %.1f Hz, but the policy was trained at %d Hz; its actions will play "
            "back faster or slower than recorded", rate_hz, bundle.spec.fps,
        )
    bridge = RosBridgeIO(args.ros, bundle.spec, task=args.task, camera_transport=args.camera_transport)
    recorder = EdgeLogWriter(args.record, bundle.spec, bundle=str(args.bundle)) if args.record else None
    bridge.connect()
    try:
        if args.reset:
            print(f"{RESET_SERVICE}: {bridge.call_trigger(RESET_SERVICE)}")
        executor = AsyncExecutor(
            bundle,
            bridge.read_frame,
            bridge.send_command,
            rate_hz=rate_hz,
            ensemble_decay=None if args.no_ensemble else args.ensemble_decay,
            recorder=recorder,
        )
        previous_handler = signal.signal(signal.SIGINT, lambda *_: executor.stop())
        try:
            stats = executor.run(max_ticks=args.max_steps, duration_s=args.duration)
        finally:
            signal.signal(signal.SIGINT, previous_handler)
    finally:
        bridge.close()
        if recorder is not None:
            recorder.close()
    _print_run_stats(stats, bridge)
    return 0


def _load_run_bundle(args: argparse.Namespace):
    """Load the bundle for `run`, signed by a trusted key unless --allow-unsigned is given.

    With --allow-unsigned, a bundle that has a signature file is still verified when trusted
    keys are given, so the flag accepts unsigned bundles but never a signature that fails.
    """
    path = Path(args.bundle)
    keys = args.trusted_key or []
    signed = (path / SIGNATURE_FILE).is_file()
    options = {"intra_op_threads": args.threads, "variant": args.variant}
    if args.allow_unsigned and not (signed and keys):
        reason = "it has no signature" if not signed else "no --trusted-key was given"
        logger.warning(
            "running bundle %s without a verified signature because of --allow-unsigned: %s",
            path, reason,
        )
        return load_bundle(path, **options)

    # A missing folder falls through to load_bundle, which reports it as such.
    if path.is_dir() and not signed:
        raise BundleError(
            f"{path}: bundle is unsigned ({SIGNATURE_FILE} not found), and `robota-edge run` "
            f"runs only signed bundles; sign it with `robota-edge sign {path} --private-key KEY` "
            "and pass --trusted-key PUB, or pass --allow-unsigned to run it unsigned"
        )
    if path.is_dir() and not keys:
        raise BundleError(
            f"{path}: bundle is signed, but no --trusted-key was given to verify it; pass "
            "--trusted-key PUB with the signer's public key, or --allow-unsigned to run it "
            "without the check"
        )
    return load_bundle(path, trusted_keys=keys, require_signature=True, **options)


def _print_run_stats(stats, bridge) -> None:
    loop = stats.loop
    interventions = ", ".join(f"{k} {v}" for k, v in sorted(stats.interventions.items())) or "none"
    _print_rows(
        [
            ("ticks", f"{loop.ticks} in {loop.duration_s:.1f} s, {loop.overruns} overruns"),
            ("commands", f"{bridge.commands_sent} sent, {bridge.commands_dropped} dropped while disconnected"),
            ("holds", f"{stats.holds} ({stats.no_action_ticks} without a ready action)"),
            ("interventions", interventions),
            ("inference", f"{stats.predictions} chunks, p50 {stats.inference_p50_ms:.2f} ms, p99 {stats.inference_p99_ms:.2f} ms"),
            ("tick overhead", f"p50 {stats.tick_overhead_p50_ms:.3f} ms, p99 {stats.tick_overhead_p99_ms:.3f} ms"),
            ("jitter", f"p99 {loop.jitter_p99_ms:.2f} ms"),
        ]
    )


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of `robota-edge`."""
    parser = argparse.ArgumentParser(prog="robota-edge", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"robota-edge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("inspect", help="print a bundle's manifest and verify the bundle")
    p.add_argument("bundle", type=Path, help="bundle folder")
    p.add_argument(
        "--trusted-key",
        type=Path,
        action="append",
        help="Ed25519 public key (PEM) the bundle must be signed with; repeat for several",
    )
    p.set_defaults(handler=_cmd_inspect)

    p = commands.add_parser("bench", help="time batch-1 inference of a bundle")
    p.add_argument("--bundle", type=Path, required=True, help="bundle folder")
    p.add_argument("--iterations", type=int, default=200, help="timed runs (default: 200)")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs first (default: 10)")
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: ORT's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthesised observations")
    p.add_argument("--variant", help="model variant to time instead of policy.onnx: fp16 or int8")
    p.set_defaults(handler=_cmd_bench)

    p = commands.add_parser("run", help="drive a robot over rosbridge with a bundle")
    p.add_argument("--bundle", type=Path, required=True, help="bundle folder")
    p.add_argument("--ros", required=True, help="rosbridge websocket, ws://HOST:PORT")
    p.add_argument("--rate", type=float, help="control rate in Hz (default: the bundle's fps)")
    p.add_argument("--max-steps", type=int, help="stop after this many control ticks")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--task", help="instruction for the policy (default: read from /task)")
    p.add_argument("--variant", help="model variant to run instead of policy.onnx: fp16 or int8")
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: ORT's)")
    p.add_argument(
        "--trusted-key",
        type=Path,
        action="append",
        help="Ed25519 public key (PEM) the bundle must be signed with; repeat for several",
    )
    p.add_argument(
        "--allow-unsigned",
        action="store_true",
        help="run a bundle without a signature, or without checking it when no --trusted-key "
        "is given (logged as a warning)",
    )
    p.add_argument(
        "--camera-transport",
        choices=("compressed", "raw"),
        default="compressed",
        help="images as CompressedImage on /camera/NAME/image/compressed (default) or rgb8 Image on /camera/NAME/image",
    )
    p.add_argument(
        "--ensemble-decay",
        type=float,
        default=0.01,
        help="weight decay m of the temporal ensembling, exp(-m*i) with i=0 the oldest chunk (default: 0.01)",
    )
    p.add_argument("--no-ensemble", action="store_true", help="execute the newest chunk alone")
    p.add_argument("--record", type=Path, help="write an edge log of every tick into this folder")
    p.add_argument("--reset", action="store_true", help="call /robota/reset before the first tick")
    p.set_defaults(handler=_cmd_run)

    p = commands.add_parser("keygen", help="write a new Ed25519 key pair for signing bundles")
    p.add_argument("--private-key", type=Path, required=True, help="private key file to create")
    p.add_argument("--public-key", type=Path, required=True, help="public key file to create")
    p.set_defaults(handler=_cmd_keygen)

    p = commands.add_parser("sign", help="sign a bundle's manifest with a private key")
    p.add_argument("bundle", type=Path, help="bundle folder")
    p.add_argument("--private-key", type=Path, required=True, help="Ed25519 private key (PEM)")
    p.set_defaults(handler=_cmd_sign)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `robota-edge`; return the exit status (0 success, 1 a robota error, 2 bad usage)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.handler(args)
    except RobotaError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
