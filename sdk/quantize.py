"""Reduced-precision variants of an exported ONNX policy: fp16 weights and dynamic int8.

`export_bundle(..., variants=("fp16", "int8"))` calls `write_variant` for each name, measures the
variant against the full-precision model with `variant_parity_error`, and lists the file with its
sha256 and that error in the manifest. The runtime picks one with
`load_bundle(path, variant="int8")`. This runs at export time on a workstation: it needs onnx and
onnxruntime's quantisation tools, never on the robot.

- `fp16`: every float initializer and operation in half precision, with float32 inputs and
  outputs kept (onnxruntime's `convert_float_to_float16` with `keep_io_types=True`), so the
  runtime feeds the same arrays.
- `int8`: dynamic quantisation (`onnxruntime.quantization.quantize_dynamic`): int8 weights for
  MatMul and Gemm, with activations quantised on the fly per call. Convolutions stay float;
  a quantised convolution was not measured here.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robota.edge.manifest import VariantInfo, file_sha256
from robota.errors import MissingExtraError, UnknownNameError, check_choice
from robota.spec import Spec, build_policy_inputs

logger = logging.getLogger(__name__)

VARIANTS = ("fp16", "int8")
# Observations per ONNX Runtime call while comparing a variant with the full model.
PARITY_BATCH_SIZE = 16


def check_variants(variants: Sequence[str]) -> tuple[str, ...]:
    """Return the variant names without repeats, raising `UnknownNameError` on an unknown one."""
    if isinstance(variants, str):
        raise TypeError(f"variants must be a sequence of names, got the string {variants!r}")
    for name in variants:
        check_choice("model variant", name, VARIANTS)
    return tuple(dict.fromkeys(variants))


def write_variants(
    spec: Spec,
    folder: Path,
    model_file: str,
    variants: Sequence[str],
    observations: Sequence[Mapping[str, Any]],
) -> tuple[VariantInfo, ...]:
    """Write each variant of `folder / model_file` beside it and measure it against the model.

    Returns:
        One manifest entry per variant, with its file, sha256 and max abs error.
    """
    infos = []
    for name in variants:
        path = Path(folder) / variant_file_name(name)
        write_variant(name, Path(folder) / model_file, path)
        error = variant_parity_error(spec, Path(folder) / model_file, path, observations)
        logger.info("variant %s: max abs error %.2e against %s", name, error, model_file)
        infos.append(VariantInfo(name, path.name, file_sha256(path), error))
    return tuple(infos)


def variant_file_name(name: str) -> str:
    """Return the bundle file of a variant, for example `policy.int8.onnx`."""
    return f"policy.{name}.onnx"


def write_variant(name: str, model_path: Path, output_path: Path) -> None:
    """Write the `name` variant of the ONNX model at `model_path` to `output_path`.

    Raises:
        UnknownNameError: `name` is not `fp16` or `int8`.
        MissingExtraError: onnx is not installed.
    """
    if name not in VARIANTS:
        raise UnknownNameError("model variant", name, VARIANTS)
    try:
        import onnx
    except ImportError:
        raise MissingExtraError("onnx", "train") from None

    if name == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(onnx.load(str(model_path)), keep_io_types=True)
        onnx.save(model, str(output_path))
        return

    from onnxruntime.quantization import QuantType, quantize_dynamic

    # quantize_dynamic (onnxruntime 1.32) writes a temporary shape-inferred copy beside its
    # input, so it reads a copy in a scratch folder rather than one inside the bundle.
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / "model.onnx"
        source.write_bytes(Path(model_path).read_bytes())
        quantize_dynamic(
            str(source),
            str(output_path),
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul", "Gemm"],
        )


def variant_parity_error(
    spec: Spec,
    model_path: Path,
    variant_path: Path,
    observations: Sequence[Mapping[str, Any]],
) -> float:
    """Return the max abs difference of action chunks between a model and its variant.

    Both run on ONNX Runtime's CPU provider on the same observations, in action units.
    """
    import onnxruntime

    def session(path: Path):
        return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    reference, variant = session(model_path), session(variant_path)
    output = reference.get_outputs()[0].name
    max_error = 0.0
    for begin in range(0, len(observations), PARITY_BATCH_SIZE):
        inputs = build_policy_inputs(spec, observations[begin : begin + PARITY_BATCH_SIZE])
        (expected,) = reference.run([output], inputs)  # (batch, chunk, action_dim)
        (actual,) = variant.run([output], inputs)
        error = np.abs(actual.astype(np.float64) - expected)
        error[~np.isfinite(error)] = np.inf
        max_error = max(max_error, float(error.max()))
    return max_error
