"""Load and verify a bundle, and run its model with ONNX Runtime.

`verify_bundle` checks a bundle folder without starting a session: the folder, the manifest
and the sha256 of the model file. `load_bundle` runs the same checks, then creates an ONNX
Runtime session on the best available execution provider and checks the graph's inputs and
outputs against the manifest. Every failed check raises `BundleError` with one line that names
the file and what to do.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from robota.edge.manifest import (
    MANIFEST_FILE,
    SIGNATURE_FILE,
    Manifest,
    TensorInfo,
    parse_manifest,
    read_manifest_bytes,
)
from robota.edge.signing import verify_manifest_signature
from robota.errors import BundleError, MissingExtraError, SpecError
from robota.spec import Spec, policy_input_names

logger = logging.getLogger(__name__)

# Fastest first. Only providers that onnxruntime.get_available_providers() lists are passed,
# because ONNX Runtime only warns about an unavailable one and silently falls back to CPU.
PREFERRED_PROVIDERS = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "OpenVINOExecutionProvider",
    "CPUExecutionProvider",
)

# ONNX Runtime's type strings for the dtypes a bundle uses.
_ORT_TYPES = {"tensor(uint8)": "uint8", "tensor(float)": "float32", "tensor(int64)": "int64"}


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise MissingExtraError("onnxruntime", "edge") from None
    return onnxruntime


def _session_errors(onnxruntime) -> tuple[type[BaseException], ...]:
    """Exception types ONNX Runtime raises for a model it cannot load.

    Its own types (Fail, InvalidGraph, InvalidProtobuf and others) derive from Exception
    directly, not from RuntimeError, so they are listed by name.
    """
    state = onnxruntime.capi.onnxruntime_pybind11_state
    names = ("Fail", "InvalidArgument", "InvalidProtobuf", "InvalidGraph", "NotImplemented")
    names += ("RuntimeException", "EPFail", "NoModel", "NoSuchFile")
    own = tuple(getattr(state, name) for name in names if hasattr(state, name))
    return (*own, RuntimeError, ValueError)


def verify_bundle(
    path: Path,
    *,
    trusted_keys: Sequence | None = None,
    require_signature: bool = False,
    variant: str | None = None,
) -> Manifest:
    """Check a bundle folder, its manifest and its model's sha256, without loading the model.

    Args:
        path: Bundle folder.
        trusted_keys: Ed25519 public keys (or paths of PEM files); when given, the bundle must
            carry a valid signature by one of them. `None` skips the signature check, unless
            `require_signature` is set.
        require_signature: Reject the bundle unless `trusted_keys` is non-empty and the
            signature verifies against one of them. The robot's run path sets it; offline
            tools (evaluation in the twin, export's self-check) leave it off.
        variant: Model variant whose file and sha256 are checked instead of `policy.onnx`.

    Returns:
        The parsed manifest.

    Raises:
        BundleError: The folder or a file is missing, the manifest is invalid, the model's
            sha256 differs from the one in the manifest, the signature check fails, or a
            signature is required and no trusted key is given.
    """
    manifest, _, _ = _read_verified(Path(path), trusted_keys, variant, require_signature)
    return manifest


def _read_verified(
    path: Path,
    trusted_keys: Sequence | None,
    variant: str | None = None,
    require_signature: bool = False,
) -> tuple[Manifest, bytes, str | None]:
    """Return the manifest, the model bytes and the signer's key id after all file checks.

    The manifest and the model are each read once, and the bytes that were checked are the
    bytes that get used, so a file swapped during loading cannot slip past the checks.
    """
    if not path.is_dir():
        raise BundleError(
            f"{path}: bundle folder not found; pass the folder that `robota export` wrote"
        )
    if require_signature and not trusted_keys:
        raise BundleError(
            f"{path}: a signed bundle is required, but no trusted public key was given; "
            "pass the public key of the key that signed the bundle in trusted_keys"
        )
    manifest_path = path / MANIFEST_FILE
    raw_manifest = read_manifest_bytes(manifest_path)
    signer = None
    if trusted_keys is not None:
        signer = verify_manifest_signature(path, raw_manifest, trusted_keys)
    manifest = parse_manifest(raw_manifest, manifest_path)

    file, expected_sha256 = manifest.onnx.file, manifest.onnx.sha256
    if variant is not None:
        info = manifest.variant(variant)
        file, expected_sha256 = info.file, info.sha256
    model_path = path / file
    if not model_path.is_file():
        raise BundleError(
            f"{model_path}: file not found, but {MANIFEST_FILE} names it; the bundle is "
            "incomplete: export it again with `robota export`"
        )
    model = model_path.read_bytes()
    actual = hashlib.sha256(model).hexdigest()
    if actual != expected_sha256:
        raise BundleError(
            f"{model_path}: sha256 {actual[:12]}… does not match {MANIFEST_FILE} "
            f"({expected_sha256[:12]}…); the bundle was modified or damaged: "
            "export it again with `robota export`"
        )

    expected_names = policy_input_names(manifest.spec)
    names = [t.name for t in manifest.onnx.inputs]
    if names != expected_names:
        raise BundleError(
            f"{manifest_path}: onnx.inputs {names} differ from the spec's policy inputs "
            f"{expected_names}; export the bundle again with `robota export`"
        )
    return manifest, model, signer


def select_providers(requested: Sequence[str] | None = None) -> list[str]:
    """Choose ONNX Runtime execution providers that this installation has.

    Args:
        requested: Providers in order of preference; `None` means `PREFERRED_PROVIDERS`
            (TensorRT, CUDA, OpenVINO, CPU).

    Returns:
        The requested providers that `onnxruntime.get_available_providers()` lists, in order.

    Raises:
        BundleError: None of the requested providers is available.
    """
    available = _import_onnxruntime().get_available_providers()
    candidates = list(PREFERRED_PROVIDERS if requested is None else requested)
    chosen = [p for p in candidates if p in available]
    missing = [p for p in candidates if p not in available]
    if requested is not None and missing:
        logger.warning(
            "skipping unavailable ONNX Runtime providers %s; available: %s", missing, available
        )
    if not chosen:
        raise BundleError(
            f"none of the ONNX Runtime providers {candidates} is available "
            f"(available: {available}); pass providers from the available list"
        )
    return chosen


def load_bundle(
    path: Path,
    *,
    providers: Sequence[str] | None = None,
    intra_op_threads: int | None = None,
    trusted_keys: Sequence | None = None,
    require_signature: bool = False,
    variant: str | None = None,
) -> Bundle:
    """Verify a bundle and start an ONNX Runtime session for its model.

    Args:
        path: Bundle folder.
        providers: Execution providers in order of preference; unavailable ones are skipped
            with a warning. `None` tries TensorRT, CUDA, OpenVINO, then CPU.
        intra_op_threads: Threads ONNX Runtime uses inside one operator; `None` keeps its
            default (one per physical core).
        trusted_keys: Ed25519 public keys (or paths of PEM files); when given, the bundle must
            carry a valid signature by one of them. `None` skips the signature check, unless
            `require_signature` is set.
        require_signature: Reject the bundle unless `trusted_keys` is non-empty and the
            signature verifies against one of them. `robota-edge run` sets it; offline tools
            (evaluation in the twin, export's self-check, `robota-edge bench`) leave it off.
        variant: Model variant to run instead of `policy.onnx`, as listed in the manifest's
            `variants` (`fp16` or `int8`); `None` runs the full-precision model.

    Raises:
        BundleError: A check of `verify_bundle` failed, the variant is not in the bundle, the
            model does not load, or the graph's inputs or outputs differ from the manifest.
    """
    path = Path(path)
    manifest, model, signer = _read_verified(path, trusted_keys, variant, require_signature)
    onnxruntime = _import_onnxruntime()
    chosen = select_providers(providers)

    options = onnxruntime.SessionOptions()
    if intra_op_threads is not None:
        options.intra_op_num_threads = intra_op_threads
    model_path = path / (manifest.onnx.file if variant is None else manifest.variant(variant).file)
    try:
        session = onnxruntime.InferenceSession(model, options, providers=chosen)
    except _session_errors(onnxruntime) as error:
        raise BundleError(
            f"{model_path}: ONNX Runtime failed to load the model ({error}); "
            "export the bundle again with `robota export`"
        ) from None

    running = session.get_providers()
    if running[0] != chosen[0]:
        logger.warning(
            "requested ONNX Runtime provider %s first, but the session runs on %s",
            chosen[0],
            running,
        )
    logger.info("loaded bundle %s (model %s) on %s", path, model_path.name, running[0])
    _check_graph_io(session, manifest, model_path)
    return Bundle(path, manifest, session, signed_by=signer, variant=variant)


def _check_graph_io(session, manifest: Manifest, model_path: Path) -> None:
    """Raise `BundleError` if the graph's inputs or first output differ from the manifest."""
    graph_inputs = {i.name: _ORT_TYPES.get(i.type, i.type) for i in session.get_inputs()}
    for tensor in manifest.onnx.inputs:
        if graph_inputs.get(tensor.name) != tensor.dtype:
            raise BundleError(
                f"{model_path}: graph input {tensor.name!r} is {graph_inputs.get(tensor.name)}, "
                f"but {MANIFEST_FILE} declares {tensor.dtype}; export the bundle again"
            )
    extra = sorted(set(graph_inputs) - {t.name for t in manifest.onnx.inputs})
    if extra:
        raise BundleError(
            f"{model_path}: graph has inputs {extra} that {MANIFEST_FILE} does not declare; "
            "export the bundle again"
        )
    output = session.get_outputs()[0]
    if output.name != manifest.onnx.outputs[0].name:
        raise BundleError(
            f"{model_path}: first graph output is {output.name!r}, but {MANIFEST_FILE} declares "
            f"{manifest.onnx.outputs[0].name!r}; export the bundle again"
        )


class Bundle:
    """A verified bundle with a running ONNX Runtime session.

    Attributes:
        path: Bundle folder.
        manifest: Parsed `manifest.json`.
        spec: Feature spec of the model.
        session: The `onnxruntime.InferenceSession`.
        signed_by: Id of the trusted key whose signature was verified, or `None` when the
            signature was not checked.
        variant: Name of the model variant the session runs, `None` for `policy.onnx`.
    """

    def __init__(
        self,
        path: Path,
        manifest: Manifest,
        session,
        *,
        signed_by: str | None = None,
        variant: str | None = None,
    ):
        self.variant = variant
        self.path = Path(path)
        self.manifest = manifest
        self.spec: Spec = manifest.spec
        self.session = session
        self.signed_by = signed_by
        self._output_name = manifest.onnx.outputs[0].name

    @property
    def provider(self) -> str:
        """Execution provider the session runs on, for example `CPUExecutionProvider`."""
        return self.session.get_providers()[0]

    @property
    def signature_path(self) -> Path | None:
        """Signature file beside the manifest, or `None` if the bundle is unsigned."""
        path = self.path / SIGNATURE_FILE
        return path if path.is_file() else None

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Predict action chunks for a batch of model inputs.

        Args:
            inputs: Arrays named by `policy_input_names(spec)`, as
                `robota.spec.build_policy_inputs` builds them, each with a leading batch axis.

        Returns:
            float32 action chunks `(batch, chunk, action_dim)` in physical units.

        Raises:
            SpecError: An input is missing or has the wrong dtype, rank or batch size.
            BundleError: The model returned a shape other than the manifest's.
        """
        feeds = {t.name: _checked_input(t, inputs) for t in self.manifest.onnx.inputs}
        batch_sizes = {array.shape[0] for array in feeds.values()}
        if len(batch_sizes) != 1:
            sizes = {name: array.shape[0] for name, array in feeds.items()}
            raise SpecError(f"model inputs have different batch sizes: {sizes}")

        (chunks,) = self.session.run([self._output_name], feeds)
        expected = (batch_sizes.pop(), self.manifest.chunk_size, self.spec.robot.action_dim)
        if chunks.shape != expected:
            raise BundleError(
                f"{self.path}: model returned shape {chunks.shape}, but "
                f"{MANIFEST_FILE} promises {expected}; export the bundle again"
            )
        return chunks


def _checked_input(tensor: TensorInfo, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """Return `inputs[tensor.name]` if its dtype and non-batch dims match, else raise SpecError."""
    if tensor.name not in inputs:
        raise SpecError(
            f"model input {tensor.name!r} is missing; got {sorted(inputs)}. "
            "Build inputs with robota.spec.build_policy_inputs"
        )
    array = np.asarray(inputs[tensor.name])
    if array.dtype != np.dtype(tensor.dtype):
        raise SpecError(
            f"model input {tensor.name!r} has dtype {array.dtype}, expected {tensor.dtype}"
        )
    expected = tuple(tensor.shape[1:])
    if array.ndim != len(tensor.shape) or array.shape[1:] != expected:
        raise SpecError(
            f"model input {tensor.name!r} has shape {array.shape}, expected (batch, *{expected})"
        )
    return array
