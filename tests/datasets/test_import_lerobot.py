"""LeRobot import and foreign specs: the real SO-101 dataset, and the offline benchmark at toy size."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from dataset_helpers import snapshot

from robota.datasets import open_dataset
from robota.datasets.foreign import WIDE_LIMIT_RAD, generic_robot, make_foreign_spec, resize_rgb, vector_feature
from robota.datasets.lerobot import import_lerobot
from robota.errors import DatasetError
from robota.import_cli import register
from robota.spec import ACTION, OBS_STATE

REPO_ROOT = Path(__file__).resolve().parents[2]
WRIST = "observation.images.wrist"
SIZE = (72, 128)  # 360x640 shrunk by 5
JOINTS = ("j0", "j1", "j2", "j3", "j4", "j5")


@pytest.fixture(scope="module")
def so101_import(so101: Path, tmp_path_factory) -> Path:
    return import_lerobot(so101, tmp_path_factory.mktemp("so101") / "dataset", image_size=SIZE, joint_unit="rad", episodes=[4, 5])


def test_so101_import_spec(so101_import):
    spec = open_dataset(so101_import).spec

    assert spec.robot.name == "so101_follower"
    assert spec.robot.joint_names == JOINTS[:5]  # five arm joints, then the gripper
    assert spec.features[ACTION].names == JOINTS
    assert spec.features[OBS_STATE].names == JOINTS
    assert spec.features[OBS_STATE].unit == "rad"
    assert spec.features[WRIST].shape == (*SIZE, 3)
    assert spec.fps == 30


def test_so101_import_values(so101, so101_import):
    source, imported = open_dataset(so101), open_dataset(so101_import)

    assert imported.episode_lengths == [90, 162]
    for position, index in enumerate([4, 5]):
        expected, episode = source.episode(index), imported.episode(position)
        np.testing.assert_array_equal(episode[OBS_STATE], expected[OBS_STATE])
        np.testing.assert_array_equal(episode[ACTION], expected[ACTION])
        resized = np.stack([resize_rgb(image, *SIZE) for image in expected[WRIST][::30]])
        error = np.abs(episode[WRIST][::30].astype(np.int16) - resized)
        assert error.mean() < 2.0  # H.264 at CRF 18
        assert imported.episode_metadata(position)["source_episode_index"] == index
        assert episode["task"][0] == "pick and place"


def test_so101_source_untouched(so101, tmp_path):
    before = snapshot(so101)
    import_lerobot(so101, tmp_path / "dataset", image_size=SIZE, episodes=[4])
    assert snapshot(so101) == before


def test_generic_robot_wide_limits():
    robot = generic_robot("arm", 3)

    assert robot.joint_names == ("joint_0", "joint_1", "joint_2")
    assert robot.lower_rad == (-WIDE_LIMIT_RAD,) * 3
    assert robot.upper_rad == (WIDE_LIMIT_RAD,) * 3
    assert robot.action_dim == 4


def test_foreign_spec_action_must_fit_robot():
    robot = generic_robot("arm", 6)

    with pytest.raises(DatasetError, match=r"takes 7: 6 arm commands and one gripper command"):
        make_foreign_spec(robot, 10, [vector_feature(OBS_STATE, JOINTS)], action_names=JOINTS)


def test_foreign_spec_rejects_non_observation():
    with pytest.raises(DatasetError, match="'next.reward' is not an observation"):
        make_foreign_spec(generic_robot("arm", 1), 10, [vector_feature("next.reward", ["reward"])])


def test_cli_import_lerobot(so101, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="robota")
    dataset_commands = parser.add_subparsers(dest="command").add_parser("dataset").add_subparsers(dest="dataset_command")
    register(dataset_commands)
    argv = ["dataset", "import", "lerobot", str(so101), str(tmp_path / "out"), "--image-size", "36", "64", "--episodes", "4"]
    args = parser.parse_args(argv)

    assert args.handler(args) == 0
    assert "wrote 1 episodes, 90 frames" in capsys.readouterr().out
    assert open_dataset(tmp_path / "out").spec.features[WRIST].shape == (36, 64, 3)


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("so101_offline", REPO_ROOT / "benchmarks" / "so101_offline.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_so101_benchmark_toy_size(so101, tmp_path):
    benchmark = _load_benchmark()
    config = benchmark.BenchmarkConfig(
        source=so101, workdir=tmp_path / "run", cache_dir=tmp_path / "cache", steps=4, batch_size=8, image_size=(36, 64)
    )

    result = benchmark.run_benchmark(config)

    assert result["frames"] == 252  # held-out episodes 4 and 5
    assert result["export_parity_frames"] == 252
    assert result["bundle_vs_torch_max_abs"] < 1e-4
    # The recorded state and action are constant over the whole dataset.
    assert result["recorded_action_range_rad"] == [0.0] * 6
    np.testing.assert_allclose(result["hold_position_mae_rad"][2], 0.1529, atol=1e-4)
    assert "| mean |" in benchmark.format_table(result)
