"""The bundle manifest: its schema, reading, writing and the sha256 of bundle files.

A bundle is a folder with `policy.onnx` and `manifest.json`. The manifest stores the feature
spec, the control rate, the chunking, the robot's joints and limits, the ONNX graph's inputs and
outputs with the model file's sha256, where the model came from, and the parity check the
exporter ran. A detached Ed25519 signature over the exact bytes of `manifest.json` may sit beside
it as `manifest.json.sig`. Because the manifest stores the model's sha256, that one signature
covers the model, the spec and the limits.

This module imports numpy (through `robota.spec`) and the standard library only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from robota.edge.safety import SafetyConfig
from robota.errors import BundleError, SpecError
from robota.spec import Spec

MANIFEST_FILE = "manifest.json"
MODEL_FILE = "policy.onnx"
SIGNATURE_FILE = "manifest.json.sig"
FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)
# Name of the dynamic first axis in the manifest's tensor shapes and in the ONNX graph.
BATCH_AXIS = "batch"
# The one ONNX output: the action chunk `(batch, chunk, action_dim)` in physical units.
ACTION_CHUNK_OUTPUT = "action_chunk"

_EXPORT_AGAIN = "export the bundle again with `robota export`"


def file_sha256(path: Path) -> str:
    """Hash a file in 1 MiB blocks and return the hex digest."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """Name, dtype and shape of one ONNX input or output.

    Attributes:
        name: Tensor name in the graph; inputs are named by `robota.spec.policy_input_names`.
        dtype: numpy dtype name: `uint8`, `float32` or `int64`.
        shape: Dimensions, with `"batch"` for the dynamic first axis.
    """

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclasses.dataclass(frozen=True)
class OnnxInfo:
    """The model file and its graph signature.

    Attributes:
        file: File name of the model inside the bundle folder.
        sha256: Hex sha256 of the model file.
        opset: Default-domain opset version of the graph.
        inputs: Graph inputs in `policy_input_names(spec)` order.
        outputs: Graph outputs; the first is the action chunk.
    """

    file: str
    sha256: str
    opset: int
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "sha256": self.sha256,
            "opset": self.opset,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }


@dataclasses.dataclass(frozen=True)
class Provenance:
    """Origin of the model: training data, checkpoint and exporter.

    Attributes:
        dataset_fingerprint: Fingerprint of the training dataset, if the checkpoint recorded it.
        checkpoint_sha256: Hash of the checkpoint the model was exported from, if known.
        robota_version: Version of robota that exported the bundle.
        created_utc: Export time, ISO 8601 in UTC.
    """

    dataset_fingerprint: str | None
    checkpoint_sha256: str | None
    robota_version: str
    created_utc: str


@dataclasses.dataclass(frozen=True)
class Validation:
    """The parity check between the source model and ONNX Runtime that the exporter ran.

    Attributes:
        parity_max_abs_error: Max abs difference of the action chunks, in action units.
        parity_frames: Observations the check compared.
        tolerance: Max abs difference the exporter accepted.
    """

    parity_max_abs_error: float
    parity_frames: int
    tolerance: float


@dataclasses.dataclass(frozen=True)
class VariantInfo:
    """A reduced-precision copy of the model that a bundle may carry beside `policy.onnx`.

    Attributes:
        name: Variant name: `fp16` or `int8`.
        file: File name inside the bundle folder, for example `policy.int8.onnx`.
        sha256: Hex sha256 of the file.
        parity_max_abs_error: Max abs difference from the full-precision ONNX model's action
            chunks on the export's parity observations, in action units.
    """

    name: str
    file: str
    sha256: str
    parity_max_abs_error: float


@dataclasses.dataclass(frozen=True)
class Manifest:
    """The contents of `manifest.json`.

    `fps` and `robot` are written to the file as top-level keys for readers that do not parse
    the spec; they always equal `spec.fps` and `spec.robot`.

    Attributes:
        spec: Feature spec the model was trained on.
        chunk_size: Actions per predicted chunk.
        n_action_steps: Actions of each chunk executed before the next prediction.
        onnx: Model file, hash and graph signature.
        provenance: Where the model came from.
        validation: The exporter's parity check.
        safety: Limits of the safety filter beyond the robot's; `None` in bundles written
            before the section existed, and then `SafetyConfig.default_for(robot)` applies.
        variants: Reduced-precision copies of the model, possibly none.
        format_version: Manifest format version.
    """

    spec: Spec
    chunk_size: int
    n_action_steps: int
    onnx: OnnxInfo
    provenance: Provenance
    validation: Validation
    safety: SafetyConfig | None = None
    variants: tuple[VariantInfo, ...] = ()
    format_version: int = FORMAT_VERSION

    @property
    def fps(self) -> int:
        return self.spec.fps

    def safety_config(self) -> SafetyConfig:
        """Return the `safety` section, or this project's defaults for the robot without one."""
        return self.safety if self.safety is not None else SafetyConfig.default_for(self.spec.robot)

    def variant(self, name: str) -> VariantInfo:
        """Return the variant called `name`, raising `BundleError` naming those present."""
        for variant in self.variants:
            if variant.name == name:
                return variant
        present = [v.name for v in self.variants] or "none"
        raise BundleError(
            f"bundle has no model variant {name!r} (variants: {present}); export it with "
            f"variants=({name!r},)"
        )

    def to_dict(self) -> dict[str, Any]:
        data = {
            "format_version": self.format_version,
            "spec": self.spec.to_dict(),
            "fps": self.spec.fps,
            "chunk_size": self.chunk_size,
            "n_action_steps": self.n_action_steps,
            "robot": self.spec.robot.to_dict(),
            "onnx": self.onnx.to_dict(),
            "provenance": dataclasses.asdict(self.provenance),
            "validation": dataclasses.asdict(self.validation),
        }
        # Optional sections are left out when empty, so older readers keep reading the file.
        if self.safety is not None:
            data["safety"] = self.safety.to_dict()
        if self.variants:
            data["variants"] = [dataclasses.asdict(v) for v in self.variants]
        return data


