"""Training one flow policy on a mix of robots: the loader, the trainer, checkpoints and export."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from robota.cli import main as robota_main
from robota.datasets.torch_loader import ChunkDataset, ChunkMixture
from robota.errors import RobotaError, SpecError, UnknownNameError
from robota.evaluate import load_rollout_policy
from robota.policies import load_checkpoint
from robota.record import RecordConfig, record
from robota.spec import ACTION
from robota.train import TrainConfig, train
from robota.train_cli import main as train_main
from robota.train_dist import DistributedContext
from robota.train_loop import BatchStream

# A flow policy small enough that a CPU step takes milliseconds.
TINY_FLOW_TOML = """\
steps = 4
batch_size = 4
chunk_size = 4
warmup_steps = 1
log_every = 1
checkpoint_every = 0
val_fraction = 0.34
tensorboard = false

[policy]
dim_model = 32
n_heads = 2
dim_feedforward = 64
image_channels = [8, 16]
n_layers = 1
n_expert_layers = 1
num_inference_steps = 2
"""


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def two_robots(tmp_path_factory) -> tuple[Path, Path]:
    """A UR5e pick-and-place dataset and a Panda machine-tending one, two episodes each."""
    root = tmp_path_factory.mktemp("robots")
    ur5e = record(
        RecordConfig(root / "ur5e-pick", task="pick-place", episodes=2, image_size=16, robot="ur5e")
    ).dataset
    panda = record(
        RecordConfig(
            root / "panda-tend", task="machine-tending", episodes=2, image_size=16, robot="panda"
        )
    ).dataset
    return ur5e, panda


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("frames")


@pytest.fixture(scope="module")
def mixture(two_robots, cache) -> ChunkMixture:
    parts = [ChunkDataset(root, chunk_size=4, cache_dir=cache) for root in two_robots]
    return ChunkMixture(parts, [1.0, 3.0], names=[str(root) for root in two_robots])


@pytest.fixture(scope="module")
def run(two_robots, tmp_path_factory) -> Path:
    """A flow policy trained for 4 steps through `robota train` on the UR5e + Panda mix."""
    folder = tmp_path_factory.mktemp("run")
    config = folder / "tiny.toml"
    config.write_text(TINY_FLOW_TOML)
    ur5e, panda = two_robots
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ROBOTA_CACHE_DIR", str(folder / "cache"))
        status = train_main([
            "train", "--config", str(config), "--policy", "flow", "--dataset", str(ur5e),
            "--dataset", f"{panda}:3", "--output", str(folder / "run"),
        ])
    assert status == 0
    return folder / "run"


def _batch(dataset: ChunkDataset, count: int) -> dict[str, torch.Tensor]:
    items = [dataset[i] for i in range(count)]
    return {key: torch.stack([item[key] for item in items]) for key in items[0]}


def test_mixture_keeps_each_robots_spec(mixture, two_robots):
    ur5e, panda = mixture.datasets

    assert mixture.robot_names == ("ur5e", "panda")
    assert mixture.part_robots == ["ur5e", "panda"]
    assert mixture.spec.robot.name == "ur5e"
    assert mixture.embodiments["panda"][0].features[ACTION].shape == (8,)
    assert len(mixture.stats[ACTION]["mean"]) == 7
    np.testing.assert_allclose(
        mixture.embodiments["panda"][1][ACTION]["mean"], panda.stats[ACTION]["mean"], rtol=1e-6
    )
    np.testing.assert_allclose(mixture.stats[ACTION]["mean"], ur5e.stats[ACTION]["mean"], rtol=1e-6)


def test_batches_hold_one_robot_by_weight(mixture):
    sampler = mixture.batch_sampler(batch_size=4, seed=0, num_batches=2000)
    first_size = len(mixture.datasets[0])

    indices, datasets = sampler.draw()
    from_first = indices < first_size

    assert indices.shape == (2000, 4)
    assert (from_first.all(axis=1) | (~from_first).all(axis=1)).all()
    assert (from_first[:, 0] == (datasets == 0)).all()
    # Panda weighs 3 of 4; the binomial standard deviation over 2000 batches is 0.0097.
    assert abs(float(np.mean(datasets == 1)) - 0.75) < 0.04


def test_batch_sampler_resumes_inside_epoch(mixture):
    sampler = mixture.batch_sampler(batch_size=4, seed=0, num_batches=30)
    sampler.set_epoch(2)
    whole = list(sampler)
    sampler.set_epoch(2, skip=7)

    assert list(sampler) == whole[7:]
    assert len(sampler) == 23


def test_batch_sampler_ranks_draw_apart(mixture):
    rank_0 = mixture.batch_sampler(batch_size=4, seed=0, num_batches=30, rank=0)
    rank_1 = mixture.batch_sampler(batch_size=4, seed=0, num_batches=30, rank=1)

    assert list(rank_0) != list(rank_1)


def test_stream_marks_each_batch_robot(mixture):
    context = DistributedContext(0, 1, 0, torch.device("cpu"), owns_group=False)
    config = SimpleNamespace(batch_size=4, seed=0, num_workers=0, dataset="mix")
    # The policy's order may differ from the mix's: the entry indexes the policy's robots.
    stream = BatchStream(mixture, context, config, robot_names=("panda", "ur5e"))

    for _ in range(20):
        batch = stream.next()
        robot = batch["robot"]
        assert robot.dtype == torch.int64
        assert robot.shape == (4,)
        assert (robot == robot[0]).all()
        width = 8 if int(robot[0]) == 0 else 7
        assert batch[ACTION].shape == (4, 4, width)


def test_stream_resumes_with_robot(mixture):
    context = DistributedContext(0, 1, 0, torch.device("cpu"), owns_group=False)
    config = SimpleNamespace(batch_size=4, seed=0, num_workers=0, dataset="mix")
    whole = BatchStream(mixture, context, config, robot_names=("ur5e", "panda"))
    resumed = BatchStream(mixture, context, config, robot_names=("ur5e", "panda"))
    expected = [whole.next() for _ in range(8)][5:]

    resumed.seek(0, 5)
    actual = [resumed.next() for _ in range(3)]

    for want, got in zip(expected, actual, strict=True):
        assert torch.equal(got["robot"], want["robot"])
        assert torch.equal(got[ACTION], want[ACTION])


def test_stream_rejects_robot_policy_lacks(mixture):
    context = DistributedContext(0, 1, 0, torch.device("cpu"), owns_group=False)
    config = SimpleNamespace(batch_size=4, seed=0, num_workers=0, dataset="mix")

    with pytest.raises(SpecError, match=r"robots \['ur5e', 'panda'\].*drives \['ur5e'\]"):
        BatchStream(mixture, context, config, robot_names=("ur5e",))


def test_checkpoint_records_other_robot(run, two_robots):
    saved = json.loads((run / "config.json").read_text())

    assert saved["spec"]["robot"]["name"] == "ur5e"
    assert list(saved["embodiments"]) == ["panda"]
    assert saved["embodiments"]["panda"]["spec"]["features"][ACTION]["shape"] == [8]
    assert [entry["robot"] for entry in saved["dataset_mix"]] == ["ur5e", "panda"]
    assert [entry["weight"] for entry in saved["dataset_mix"]] == pytest.approx([0.25, 0.75])


def test_checkpoint_loads_for_each_robot(run):
    as_ur5e = load_checkpoint(run)
    as_panda = load_checkpoint(run, robot="panda")

    assert as_ur5e.spec.robot.name == "ur5e"
    assert as_ur5e.action_dim == 7
    assert as_ur5e.robot_names == ("ur5e", "panda")
    assert as_panda.spec.robot.name == "panda"
    assert as_panda.action_dim == 8
    assert as_panda.robot_names == ("panda", "ur5e")
    assert load_checkpoint(run, robot="ur5e").action_dim == 7


def test_primary_choice_keeps_weights(run, two_robots, cache):
    as_ur5e = load_checkpoint(run)
    as_panda = load_checkpoint(run, robot="panda")
    panda_data = ChunkDataset(two_robots[1], chunk_size=4, cache_dir=cache)
    inputs = {key: value for key, value in _batch(panda_data, 5).items() if key in as_panda.input_names}

    with torch.no_grad():
        direct = as_panda.predict_action_chunk(inputs)
        memory, mask = as_ur5e.encode(inputs, robot=1)
        through_ur5e = as_ur5e.unnormalize_action(as_ur5e.integrate(memory, mask), robot=1)

    assert direct.shape == (5, 4, 8)
    torch.testing.assert_close(direct, through_ur5e, rtol=0, atol=0)
    gripper_range = (panda_data.stats[ACTION]["min"][7], panda_data.stats[ACTION]["max"][7])
    assert set(direct[..., 7].unique().tolist()) <= {float(np.float32(v)) for v in gripper_range}


def test_unknown_robot_suggests_name(run):
    with pytest.raises(UnknownNameError, match="Did you mean 'panda'"):
        load_checkpoint(run, robot="pnada")


def test_batch_of_two_robots_rejected(run, two_robots, cache):
    policy = load_checkpoint(run).train()
    batch = _batch(ChunkDataset(two_robots[0], chunk_size=4, cache_dir=cache), 2)
    batch["robot"] = torch.tensor([0, 1])

    with pytest.raises(SpecError, match="one index into the policy's robots"):
        policy(batch)


def test_export_for_panda_passes_parity(run, tmp_path, capsys):
    bundle = tmp_path / "panda-bundle"

    status = robota_main(["export", str(run), "--robot", "panda", "--output", str(bundle)])

    assert status == 0
    printed = capsys.readouterr().out
    parity_error = float(printed.split("parity max abs error ")[1].split()[0])
    assert parity_error < 1e-4
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["spec"]["robot"]["name"] == "panda"
    assert load_rollout_policy(bundle, robot="panda").spec.features[ACTION].shape == (8,)
    with pytest.raises(RobotaError, match="--robot ur5e"):
        load_rollout_policy(bundle, robot="ur5e")


def test_rollout_policy_takes_robot(run):
    assert load_rollout_policy(run).spec.robot.name == "ur5e"
    assert load_rollout_policy(run, robot="panda").spec.robot.name == "panda"


def test_act_rejects_robot_mix(two_robots, tmp_path, monkeypatch):
    monkeypatch.setenv("ROBOTA_CACHE_DIR", str(tmp_path / "cache"))
    ur5e, panda = two_robots
    config = TrainConfig(
        dataset=[str(ur5e), str(panda)], output=tmp_path / "run", policy="act", steps=1
    )

    with pytest.raises(SpecError) as raised:
        train(config)

    message = str(raised.value)
    assert f"{ur5e} (robot ur5e)" in message
    assert f"{panda} (robot panda)" in message
    assert "use --policy flow" in message
