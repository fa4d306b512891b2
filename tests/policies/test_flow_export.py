"""The flow-matching policy exports with its Euler steps unrolled or in an ONNX Loop node."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robota.errors import BundleError
from robota.policies import make_policy
from robota.spec import build_policy_inputs

from policy_helpers import TINY_ACT

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from robota.edge.policy import BundlePolicy  # noqa: E402
from robota.export import export_policy  # noqa: E402

TINY_FLOW = {**TINY_ACT, "n_layers": 1, "n_expert_layers": 1, "num_inference_steps": 3}


@pytest.fixture
def flow(tiny_spec, tiny_stats) -> torch.nn.Module:
    torch.manual_seed(0)
    return make_policy("flow", tiny_spec, tiny_stats, **TINY_FLOW).eval()


def _torch_chunk(policy, observation) -> np.ndarray:
    arrays = build_policy_inputs(policy.spec, [observation])
    inputs = {key: torch.from_numpy(value) for key, value in arrays.items()}
    with torch.no_grad():
        return policy.predict_action_chunk(inputs)[0].numpy()


@pytest.mark.parametrize("integration", ["unrolled", "loop"])
def test_bundle_matches_torch(tmp_path, flow, observations, integration):
    result = export_policy(
        flow, tmp_path / "bundle", observations=observations, integration=integration
    )
    bundle = BundlePolicy.from_path(result.bundle)

    # The export's own check runs all 12 observations in one batch of 12.
    assert result.parity_max_abs_error <= 1e-3
    for observation in observations[:3]:
        expected = _torch_chunk(flow, observation)
        actual = bundle.predict_action_chunk(observation)
        assert actual.shape == (4, 7)
        np.testing.assert_allclose(actual[:, :6], expected[:, :6], rtol=0, atol=1e-3)
        np.testing.assert_array_equal(actual[:, 6], expected[:, 6])


@pytest.mark.parametrize(("integration", "loops"), [("unrolled", 0), ("loop", 1)])
def test_graph_has_expected_loops(tmp_path, flow, observations, integration, loops):
    result = export_policy(
        flow, tmp_path / "bundle", observations=observations[:2], integration=integration
    )
    model = onnx.load(str(result.bundle / "policy.onnx"))

    assert [node.op_type for node in model.graph.node].count("Loop") == loops
    metadata = {prop.key: prop.value for prop in model.metadata_props}
    assert metadata["robota.integration"] == integration


def test_loop_module_follows_weight_changes(flow, observations):
    module = flow.inference_module(integration="loop")
    arrays = build_policy_inputs(flow.spec, observations[:2])
    inputs = tuple(torch.from_numpy(arrays[name]) for name in flow.input_names)
    with torch.no_grad():
        before = module(*inputs)
        flow.action_output.bias.add_(0.5)
        after = module(*inputs)

    assert not torch.allclose(before[..., :6], after[..., :6])


def test_integration_rejected_for_act(tmp_path, tiny_spec, tiny_stats, observations):
    act = make_policy("act", tiny_spec, tiny_stats, **TINY_ACT).eval()

    with pytest.raises(BundleError, match="policy 'act' has no integration steps"):
        export_policy(act, tmp_path / "bundle", observations=observations, integration="loop")
    assert not (tmp_path / "bundle").exists()