def write_manifest(manifest: Manifest, directory: Path) -> Path:
    """Write `manifest.json` into `directory` and return its path.

    The bytes written are the ones a detached signature covers, so the file is never rewritten
    after signing.
    """
    path = Path(directory) / MANIFEST_FILE
    path.write_text(json.dumps(manifest.to_dict(), indent=2) + "\n", encoding="utf-8")
    return path


def read_manifest(path: Path) -> Manifest:
    """Read and validate a `manifest.json`.

    Args:
        path: The manifest file.

    Raises:
        BundleError: The file is missing, is not valid JSON, lacks a required key, has a value of
            the wrong type, has an unsupported `format_version` or disagrees with its own spec.
    """
    return parse_manifest(read_manifest_bytes(path), path)


def read_manifest_bytes(path: Path) -> bytes:
    """Read a manifest file's bytes, raising `BundleError` if it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path}: file not found; every bundle needs one: {_EXPORT_AGAIN}")
    try:
        return path.read_bytes()
    except OSError as error:
        raise BundleError(
            f"{path}: read failed ({error.strerror}); check its permissions"
        ) from None


def parse_manifest(raw: bytes, path: Path) -> Manifest:
    """Parse and validate manifest bytes; `path` names the file in error messages.

    Raises:
        BundleError: As `read_manifest`, except for a missing file.
    """
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleError(f"{path}: invalid JSON ({error}); {_EXPORT_AGAIN}") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return _ManifestParser(Path(path)).parse(data)


class _ManifestParser:
    """Validate a manifest's JSON object, naming the file and dotted key of the first fault."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, problem: str) -> BundleError:
        return BundleError(f"{self.path}: {problem}; {_EXPORT_AGAIN}")

    def get(
        self, data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str = ""
    ) -> Any:
        name = f"{where}.{key}" if where else key
        if key not in data:
            raise self.fail(f"missing key {name!r}")
        value = data[key]
        # bool is an int subclass, but `true` is never a valid count or version.
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise self.fail(f"key {name!r} has invalid value {value!r}")
        return value

    def parse(self, data: Mapping[str, Any]) -> Manifest:
        version = self.get(data, "format_version", int)
        if version not in SUPPORTED_FORMAT_VERSIONS:
            raise BundleError(
                f"{self.path}: format_version {version} is not supported (this robota reads "
                f"{list(SUPPORTED_FORMAT_VERSIONS)}); install the robota version that exported it"
            )
        try:
            spec = Spec.from_dict(self.get(data, "spec", dict))
        except (SpecError, KeyError, TypeError, ValueError) as error:
            raise self.fail(f"invalid spec ({error})") from None
        self.check_consistent(data, spec)

        chunk_size = self.get(data, "chunk_size", int)
        n_action_steps = self.get(data, "n_action_steps", int)
        if not 1 <= n_action_steps <= chunk_size:
            raise self.fail(f"n_action_steps {n_action_steps} is not within 1..{chunk_size}")
        return Manifest(
            spec=spec,
            chunk_size=chunk_size,
            n_action_steps=n_action_steps,
            onnx=self.parse_onnx(self.get(data, "onnx", dict)),
            provenance=self.parse_provenance(self.get(data, "provenance", dict)),
            validation=self.parse_validation(self.get(data, "validation", dict)),
            safety=self.parse_safety(data, spec),
            variants=self.parse_variants(data),
            format_version=version,
        )

    def parse_safety(self, data: Mapping[str, Any], spec: Spec) -> SafetyConfig | None:
        if data.get("safety") is None:
            return None
        try:
            safety = SafetyConfig.from_dict(self.get(data, "safety", dict))
        except (KeyError, TypeError, ValueError) as error:
            raise self.fail(f"invalid safety section ({error})") from None
        if len(safety.acceleration_limit_rad_s2) != spec.robot.num_joints:
            raise self.fail(
                f"safety.acceleration_limit_rad_s2 has {len(safety.acceleration_limit_rad_s2)} "
                f"values for {spec.robot.num_joints} joints"
            )
        return safety

    def parse_variants(self, data: Mapping[str, Any]) -> tuple[VariantInfo, ...]:
        variants = []
        for index, item in enumerate(self.get(data, "variants", list) if "variants" in data else []):
            at = f"variants[{index}]"
            if not isinstance(item, dict):
                raise self.fail(f"{at} is not an object")
            file = self.get(item, "file", str, at)
            if Path(file).name != file or file in ("", ".", ".."):
                raise self.fail(f"{at}.file {file!r} is not a plain file name inside the bundle")
            variants.append(
                VariantInfo(
                    name=self.get(item, "name", str, at),
                    file=file,
                    sha256=self.get(item, "sha256", str, at).lower(),
                    parity_max_abs_error=float(
                        self.get(item, "parity_max_abs_error", (int, float), at)
                    ),
                )
            )
        return tuple(variants)

    def check_consistent(self, data: Mapping[str, Any], spec: Spec) -> None:
        if self.get(data, "fps", int) != spec.fps:
            raise self.fail(f"fps {data['fps']} differs from the spec's fps {spec.fps}")
        if self.get(data, "robot", dict) != spec.robot.to_dict():
            raise self.fail("robot differs from the spec's robot")

    def parse_onnx(self, data: Mapping[str, Any]) -> OnnxInfo:
        file = self.get(data, "file", str, "onnx")
        # The model must sit inside the bundle folder, so the hash check covers what is loaded.
        if Path(file).name != file or file in ("", ".", ".."):
            raise self.fail(f"onnx.file {file!r} is not a plain file name inside the bundle")
        return OnnxInfo(
            file=file,
            sha256=self.get(data, "sha256", str, "onnx").lower(),
            opset=self.get(data, "opset", int, "onnx"),
            inputs=self.parse_tensors(self.get(data, "inputs", list, "onnx"), "onnx.inputs"),
            outputs=self.parse_tensors(self.get(data, "outputs", list, "onnx"), "onnx.outputs"),
        )

    def parse_tensors(self, items: Sequence[Any], where: str) -> tuple[TensorInfo, ...]:
        tensors = []
        for index, item in enumerate(items):
            at = f"{where}[{index}]"
            if not isinstance(item, dict):
                raise self.fail(f"{at} is not an object")
            shape = self.get(item, "shape", list, at)
            if not all(isinstance(d, (int, str)) and not isinstance(d, bool) for d in shape):
                raise self.fail(f"{at}.shape {shape!r} has a dimension that is neither int nor str")
            name = self.get(item, "name", str, at)
            tensors.append(TensorInfo(name, self.get(item, "dtype", str, at), tuple(shape)))
        if not tensors:
            raise self.fail(f"{where} is empty")
        return tuple(tensors)

    def parse_provenance(self, data: Mapping[str, Any]) -> Provenance:
        optional = (str, type(None))
        return Provenance(
            dataset_fingerprint=self.get(data, "dataset_fingerprint", optional, "provenance"),
            checkpoint_sha256=self.get(data, "checkpoint_sha256", optional, "provenance"),
            robota_version=self.get(data, "robota_version", str, "provenance"),
            created_utc=self.get(data, "created_utc", str, "provenance"),
        )

    def parse_validation(self, data: Mapping[str, Any]) -> Validation:
        number = (int, float)
        return Validation(
            parity_max_abs_error=float(
                self.get(data, "parity_max_abs_error", number, "validation")
            ),
            parity_frames=self.get(data, "parity_frames", int, "validation"),
            tolerance=float(self.get(data, "tolerance", number, "validation")),
        )
