"""robosuite and robomimic HDF5 import: the real Lift demo and a synthetic robomimic-layout file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from dataset_helpers import smooth_image

from robota.datasets import open_dataset
from robota.datasets.robomimic import SIM_STATE, import_robomimic
from robota.errors import DatasetError
from robota.import_cli import register
from robota.spec import ACTION, OBS_STATE

LIFT = "robosuite/lift_panda_demo.hdf5"
OSC_AXES = ("dx", "dy", "dz", "dax", "day", "daz")
ENV_ARGS = {
    "env_name": "PickPlaceCan",
    "type": 1,
    "env_kwargs": {
        "robots": ["Panda"],
        "control_freq": 15,
        "controller_configs": {"type": "OSC_POSE", "input_max": 1, "input_min": -1},
    },
}
# Demo name -> steps; demo_10 sorts after demo_2 by number, not by text.
DEMOS = {"demo_1": 6, "demo_2": 4, "demo_10": 5}


@pytest.fixture(scope="module")
def lift(shared_data: Path, tmp_path_factory) -> tuple[Path, Path]:
    source = shared_data / LIFT
    if not source.is_file():
        pytest.skip(f"{source} not found; the robosuite Lift demo is needed")
    output = tmp_path_factory.mktemp("lift") / "dataset"
    return source, import_robomimic(source, output)


def test_lift_demo_episodes_and_values(lift):
    source, output = lift
    dataset = open_dataset(output)

    assert dataset.episode_lengths == [482, 510, 392]
    assert dataset.fps == 20  # the time column of states advances 0.05 s per step
    with h5py.File(source, "r") as file:
        for index, name in enumerate(["demo_1", "demo_2", "demo_3"]):
            episode = dataset.episode(index)
            states = file[f"data/{name}/states"][()]
            np.testing.assert_array_equal(episode[ACTION], file[f"data/{name}/actions"][()].astype(np.float32))
            np.testing.assert_array_equal(episode[SIM_STATE], states.astype(np.float32))
            np.testing.assert_array_equal(episode[OBS_STATE][:, :7], states[:, 1:8].astype(np.float32))
            np.testing.assert_allclose(episode[OBS_STATE][:, 7], states[:, 8] - states[:, 9], atol=1e-7)
            assert episode["task"][0] == "Lift"


def test_lift_demo_environment_metadata(lift):
    source, output = lift
    dataset = open_dataset(output)

    metadata = dataset.episode_metadata(1)
    with h5py.File(source, "r") as file:
        assert json.loads(metadata["env_metadata"]) == json.loads(file["data"].attrs["env_info"])
        assert metadata["model_file"] == file["data/demo_2"].attrs["model_file"]
    assert metadata["source_demo"] == "demo_2"
    assert metadata["env_name"] == "Lift"


def test_lift_demo_spec(lift):
    _, output = lift
    spec = open_dataset(output).spec

    assert spec.robot.name == "panda"
    assert spec.robot.joint_names == OSC_AXES  # OSC_POSE: six pose deltas, then the gripper
    assert spec.robot.lower_rad == (-1.0,) * 6  # the controller's input_min
    assert spec.features[ACTION].names == (*OSC_AXES, "gripper")
    assert spec.features[OBS_STATE].shape == (8,)
    assert spec.features[SIM_STATE].shape == (32,)


def write_robomimic(path: Path) -> Path:
    """A small file in robomimic's layout: obs, next_obs, images, masks and env_args."""
    with h5py.File(path, "w") as file:
        data = file.create_group("data")
        data.attrs["env_args"] = json.dumps(ENV_ARGS)
        data.attrs["total"] = sum(DEMOS.values())
        for offset, (name, steps) in enumerate(DEMOS.items()):
            demo = data.create_group(name)
            demo.attrs["num_samples"] = steps
            base = 100.0 * offset + np.arange(steps, dtype=np.float64)[:, None]
            obs = {
                "agentview_image": np.stack([smooth_image(32, 48, 5 * offset + t) for t in range(steps)]),
                "robot0_eef_pos": base + np.arange(3) / 10,
                "robot0_gripper_qpos": base + np.arange(2) / 100,
                "object": base + np.arange(10),
            }
            for group in ("obs", "next_obs"):
                for key, values in obs.items():
                    demo.create_dataset(f"{group}/{key}", data=values if group == "obs" else np.roll(values, -1, axis=0))
            demo.create_dataset("actions", data=(base + np.arange(7)) / 1000)
            demo.create_dataset("rewards", data=np.zeros(steps))
            demo.create_dataset("dones", data=np.eye(steps)[-1])
            demo.create_dataset("states", data=np.concatenate([base / 15, base + np.arange(9)], axis=1))
        file.create_dataset("mask/train", data=np.array([b"demo_1", b"demo_10"]))
        file.create_dataset("mask/valid", data=np.array([b"demo_2"]))
    return path


