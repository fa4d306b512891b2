"""robota-edge: inspect and benchmark policy bundles on the robot's computer, without torch.

Commands:
    inspect BUNDLE: print the manifest summary and verify the folder, the manifest, the
        model's sha256 and, with --trusted-key, the signature; then load the model with ONNX
        Runtime.
    bench --bundle BUNDLE: time batch-1 inference on observations synthesised from the spec.
    keygen: write a new Ed25519 key pair for signing bundles.
    sign BUNDLE: sign a bundle's manifest with a private key.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from robota import __version__
from robota.edge.bundle import load_bundle, verify_bundle
from robota.edge.manifest import MANIFEST_FILE, Manifest, read_manifest
from robota.edge.signing import generate_key_pair, sign_manifest
from robota.edge.synthetic import synthesize_observations
from robota.errors import RobotaError
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
    bundle = load_bundle(args.bundle, intra_op_threads=args.threads)
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
    p.set_defaults(handler=_cmd_bench)

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
