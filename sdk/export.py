"""Export a checkpoint to a bundle: an ONNX model, its manifest and a parity check.

`export_bundle` loads a checkpoint, exports its inference module to ONNX with a dynamic batch
axis, compares torch with ONNX Runtime on recorded (or synthesised) observations, and writes
`policy.onnx` and `manifest.json` into a new bundle folder. Everything is written into a hidden
sibling folder first and renamed into place at the end, so a failed export leaves no
half-written bundle behind.

The manifest schema lives in `robota.edge.manifest`, so the edge runtime reads what this
module writes without importing torch.
"""

from __future__ import annotations

import dataclasses
import datetime
import inspect
import json
import logging
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robota import __version__
from robota.edge.bundle import load_bundle
from robota.edge.manifest import (
    ACTION_CHUNK_OUTPUT,
    BATCH_AXIS,
    MANIFEST_FILE,
    MODEL_FILE,
    Manifest,
    OnnxInfo,
    Provenance,
    TensorInfo,
    Validation,
    file_sha256,
    write_manifest,
)
from robota.edge.safety import SafetyConfig
from robota.quantize import check_variants
from robota.edge.signing import load_private_key, sign_manifest
from robota.edge.synthetic import synthesize_observations
from robota.errors import (
    BundleError,
    CheckpointError,
    DatasetError,
    MissingExtraError,
    ParityError,
)
from robota.spec import ACTION, TASK, Spec, build_policy_inputs, policy_input_names

logger = logging.getLogger(__name__)

# Observations synthesised for the parity check when the caller gives none.
SYNTHETIC_PARITY_FRAMES = 16
# Observations per torch and ONNX Runtime call during the parity check.
PARITY_BATCH_SIZE = 16


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """The bundle an export wrote, with its parity check and duration.

    Attributes:
        bundle: The bundle folder.
        parity_max_abs_error: Max abs difference between torch and ONNX Runtime action chunks.
        frames_checked: Observations the parity check compared.
        manifest: The manifest written into the bundle.
        export_s: Wall time of the whole export, parity check included.
    """

    bundle: Path
    parity_max_abs_error: float
    frames_checked: int
    manifest: Manifest
    export_s: float


def export_bundle(
    checkpoint: Path,
    output: Path,
    *,
    observations: list[dict] | None = None,
    tolerance: float = 1e-4,
    opset: int = 17,
    overwrite: bool = False,
    signing_key: Path | None = None,
    variants: Sequence[str] = (),
    safety: SafetyConfig | None = None,
    integration: str | None = None,
    robot: str | None = None,
) -> ExportResult:
    """Export a checkpoint folder to a bundle folder.

    Args:
        checkpoint: Checkpoint folder from `robota train`.
        output: Bundle folder to create.
        observations: Raw observations for the parity check, ideally recorded ones (see
            `parity_observations_from_dataset`); `None` synthesises 16 from the spec.
        tolerance: Max abs difference between torch and ONNX Runtime allowed, in action units.
        opset: ONNX opset of the exported graph.
        overwrite: Replace `output` if it already contains a bundle.
        signing_key: Ed25519 private key (PEM file) to sign the manifest with; `None` leaves
            the bundle unsigned.
        variants: Reduced-precision copies to add, from `fp16` and `int8` (see
            `robota.quantize`); each is listed in the manifest with its sha256 and its max abs
            error against `policy.onnx`.
        safety: Limits of the edge safety filter to store in the manifest; `None` stores
            `SafetyConfig.default_for(robot)`.
        integration: How a policy that integrates a flow (`flow`) puts its integration steps
            into the graph: `unrolled` or `loop` (one ONNX `Loop` node); `None` uses the
            policy's default. Other policies accept only `None`.
        robot: Robot to export a checkpoint of several robots for (see
            `robota.policies.load_checkpoint`); `None` exports its primary robot.

    Raises:
        MissingExtraError: torch or onnx is not installed.
        CheckpointError: The checkpoint does not load or its model breaks the export contract.
        BundleError: `output` exists (without `overwrite`) or is not a bundle, or `integration`
            is set for a policy without integration steps.
        UnknownNameError: `integration` is not a mode the policy has, or `robot` is not one of
            the checkpoint's robots.
        ParityError: ONNX Runtime differs from torch by more than `tolerance`.
    """
    checkpoint = Path(checkpoint)
    _check_output(Path(output), overwrite)
    try:
        from robota.policies.checkpoint import checkpoint_sha256, load_checkpoint
    except ImportError as error:
        if error.name in ("torch", "safetensors"):
            raise MissingExtraError(error.name, "train") from None
        raise

    policy = load_checkpoint(checkpoint, robot=robot)
    return export_policy(
        policy,
        output,
        observations=observations,
        tolerance=tolerance,
        opset=opset,
        overwrite=overwrite,
        signing_key=signing_key,
        variants=variants,
        safety=safety,
        integration=integration,
        checkpoint_sha256=checkpoint_sha256(checkpoint),
        dataset_fingerprint=read_dataset_fingerprint(checkpoint),
    )


