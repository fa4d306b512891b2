"""Bundle loading: verification failures name the file, and the model matches torch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from robota.edge.bundle import PREFERRED_PROVIDERS, load_bundle, select_providers, verify_bundle
from robota.edge.manifest import (
    ACTION_CHUNK_OUTPUT,
    FORMAT_VERSION,
    MANIFEST_FILE,
    MODEL_FILE,
    file_sha256,
)
from robota.edge.synthetic import synthesize_observations
from robota.errors import BundleError, SpecError
from robota.spec import build_policy_inputs, policy_input_names


def _edit_manifest(bundle: Path, edit) -> None:
    path = bundle / MANIFEST_FILE
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_bundle_loads_on_cpu(exported_bundle: Path, fake_policy) -> None:
    bundle = load_bundle(exported_bundle)

    assert bundle.provider == "CPUExecutionProvider"
    assert bundle.spec == fake_policy.spec
    assert bundle.manifest.chunk_size == 10
    assert bundle.manifest.n_action_steps == 4
    assert [t.name for t in bundle.manifest.onnx.inputs] == policy_input_names(fake_policy.spec)
    assert bundle.manifest.onnx.outputs[0].name == ACTION_CHUNK_OUTPUT
    assert bundle.signature_path is None


@pytest.mark.parametrize("batch", [1, 4])
def test_bundle_matches_torch(exported_bundle: Path, fake_policy, batch: int) -> None:
    import torch

    spec = fake_policy.spec
    inputs = build_policy_inputs(spec, synthesize_observations(spec, batch, seed=7))
    with torch.inference_mode():
        expected = fake_policy(*(torch.from_numpy(inputs[n]) for n in policy_input_names(spec)))

    actual = load_bundle(exported_bundle).run(inputs)

    assert actual.shape == (batch, 10, 7)
    assert actual.dtype == np.float32
    np.testing.assert_allclose(actual, expected.numpy(), rtol=0, atol=1e-4)


def test_modified_model_names_policy_onnx(bundle_copy: Path) -> None:
    model = bundle_copy / MODEL_FILE
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))

    with pytest.raises(BundleError, match=r"policy\.onnx: sha256 .* does not match manifest\.json"):
        load_bundle(bundle_copy)


def test_missing_manifest_names_manifest(bundle_copy: Path) -> None:
    (bundle_copy / MANIFEST_FILE).unlink()

    with pytest.raises(BundleError, match=r"manifest\.json: file not found"):
        load_bundle(bundle_copy)


def test_missing_folder_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="bundle folder not found"):
        load_bundle(tmp_path / "no-such-bundle")


def test_missing_model_names_policy_onnx(bundle_copy: Path) -> None:
    (bundle_copy / MODEL_FILE).unlink()

    with pytest.raises(BundleError, match=r"policy\.onnx: file not found"):
        verify_bundle(bundle_copy)


def test_invalid_json_manifest_is_rejected(bundle_copy: Path) -> None:
    (bundle_copy / MANIFEST_FILE).write_text('{"format_version": 1,')

    with pytest.raises(BundleError, match=r"manifest\.json: invalid JSON"):
        verify_bundle(bundle_copy)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m["onnx"].pop("sha256"), "missing key 'onnx.sha256'"),
        (lambda m: m.pop("provenance"), "missing key 'provenance'"),
        (lambda m: m.update(chunk_size="10"), "key 'chunk_size' has invalid value '10'"),
        (lambda m: m.update(n_action_steps=11), "n_action_steps 11 is not within 1..10"),
        (lambda m: m.update(fps=20), "fps 20 differs from the spec's fps 10"),
        (lambda m: m["onnx"].update(file="../policy.onnx"), "not a plain file name"),
        (lambda m: m["spec"].pop("features"), "invalid spec"),
    ],
)
def test_invalid_manifest_names_the_key(bundle_copy: Path, edit, message: str) -> None:
    _edit_manifest(bundle_copy, edit)

    with pytest.raises(BundleError, match="manifest.json: ") as error:
        verify_bundle(bundle_copy)
    assert message in str(error.value)


def test_newer_format_version_is_rejected(bundle_copy: Path) -> None:
    _edit_manifest(bundle_copy, lambda m: m.update(format_version=FORMAT_VERSION + 1))

    with pytest.raises(BundleError, match="format_version 2 is not supported"):
        verify_bundle(bundle_copy)


def test_model_that_is_not_onnx_fails_to_load(bundle_copy: Path) -> None:
    model = bundle_copy / MODEL_FILE
    model.write_bytes(b"not an onnx model")
    _edit_manifest(bundle_copy, lambda m: m["onnx"].update(sha256=file_sha256(model)))

    with pytest.raises(BundleError, match="ONNX Runtime failed to load the model"):
        load_bundle(bundle_copy)


def test_run_rejects_missing_and_mistyped_inputs(exported_bundle: Path, fake_policy) -> None:
    bundle = load_bundle(exported_bundle)
    inputs = build_policy_inputs(fake_policy.spec, synthesize_observations(fake_policy.spec, 1))

    missing = {k: v for k, v in inputs.items() if k != "task_tokens"}
    with pytest.raises(SpecError, match="'task_tokens' is missing"):
        bundle.run(missing)

    mistyped = {**inputs, "observation.state": inputs["observation.state"].astype(np.float64)}
    with pytest.raises(SpecError, match="has dtype float64, expected float32"):
        bundle.run(mistyped)

    mismatched = {**inputs, "task_tokens": np.repeat(inputs["task_tokens"], 2, axis=0)}
    with pytest.raises(SpecError, match="different batch sizes"):
        bundle.run(mismatched)


def test_select_providers_skips_unavailable() -> None:
    chosen = select_providers(["NoSuchExecutionProvider", "CPUExecutionProvider"])

    assert chosen == ["CPUExecutionProvider"]
    assert select_providers()[-1] == PREFERRED_PROVIDERS[-1]


def test_select_providers_without_any_available() -> None:
    with pytest.raises(BundleError, match="none of the ONNX Runtime providers"):
        select_providers(["NoSuchExecutionProvider"])


def test_load_bundle_copes_with_moved_folder(exported_bundle: Path, tmp_path: Path) -> None:
    moved = tmp_path / "elsewhere" / "bundle"
    shutil.copytree(exported_bundle, moved)

    assert load_bundle(moved).path == moved
