"""ACT's inference module exports to ONNX with a dynamic batch, matches torch, lacks the CVAE."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from robota.spec import policy_input_names

from policy_helpers import make_batch

onnxruntime = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def _export(module, example, names, path, exporter: str) -> None:
    if exporter == "dynamo":
        torch.onnx.export(
            module,
            example,
            str(path),
            input_names=names,
            output_names=["action"],
            dynamic_shapes=module.dynamic_batch_shapes(torch.export.Dim("batch", min=1, max=1024)),
            dynamo=True,
        )
        return
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", DeprecationWarning
        )  # The TorchScript exporter is deprecated.
        torch.onnx.export(
            module,
            example,
            str(path),
            input_names=names,
            output_names=["action"],
            dynamic_axes={name: {0: "batch"} for name in [*names, "action"]},
            opset_version=17,
            dynamo=False,
        )


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_export_dynamic_batch_matches_torch(tmp_path, tiny_policy, tiny_spec, exporter):
    names = policy_input_names(tiny_spec)
    example = make_batch(tiny_spec, batch_size=2, chunk_size=4)
    path = tmp_path / "policy.onnx"

    _export(
        tiny_policy.inference_module(),
        tuple(example[name] for name in names),
        names,
        path,
        exporter,
    )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    for batch_size in (1, 5):
        inputs = make_batch(tiny_spec, batch_size=batch_size, chunk_size=4, seed=batch_size)
        with torch.no_grad():
            expected = tiny_policy.predict_action_chunk({name: inputs[name] for name in names})
        (actual,) = session.run(None, {name: inputs[name].numpy() for name in names})
        assert actual.shape == (batch_size, 4, 7)
        np.testing.assert_allclose(actual, expected.numpy(), rtol=0, atol=1e-4)


def test_export_leaves_out_cvae_encoder(tmp_path, tiny_policy, tiny_spec):
    onnx = pytest.importorskip("onnx")
    names = policy_input_names(tiny_spec)
    example = make_batch(tiny_spec, batch_size=2, chunk_size=4)
    path = tmp_path / "policy.onnx"

    _export(
        tiny_policy.inference_module(),
        tuple(example[name] for name in names),
        names,
        path,
        "dynamo",
    )
    weights = {initializer.name for initializer in onnx.load(str(path)).graph.initializer}

    # The dynamo exporter names weights by their module path, except the transposed matrices
    # of linear layers; the biases and parameters of every module keep their names.
    assert "policy.action_queries" in weights
    assert "policy.latent_projection.bias" in weights
    assert [name for name in weights if "cvae_encoder" in name] == []