def export_policy(
    policy: Any,
    output: Path,
    *,
    observations: Sequence[Mapping[str, Any]] | None = None,
    tolerance: float = 1e-4,
    opset: int = 17,
    overwrite: bool = False,
    signing_key: Path | None = None,
    variants: Sequence[str] = (),
    safety: SafetyConfig | None = None,
    integration: str | None = None,
    checkpoint_sha256: str | None = None,
    dataset_fingerprint: str | None = None,
) -> ExportResult:
    """Export a loaded policy to a bundle folder; `export_bundle` without the checkpoint loading.

    Args:
        policy: A torch policy with `.spec`, `.config.chunk_size`, `.config.n_action_steps`
            and `inference_module()`, whose forward takes raw inputs positionally in
            `policy_input_names(spec)` order and returns `(batch, chunk, action_dim)` actions.
            Its parameters must be on the CPU; the export puts it in eval mode.
        output: Bundle folder to create.
        observations: Raw observations for the parity check; `None` synthesises them.
        tolerance: Max abs difference between torch and ONNX Runtime allowed.
        opset: ONNX opset of the exported graph.
        overwrite: Replace `output` if it already contains a bundle.
        signing_key: Ed25519 private key (PEM file) to sign the manifest with.
        variants: Reduced-precision copies to add: `fp16`, `int8`.
        safety: Safety limits for the manifest; `None` stores the robot's defaults.
        integration: `unrolled` or `loop` for a policy that integrates a flow; `None` uses the
            policy's default (see `export_bundle`).
        checkpoint_sha256: Hash of the source checkpoint, stored in the manifest.
        dataset_fingerprint: Fingerprint of the training dataset, stored in the manifest.

    Raises:
        BundleError: `output` exists (without `overwrite`) or is not a bundle, or `integration`
            is set for a policy without integration steps.
        UnknownNameError: `integration` is not a mode the policy has.
        ParityError: ONNX Runtime differs from torch by more than `tolerance`.
    """
    started = time.perf_counter()
    created_utc = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    output = Path(output)
    if not tolerance > 0:
        raise ValueError(f"tolerance must be positive, got {tolerance}")
    _check_output(output, overwrite)
    _check_integration(policy, integration)
    variants = check_variants(variants)
    trusted_keys = None
    if signing_key is not None:
        # Load the key before the export work, so a bad key path fails fast.
        trusted_keys = [load_private_key(signing_key).public_key()]
    observations = _parity_observations(policy.spec, observations)
    provenance = Provenance(
        dataset_fingerprint=dataset_fingerprint,
        checkpoint_sha256=checkpoint_sha256,
        robota_version=__version__,
        created_utc=created_utc,
    )

    output.parent.mkdir(parents=True, exist_ok=True)
    # A hidden sibling on the same file system, so the final rename is atomic. mkdir honours the
    # umask, unlike tempfile.mkdtemp's 0700.
    staging = output.with_name(f".{output.name}.{uuid.uuid4().hex[:8]}.tmp")
    staging.mkdir()
    try:
        manifest = _write_bundle(
            policy,
            staging,
            observations,
            provenance,
            tolerance=tolerance,
            opset=opset,
            output=output,
            integration=integration,
        )
        manifest = _add_variants_and_safety(manifest, staging, variants, safety, observations)
        if signing_key is not None:
            sign_manifest(staging, signing_key)
        # Load through the edge runtime once, so a bundle that robota-edge rejects never lands.
        for variant in (None, *variants):
            load_bundle(
                staging, providers=["CPUExecutionProvider"], trusted_keys=trusted_keys, variant=variant
            )
        _publish(staging, output, overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    export_s = time.perf_counter() - started
    max_error = manifest.validation.parity_max_abs_error
    logger.info(
        "exported %s in %.1f s; parity max abs error %.2e over %d frames",
        output, export_s, max_error, len(observations),
    )
    return ExportResult(output, max_error, len(observations), manifest, export_s)


def _write_bundle(
    policy: Any,
    staging: Path,
    observations: Sequence[Mapping[str, Any]],
    provenance: Provenance,
    *,
    tolerance: float,
    opset: int,
    output: Path,
    integration: str | None,
) -> Manifest:
    """Export the model into `staging`, check parity, write the manifest and return it."""
    spec: Spec = policy.spec
    chunk_size = int(policy.config.chunk_size)
    # The parity reference is always the policy's own eager module, so a traced export module
    # (the flow policy's `loop` mode) is checked against the code that trained.
    reference = policy.inference_module().eval()
    if integration is None:
        module = reference
    else:
        module = policy.inference_module(integration=integration).eval()
    model_path = staging / MODEL_FILE

    actual_opset = _export_onnx(module, spec, observations, model_path, opset, integration)
    max_error = _check_parity(
        reference, spec, chunk_size, model_path, observations, tolerance=tolerance, output=output
    )

    manifest = Manifest(
        spec=spec,
        chunk_size=chunk_size,
        n_action_steps=int(policy.config.n_action_steps),
        onnx=_onnx_info(spec, model_path, actual_opset, chunk_size),
        provenance=provenance,
        validation=Validation(max_error, len(observations), float(tolerance)),
    )
    write_manifest(manifest, staging)
    return manifest


def _add_variants_and_safety(
    manifest: Manifest,
    staging: Path,
    variants: Sequence[str],
    safety: SafetyConfig | None,
    observations: Sequence[Mapping[str, Any]],
) -> Manifest:
    """Write the variant models, then rewrite the manifest with them and the safety limits.

    This runs before signing, so the signed manifest is the final one.
    """
    from robota.quantize import write_variants

    manifest = dataclasses.replace(
        manifest,
        safety=safety or SafetyConfig.default_for(manifest.spec.robot),
        variants=write_variants(manifest.spec, staging, MODEL_FILE, variants, observations),
    )
    write_manifest(manifest, staging)
    return manifest


def read_dataset_fingerprint(checkpoint: Path) -> str | None:
    """Return the dataset fingerprint that a checkpoint's config.json records, or `None`.

    `save_checkpoint` stores extra entries at the top level of config.json, and older writers
    nested them under `extra`, so both places are read.
    """
    path = Path(checkpoint) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        logger.warning("cannot read the dataset fingerprint from %s: %s", path, error)
        return None
    if not isinstance(config, dict):
        logger.warning(
            "%s is not a JSON object; the manifest will have no dataset fingerprint", path
        )
        return None

    fingerprint = config.get("dataset_fingerprint")
    extra = config.get("extra")
    if fingerprint is None and isinstance(extra, dict):
        fingerprint = extra.get("dataset_fingerprint")
    if fingerprint is None:
        logger.warning("%s has no dataset_fingerprint; the manifest will have none", path)
        return None
    return str(fingerprint)


def parity_observations_from_dataset(dataset_dir: Path, n: int) -> list[dict]:
    """Read `n` observations spread over a dataset's episodes, for the export parity check.

    Episodes are chosen evenly over the dataset, and frames evenly over each chosen episode,
    so the check covers starts, grasps and ends of episodes alike.

    Args:
        dataset_dir: Dataset folder (LeRobot v3.0 layout).
        n: Observations requested; fewer are returned when the dataset has fewer frames.

    Returns:
        Raw observations keyed by feature key, one frame each.

    Raises:
        DatasetError: The dataset has no frames.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    from robota.datasets import open_dataset

    dataset = open_dataset(Path(dataset_dir))
    num_episodes = int(dataset.num_episodes)
    spread = np.linspace(0, num_episodes - 1, min(n, num_episodes)).round().astype(int)
    episode_indices = np.unique(spread)
    observations: list[dict] = []
    for position, episode_index in enumerate(episode_indices):
        remaining_episodes = len(episode_indices) - position
        frame_count = -(-(n - len(observations)) // remaining_episodes)  # ceil division
        observations.extend(_episode_frames(dataset.episode(int(episode_index)), frame_count))
    if not observations:
        raise DatasetError(f"{dataset_dir}: no frames to check parity on; record episodes first")
    if len(observations) < n:
        logger.warning(
            "%s has only %d frames for the %d requested", dataset_dir, len(observations), n
        )
    return observations[:n]


def _episode_frames(episode: Mapping[str, Any], count: int) -> list[dict]:
    """Split `count` evenly spaced frames of an episode into per-frame observations."""
    if TASK in episode:
        length = len(episode[TASK])
    else:
        length = min(len(v) for v in episode.values() if isinstance(v, (np.ndarray, list)))
    if length == 0 or count < 1:
        return []
    frame_indices = np.unique(np.linspace(0, length - 1, min(count, length)).round().astype(int))
    per_frame = {
        key: value
        for key, value in episode.items()
        if isinstance(value, (np.ndarray, list)) and len(value) == length
    }
    return [{key: value[int(t)] for key, value in per_frame.items()} for t in frame_indices]


def _check_output(output: Path, overwrite: bool) -> None:
    """Raise BundleError unless `output` is free, or is a bundle and `overwrite` is set."""
    if not output.exists():
        return
    if not overwrite:
        raise BundleError(
            f"{output}: already exists; choose another output folder, or remove it or pass "
            "overwrite=True (robota export --overwrite) to replace the bundle"
        )
    if not (output.is_dir() and (output / MANIFEST_FILE).is_file()):
        raise BundleError(
            f"{output}: exists and is not a bundle (no {MANIFEST_FILE}), so it is not replaced; "
            "choose another output folder"
        )


def _publish(staging: Path, output: Path, overwrite: bool) -> None:
    """Rename the finished staging folder to `output`, replacing an old bundle if allowed."""
    _check_output(output, overwrite)
    if not output.exists():
        os.replace(staging, output)
        return
    retired = output.with_name(f".{output.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(output, retired)
    os.replace(staging, output)
    shutil.rmtree(retired, ignore_errors=True)


def _parity_observations(
    spec: Spec, observations: Sequence[Mapping[str, Any]] | None
) -> list[Mapping[str, Any]]:
    if observations is None:
        logger.info(
            "no observations given for the parity check; synthesising %d from the spec",
            SYNTHETIC_PARITY_FRAMES,
        )
        return synthesize_observations(spec, SYNTHETIC_PARITY_FRAMES)
    if len(observations) == 0:
        raise ValueError("observations is empty; pass at least one or None to synthesise them")
    return list(observations)


def _check_integration(policy: Any, integration: str | None) -> None:
    """Raise BundleError when `integration` is set for a policy without integration steps."""
    if integration is None:
        return
    parameters = inspect.signature(policy.inference_module).parameters
    if "integration" not in parameters:
        raise BundleError(
            f"integration={integration!r} applies only to policies that integrate a flow, and "
            f"policy {getattr(policy, 'name', type(policy).__name__)!r} has no integration "
            "steps; leave integration unset (drop --integration)"
        )


def _import_torch():
    try:
        import torch
    except ImportError:
        raise MissingExtraError("torch", "train") from None
    return torch


def _export_onnx(
    module, spec: Spec, observations, model_path: Path, opset: int, integration: str | None
) -> int:
    """Export `module` to `model_path` with a dynamic batch axis; return the graph's opset.

    `integration`, when set, is recorded in the model's metadata as `robota.integration`.

    NOTE: this uses the TorchScript exporter (`dynamo=False`), which torch deprecates since 2.9.
    It writes the requested opset directly, while the dynamo exporter (torch 2.13, onnxscript
    0.7) builds opset 18 and failed to convert a small conv+MLP policy down to 17.
    """
    torch = _import_torch()
    try:
        import onnx
    except ImportError:
        raise MissingExtraError("onnx", "train") from None

    names = policy_input_names(spec)
    # Batch 2, so that no size-1 batch gets folded into the graph as a constant.
    sample = list(observations[:2]) if len(observations) >= 2 else [observations[0]] * 2
    inputs = build_policy_inputs(spec, sample)
    args = tuple(torch.from_numpy(inputs[name]) for name in names)
    dynamic_axes = {name: {0: BATCH_AXIS} for name in [*names, ACTION_CHUNK_OUTPUT]}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", message="The feature will be removed")
        torch.onnx.export(
            module,
            args,
            str(model_path),
            input_names=names,
            output_names=[ACTION_CHUNK_OUTPUT],
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            dynamo=False,
        )

    model = onnx.load(str(model_path))
    onnx.checker.check_model(model)
    model.metadata_props.add(key="robota.spec_fingerprint", value=spec.fingerprint())
    model.metadata_props.add(key="robota.version", value=__version__)
    if integration is not None:
        model.metadata_props.add(key="robota.integration", value=integration)
    onnx.save(model, str(model_path))
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _onnx_info(spec: Spec, model_path: Path, opset: int, chunk_size: int) -> OnnxInfo:
    # Shapes and dtypes come from build_policy_inputs, the same function that feeds the model.
    sample = build_policy_inputs(spec, synthesize_observations(spec, 1))
    inputs = tuple(
        TensorInfo(name, str(sample[name].dtype), (BATCH_AXIS, *sample[name].shape[1:]))
        for name in policy_input_names(spec)
    )
    output = TensorInfo(
        ACTION_CHUNK_OUTPUT, "float32", (BATCH_AXIS, chunk_size, spec.robot.action_dim)
    )
    return OnnxInfo(MODEL_FILE, file_sha256(model_path), opset, inputs, (output,))


def _check_parity(
    module,
    spec: Spec,
    chunk_size: int,
    model_path: Path,
    observations: Sequence[Mapping[str, Any]],
    *,
    tolerance: float,
    output: Path,
) -> float:
    """Compare torch with ONNX Runtime (CPU) in batches; return the max abs error.

    Raises:
        CheckpointError: The torch module returns the wrong shape or non-finite actions.
        ParityError: The max abs error exceeds `tolerance` or ONNX Runtime returns non-finite
            actions where torch does not.
    """
    torch = _import_torch()
    import onnxruntime

    session = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    names = policy_input_names(spec)
    max_error, worst = 0.0, (0, 0, 0)
    for begin in range(0, len(observations), PARITY_BATCH_SIZE):
        batch = observations[begin : begin + PARITY_BATCH_SIZE]
        inputs = build_policy_inputs(spec, batch)
        with torch.inference_mode():
            expected = module(*(torch.from_numpy(inputs[name]) for name in names)).numpy()
        _check_torch_chunks(expected, (len(batch), chunk_size, spec.robot.action_dim))
        (actual,) = session.run([ACTION_CHUNK_OUTPUT], inputs)  # (batch, chunk, action_dim)

        error = np.abs(actual.astype(np.float64) - expected)
        error[~np.isfinite(error)] = np.inf
        index = np.unravel_index(np.argmax(error), error.shape)
        if error[index] > max_error:
            max_error = float(error[index])
            worst = (begin + int(index[0]), int(index[1]), int(index[2]))

    if max_error > tolerance:
        frame, step, dim = worst
        action_name = (spec.features[ACTION].names or range(spec.robot.action_dim))[dim]
        raise ParityError(
            f"{output / MODEL_FILE}: ONNX Runtime differs from torch by max abs error "
            f"{max_error:.3e}, above the tolerance {tolerance:.1e}, at parity observation "
            f"{frame} (task {str(observations[frame].get(TASK))!r}), chunk step {step}, "
            f"action {action_name!r}; look for operators that export differently, or pass a "
            "larger tolerance if this error is acceptable"
        )
    return max_error


def _check_torch_chunks(chunks: np.ndarray, expected_shape: tuple[int, int, int]) -> None:
    if chunks.shape != expected_shape:
        raise CheckpointError(
            f"the policy's inference module returned shape {chunks.shape}, expected "
            f"(batch, chunk_size, action_dim) = {expected_shape}; fix inference_module()"
        )
    if not np.isfinite(chunks).all():
        raise CheckpointError(
            "the policy's inference module returned non-finite actions on the parity "
            "observations; check the checkpoint's weights and normalisation statistics"
        )
