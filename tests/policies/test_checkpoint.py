"""Checkpoints: round trip, atomic replacement and every CheckpointError case."""

from __future__ import annotations

import json

import pytest
import torch

import robota
from robota.errors import CheckpointError
from robota.policies import checkpoint_sha256, load_checkpoint, save_checkpoint
from robota.policies.checkpoint import _file_sha256
from robota.spec import policy_input_names


def _chunk(policy, batch, spec):
    return policy.predict_action_chunk({key: batch[key] for key in policy_input_names(spec)})


@pytest.fixture
def saved(tmp_path, tiny_policy):
    return save_checkpoint(tmp_path / "ckpt", tiny_policy, extra={"dataset_fingerprint": "abc"})


def _rewrite_stats(folder, edit) -> None:
    """Edit stats.json and record its new sha256, as a hand-made checkpoint would."""
    stats = json.loads((folder / "stats.json").read_text())
    edit(stats)
    (folder / "stats.json").write_text(json.dumps(stats))
    config = json.loads((folder / "config.json").read_text())
    config["stats_sha256"] = _file_sha256(folder / "stats.json")
    (folder / "config.json").write_text(json.dumps(config))


def test_round_trip_identical_outputs(saved, tiny_policy, tiny_batch, tiny_spec):
    loaded = load_checkpoint(saved)

    assert not loaded.training
    torch.testing.assert_close(
        _chunk(loaded, tiny_batch, tiny_spec),
        _chunk(tiny_policy, tiny_batch, tiny_spec),
        rtol=0,
        atol=0,
    )


def test_config_contents(saved, tiny_policy):
    config = json.loads((saved / "config.json").read_text())

    assert config["policy_type"] == "act"
    assert config["policy_config"]["chunk_size"] == 4
    assert config["spec"] == tiny_policy.spec.to_dict()
    assert config["stats_sha256"] == _file_sha256(saved / "stats.json")
    assert config["model_sha256"] == checkpoint_sha256(saved)
    assert config["robota_version"] == robota.__version__
    assert config["dataset_fingerprint"] == "abc"


def test_only_checkpoint_files(saved):
    assert sorted(p.name for p in saved.parent.iterdir()) == ["ckpt"]
    assert sorted(p.name for p in saved.iterdir()) == [
        "config.json",
        "model.safetensors",
        "stats.json",
    ]


def test_save_replaces_earlier_checkpoint(saved, tiny_spec, tiny_stats):
    from robota.policies import make_policy

    from policy_helpers import TINY_ACT

    torch.manual_seed(1)
    other = make_policy("act", tiny_spec, tiny_stats, **TINY_ACT)
    before = checkpoint_sha256(saved)

    save_checkpoint(saved, other)

    assert checkpoint_sha256(saved) != before
    assert sorted(p.name for p in saved.parent.iterdir()) == ["ckpt"]


def test_save_refuses_foreign_folder(tmp_path, tiny_policy):
    (tmp_path / "notes.txt").write_text("keep me")

    with pytest.raises(CheckpointError, match="notes.txt"):
        save_checkpoint(tmp_path, tiny_policy)
    assert (tmp_path / "notes.txt").exists()


def test_extra_cannot_override_keys(tmp_path, tiny_policy):
    with pytest.raises(CheckpointError, match="stats_sha256"):
        save_checkpoint(tmp_path / "ckpt", tiny_policy, extra={"stats_sha256": "0"})


def test_missing_folder(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nothing")


@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "stats.json"])
def test_missing_file(saved, name):
    (saved / name).unlink()

    with pytest.raises(CheckpointError, match=name):
        load_checkpoint(saved)


def test_truncated_model(saved):
    path = saved / "model.safetensors"
    path.write_bytes(path.read_bytes()[:100])

    with pytest.raises(CheckpointError, match="model.safetensors is corrupted"):
        load_checkpoint(saved)


def test_unreadable_model_with_matching_hash(saved):
    path = saved / "model.safetensors"
    path.write_bytes(b"not a safetensors file")
    config = json.loads((saved / "config.json").read_text())
    config["model_sha256"] = _file_sha256(path)
    (saved / "config.json").write_text(json.dumps(config))

    with pytest.raises(CheckpointError, match="model.safetensors cannot be read"):
        load_checkpoint(saved)


def test_invalid_config_json(saved):
    (saved / "config.json").write_text("{")

    with pytest.raises(CheckpointError, match="config.json is not valid JSON"):
        load_checkpoint(saved)


def test_stats_hash_mismatch(saved):
    stats = json.loads((saved / "stats.json").read_text())
    stats["action"]["mean"][0] += 1.0
    (saved / "stats.json").write_text(json.dumps(stats))

    with pytest.raises(CheckpointError, match="stats.json has sha256"):
        load_checkpoint(saved)


def test_stats_missing_feature(saved):
    _rewrite_stats(saved, lambda stats: stats.pop("observation.part_pose"))

    with pytest.raises(CheckpointError, match="stats.json does not fit.*observation.part_pose"):
        load_checkpoint(saved)


def test_stats_wrong_shape(saved):
    def shorten(stats):
        stats["action"]["std"] = stats["action"]["std"][:6]

    _rewrite_stats(saved, shorten)

    with pytest.raises(
        CheckpointError, match=r"stats.json does not fit.*shape \(6,\), expected \(7,\)"
    ):
        load_checkpoint(saved)


def test_checkpoint_sha256_is_model_hash(saved):
    assert checkpoint_sha256(saved) == _file_sha256(saved / "model.safetensors")
    assert len(checkpoint_sha256(saved)) == 64


def test_loading_needs_no_training_code(saved):
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['robota.train'] = None\n"
        "from robota.policies import load_checkpoint\n"
        f"load_checkpoint({str(saved)!r})\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 0, result.stderr
