"""robota.export: bundles written atomically, with a parity check against torch."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from robota.edge.bundle import load_bundle  # noqa: E402
from robota.edge.manifest import MANIFEST_FILE, MODEL_FILE  # noqa: E402
from robota.edge.policy import BundlePolicy  # noqa: E402
from robota.edge.synthetic import synthesize_observations, synthesize_stats  # noqa: E402
from robota.errors import BundleError, ParityError  # noqa: E402
from robota.export import (  # noqa: E402
    export_bundle,
    export_policy,
    parity_observations_from_dataset,
    read_dataset_fingerprint,
)
from robota.spec import ACTION, TASK, UR5E, Spec, make_arm_spec  # noqa: E402


def _load_fake_policy_module():
    # Loaded by path, because the helper sits beside the edge tests outside any package. It is
    # registered under the name the edge tests import it by, so both share one module.
    name = "edge_fake_policy"
    if name in sys.modules:
        return sys.modules[name]
    path = Path(__file__).parent / "edge" / f"{name}.py"
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    module_spec.loader.exec_module(module)
    return module


fake_policy_module = _load_fake_policy_module()


class BranchingPolicy(fake_policy_module.FakePolicy):
    """Adds 1 to every action when no instruction in the batch is empty, by a Python branch.

    The TorchScript tracer records only the branch the export example took, so the exported
    graph adds 1 even to a batch with an empty instruction, where torch does not.
    """

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        chunk = super().forward(*inputs)
        if bool((inputs[-1][:, 0] > 0).all()):
            return chunk + 1.0
        return chunk


@pytest.fixture
def fake_policy():
    return fake_policy_module.make_fake_policy(chunk_size=10, n_action_steps=4)


def test_export_writes_manifest(fake_policy, tmp_path: Path) -> None:
    result = export_policy(
        fake_policy, tmp_path / "bundle", checkpoint_sha256="ab" * 32, dataset_fingerprint="d1"
    )

    manifest = json.loads((tmp_path / "bundle" / MANIFEST_FILE).read_text())
    assert sorted(p.name for p in (tmp_path / "bundle").iterdir()) == [MANIFEST_FILE, MODEL_FILE]
    assert result.bundle == tmp_path / "bundle"
    assert result.frames_checked == 16
    assert result.parity_max_abs_error <= 1e-4
    assert manifest["format_version"] == 1
    assert manifest["fps"] == 10
    assert manifest["chunk_size"] == 10
    assert manifest["n_action_steps"] == 4
    assert manifest["robot"]["joint_names"] == list(UR5E.joint_names)
    assert manifest["robot"]["velocity_limit_rad_s"] == list(UR5E.velocity_limit_rad_s)
    assert Spec.from_dict(manifest["spec"]) == fake_policy.spec
    assert manifest["onnx"]["opset"] == 17
    assert manifest["onnx"]["inputs"][0] == {
        "name": "observation.images.wrist",
        "dtype": "uint8",
        "shape": ["batch", 32, 32, 3],
    }
    assert manifest["onnx"]["inputs"][-1] == {
        "name": "task_tokens",
        "dtype": "int64",
        "shape": ["batch", 64],
    }
    assert manifest["onnx"]["outputs"] == [
        {"name": "action_chunk", "dtype": "float32", "shape": ["batch", 10, 7]}
    ]
    assert manifest["provenance"]["checkpoint_sha256"] == "ab" * 32
    assert manifest["provenance"]["dataset_fingerprint"] == "d1"
    assert manifest["validation"]["parity_frames"] == 16
    assert manifest["validation"]["tolerance"] == 1e-4


@pytest.mark.parametrize("batch", [1, 4])
def test_exported_bundle_matches_torch(fake_policy, tmp_path: Path, batch: int) -> None:
    export_policy(fake_policy, tmp_path / "bundle")
    bundle = load_bundle(tmp_path / "bundle")
    observations = synthesize_observations(fake_policy.spec, batch, seed=11)
    inputs = fake_policy_module.build_inputs(fake_policy.spec, observations)

    with torch.inference_mode():
        expected = fake_policy(*(torch.from_numpy(v) for v in inputs.values())).numpy()

    np.testing.assert_allclose(bundle.run(inputs), expected, rtol=0, atol=1e-4)


def test_export_rejects_existing_output(fake_policy, tmp_path: Path) -> None:
    export_policy(fake_policy, tmp_path / "bundle")

    with pytest.raises(BundleError, match="bundle: already exists"):
        export_policy(fake_policy, tmp_path / "bundle")


def test_export_overwrite_replaces_bundle(fake_policy, tmp_path: Path) -> None:
    export_policy(fake_policy, tmp_path / "bundle", dataset_fingerprint="old")

    export_policy(fake_policy, tmp_path / "bundle", dataset_fingerprint="new", overwrite=True)

    manifest = load_bundle(tmp_path / "bundle").manifest
    assert manifest.provenance.dataset_fingerprint == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_export_overwrite_keeps_other_folder(fake_policy, tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")

    with pytest.raises(BundleError, match="is not a bundle"):
        export_policy(fake_policy, tmp_path / "notes", overwrite=True)
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_parity_failure_leaves_no_bundle(tmp_path: Path) -> None:
    spec = make_arm_spec(UR5E, 10, fake_policy_module.FAKE_CAMERAS)
    policy = BranchingPolicy(spec, fake_policy_module.FakeConfig()).eval()
    observations = synthesize_observations(spec, 3)
    observations[2][TASK] = ""

    with pytest.raises(ParityError) as error:
        export_policy(policy, tmp_path / "bundle", observations=observations)

    message = str(error.value)
    assert "policy.onnx" in message
    assert "max abs error 1.000e+00" in message
    assert "at parity observation" in message
    assert list(tmp_path.iterdir()) == []


def test_export_rejects_empty_observations(fake_policy, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="observations is empty"):
        export_policy(fake_policy, tmp_path / "bundle", observations=[])


def test_export_bundle_from_act_checkpoint(tmp_path: Path) -> None:
    policies = pytest.importorskip("robota.policies")
    checkpoint_lib = pytest.importorskip("robota.policies.checkpoint")
    runner_lib = pytest.importorskip("robota.policies.runner")
    spec = make_arm_spec(UR5E, 10, {"wrist": (32, 32)})
    tiny_act = {
        "chunk_size": 6,
        "n_action_steps": 3,
        "dim_model": 32,
        "n_heads": 2,
        "dim_feedforward": 64,
        "image_channels": (8, 16, 16),
        "dropout": 0.0,
    }
    policy = policies.make_policy("act", spec, synthesize_stats(spec), **tiny_act).eval()
    checkpoint = checkpoint_lib.save_checkpoint(
        tmp_path / "checkpoint", policy, extra={"dataset_fingerprint": "fp-123"}
    )

    result = export_bundle(checkpoint, tmp_path / "bundle")

    provenance = result.manifest.provenance
    assert result.parity_max_abs_error <= 1e-4
    assert provenance.dataset_fingerprint == "fp-123"
    assert provenance.checkpoint_sha256 == checkpoint_lib.checkpoint_sha256(checkpoint)
    assert result.manifest.chunk_size == 6
    assert result.manifest.n_action_steps == 3

    # The bundle and the torch runner act alike step by step, re-planning on the same calls.
    torch_runner = runner_lib.TorchPolicyRunner.from_checkpoint(checkpoint)
    bundle_policy = BundlePolicy.from_path(result.bundle)
    for observation in synthesize_observations(spec, 7, seed=2):
        np.testing.assert_allclose(
            bundle_policy(observation), torch_runner(observation), rtol=0, atol=1e-4
        )


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"dataset_fingerprint": "top"}, "top"),
        ({"extra": {"dataset_fingerprint": "nested"}}, "nested"),
        ({"extra": "not a mapping"}, None),
        ({}, None),
        ([1, 2], None),
    ],
)
def test_dataset_fingerprint_read_defensively(tmp_path: Path, config, expected) -> None:
    (tmp_path / "config.json").write_text(json.dumps(config))

    assert read_dataset_fingerprint(tmp_path) == expected


def test_dataset_fingerprint_without_config(tmp_path: Path) -> None:
    assert read_dataset_fingerprint(tmp_path) is None


def _record_dataset(root: Path, spec: Spec, lengths: list[int]) -> Path:
    datasets = pytest.importorskip("robota.datasets")
    observations = synthesize_observations(spec, sum(lengths), seed=9)
    with datasets.DatasetWriter(root, spec, robot_type=spec.robot.name) as writer:
        for episode, length in enumerate(lengths):
            for step in range(length):
                observation = observations.pop()
                action = np.full(spec.robot.action_dim, episode * 100 + step, dtype=np.float32)
                writer.add_frame({**observation, TASK: f"episode {episode}", ACTION: action})
            writer.save_episode()
    return root


def test_parity_observations_spread_over_episodes(fake_policy, tmp_path: Path) -> None:
    dataset = _record_dataset(tmp_path / "dataset", fake_policy.spec, [6, 6, 6])

    observations = parity_observations_from_dataset(dataset, 6)

    # Two frames from each episode: its first and its last.
    steps = [(o[TASK], int(o[ACTION][0]) % 100) for o in observations]
    assert steps == [
        ("episode 0", 0), ("episode 0", 5), ("episode 1", 0), ("episode 1", 5),
        ("episode 2", 0), ("episode 2", 5),
    ]
    assert observations[0]["observation.images.wrist"].shape == (32, 32, 3)
    assert observations[0]["observation.images.wrist"].dtype == np.uint8

    result = export_policy(fake_policy, tmp_path / "bundle", observations=observations)
    assert result.frames_checked == 6


def test_parity_observations_capped_by_frames(fake_policy, tmp_path: Path) -> None:
    dataset = _record_dataset(tmp_path / "dataset", fake_policy.spec, [2, 3])

    observations = parity_observations_from_dataset(dataset, 64)

    assert len(observations) == 5


def test_export_writes_variants(fake_policy, tmp_path: Path) -> None:
    from robota.edge.manifest import read_manifest

    export_policy(fake_policy, tmp_path / "bundle", variants=("fp16", "int8"))

    manifest = read_manifest(tmp_path / "bundle" / MANIFEST_FILE)
    assert [v.name for v in manifest.variants] == ["fp16", "int8"]
    assert [v.file for v in manifest.variants] == ["policy.fp16.onnx", "policy.int8.onnx"]
    fp16, int8 = manifest.variants
    # Random weights of the fake policy: fp16 rounds at about 1e-3, int8 at about 1e-1.
    assert 0 < fp16.parity_max_abs_error < 0.05
    assert 0 < int8.parity_max_abs_error < 1.0
    observation = synthesize_observations(fake_policy.spec, 1)[0]
    full = BundlePolicy.from_path(tmp_path / "bundle").predict_action_chunk(observation)
    for variant in manifest.variants:
        policy = BundlePolicy.from_path(tmp_path / "bundle", variant=variant.name)
        assert policy.bundle.variant == variant.name
        chunk = policy.predict_action_chunk(observation)
        assert np.abs(chunk - full).max() <= variant.parity_max_abs_error * 1.5 + 1e-6


def test_export_stores_default_safety(fake_policy, tmp_path: Path) -> None:
    from robota.edge.manifest import read_manifest
    from robota.edge.safety import SafetyConfig

    export_policy(fake_policy, tmp_path / "bundle")
    manifest = read_manifest(tmp_path / "bundle" / MANIFEST_FILE)
    assert manifest.safety == SafetyConfig.default_for(UR5E)
    assert manifest.variants == ()


def test_export_rejects_unknown_variant(fake_policy, tmp_path: Path) -> None:
    from robota.errors import UnknownNameError

    with pytest.raises(UnknownNameError, match="int8"):
        export_policy(fake_policy, tmp_path / "bundle", variants=("int4",))
    assert not (tmp_path / "bundle").exists()


def test_variant_sha256_checked(fake_policy, tmp_path: Path) -> None:
    export_policy(fake_policy, tmp_path / "bundle", variants=("int8",))
    model = tmp_path / "bundle" / "policy.int8.onnx"
    model.write_bytes(model.read_bytes() + b"\0")
    load_bundle(tmp_path / "bundle")  # the full-precision model is untouched
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(tmp_path / "bundle", variant="int8")


def test_missing_variant_names_present(fake_policy, tmp_path: Path) -> None:
    export_policy(fake_policy, tmp_path / "bundle")
    with pytest.raises(BundleError, match="no model variant 'fp16'"):
        load_bundle(tmp_path / "bundle", variant="fp16")