@pytest.fixture(scope="module")
def robomimic_file(tmp_path_factory) -> Path:
    return write_robomimic(tmp_path_factory.mktemp("robomimic") / "can.hdf5")


def test_robomimic_layout_import(robomimic_file, tmp_path):
    dataset = open_dataset(import_robomimic(robomimic_file, tmp_path / "dataset"))

    assert dataset.fps == 15  # env_kwargs.control_freq
    assert dataset.episode_lengths == [6, 4, 5]
    assert [dataset.episode_metadata(i)["source_demo"] for i in range(3)] == ["demo_1", "demo_2", "demo_10"]
    assert list(dataset.spec.features) == [
        "observation.images.agentview",
        "observation.object",
        "observation.robot0_eef_pos",
        "observation.robot0_gripper_qpos",
        SIM_STATE,
        "task",
        ACTION,
    ]
    assert OBS_STATE not in dataset.spec.features  # robomimic files carry their own obs keys
    assert dataset.spec.features["observation.robot0_eef_pos"].names == ("robot0_eef_pos_0", "robot0_eef_pos_1", "robot0_eef_pos_2")
    with h5py.File(robomimic_file, "r") as file:
        episode = dataset.episode(2)
        demo = file["data/demo_10"]
        for key in ("object", "robot0_eef_pos", "robot0_gripper_qpos"):
            np.testing.assert_array_equal(episode[f"observation.{key}"], demo[f"obs/{key}"][()].astype(np.float32))
        np.testing.assert_array_equal(episode[ACTION], demo["actions"][()].astype(np.float32))
        error = np.abs(episode["observation.images.agentview"].astype(np.int16) - demo["obs/agentview_image"][()])
        assert error.mean() < 4.0  # H.264 at CRF 18 with yuv420p chroma, on a smooth gradient
    assert json.loads(dataset.episode_metadata(0)["env_metadata"]) == ENV_ARGS
    assert dataset.tasks == ["PickPlaceCan"]


def test_robomimic_filter_key(robomimic_file, tmp_path):
    dataset = open_dataset(import_robomimic(robomimic_file, tmp_path / "dataset", filter_key="train", task="pick the can"))

    assert [dataset.episode_metadata(i)["source_demo"] for i in range(2)] == ["demo_1", "demo_10"]
    assert dataset.tasks == ["pick the can"]


def test_robomimic_unknown_filter_key(robomimic_file, tmp_path):
    with pytest.raises(DatasetError, match=r"no filter key 'test'; filter keys in mask/: \['train', 'valid'\]"):
        import_robomimic(robomimic_file, tmp_path / "dataset", filter_key="test")


def test_hdf5_without_data_group(tmp_path):
    path = tmp_path / "other.hdf5"
    with h5py.File(path, "w") as file:
        file.create_dataset("images", data=np.zeros((2, 4, 4, 3), dtype=np.uint8))

    with pytest.raises(DatasetError, match=r"other.hdf5 has no 'data' group \(top-level keys: \['images'\]\).*DataCollectionWrapper"):
        import_robomimic(path, tmp_path / "dataset")
    assert not (tmp_path / "dataset").exists()


def test_hdf5_file_missing(tmp_path):
    with pytest.raises(DatasetError, match="absent.hdf5 not found"):
        import_robomimic(tmp_path / "absent.hdf5", tmp_path / "dataset")


def test_fps_unknown_asks_for_it(tmp_path):
    path = tmp_path / "bare.hdf5"
    with h5py.File(path, "w") as file:
        file.create_dataset("data/demo_1/actions", data=np.zeros((3, 4)))

    with pytest.raises(DatasetError, match="Pass fps=..."):
        import_robomimic(path, tmp_path / "dataset")
    dataset = open_dataset(import_robomimic(path, tmp_path / "dataset", fps=30))
    assert dataset.spec.robot.joint_names == ("axis_0", "axis_1", "axis_2")


def test_cli_import_robomimic(robomimic_file, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="robota")
    dataset_commands = parser.add_subparsers(dest="command").add_parser("dataset").add_subparsers(dest="dataset_command")
    register(dataset_commands)
    args = parser.parse_args(
        ["dataset", "import", "robomimic", str(robomimic_file), str(tmp_path / "out"), "--filter-key", "valid"]
    )

    assert args.handler(args) == 0
    assert f"wrote 1 episodes, 4 frames at 15 Hz to {tmp_path / 'out'}" in capsys.readouterr().out
