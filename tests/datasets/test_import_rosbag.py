"""ROS 2 bag import: real rosbag2 bags, a round trip of twin data, alignment counts and mappings."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import pytest
from rosbag_helpers import commands, compressed_image, joint_state, write_bag, wrench

from robota.datasets import open_dataset
from robota.datasets.rosbag import import_rosbag, inspect_bag
from robota.datasets.rosbag_mapping import load_mapping, mapping_from_dict
from robota.errors import DatasetError
from robota.import_cli import register
from robota.spec import ACTION, GRIPPER_NAME, OBS_STATE, OBS_WRENCH, UR5E

ROSBAG2 = "rosbag2"
START_NS = 1_700_000_000_000_000_000
PERIOD_NS = 100_000_000  # the twin's 10 Hz control period
STEPS = 12
WRIST = "observation.images.wrist"

TWIN_MAPPING = {
    "fps": 10,
    "tolerance_s": 0.02,
    "task": "pick the part",
    "robot": "ur5e",
    "topics": [
        {"topic": "/joint_states", "feature": OBS_STATE, "unit": "rad; gripper m"},
        {"topic": "/wrench", "feature": OBS_WRENCH},
        {"topic": "/camera/wrist/compressed", "feature": WRIST},
        {"topic": "/commands", "feature": ACTION},
    ],
}
TWIN_TOML = """
fps = 10
tolerance_s = 0.02
task = "pick the part"
robot = "ur5e"

[[topics]]
topic = "/joint_states"
feature = "observation.state"
unit = "rad; gripper m"

[[topics]]
topic = "/wrench"
feature = "observation.wrench"

[[topics]]
topic = "/camera/wrist/compressed"
feature = "observation.images.wrist"

[[topics]]
topic = "/commands"
feature = "action"
"""
TWIN_YAML = """
fps: 10
tolerance_s: 0.02
task: pick the part
robot: ur5e
topics:
  - {topic: /joint_states, feature: observation.state, unit: "rad; gripper m"}
  - {topic: /wrench, feature: observation.wrench}
  - {topic: /camera/wrist/compressed, feature: observation.images.wrist}
  - {topic: /commands, feature: action}
"""


@pytest.fixture(scope="module")
def twin_rollouts() -> list[list[dict]]:
    """Two short pick-place episodes of the scripted expert: observations and actions."""
    from robota.sim import make_env
    from robota.sim.expert import make_expert
    from robota.sim.rollout import run_episode

    env = make_env("pick-place", image_size=(32, 32), max_episode_steps=STEPS)
    expert = make_expert("pick-place", env)
    episodes = []
    for seed in (0, 1):
        steps: list[dict] = []
        run_episode(env, expert, seed, on_step=lambda obs, action: steps.append({**obs, ACTION: action.copy()}))
        episodes.append(steps)
    env.close()
    return episodes


def twin_messages(steps: list[dict]) -> list[tuple]:
    """Publish one episode as /joint_states, /wrench, /camera/wrist/compressed and /commands."""
    names = [*UR5E.joint_names, GRIPPER_NAME]
    messages = []
    for step, values in enumerate(steps):
        time_ns = START_NS + step * PERIOD_NS
        messages += [
            ("/joint_states", "sensor_msgs/msg/JointState", time_ns, joint_state(time_ns, names, values[OBS_STATE])),
            ("/wrench", "geometry_msgs/msg/WrenchStamped", time_ns, wrench(time_ns, values[OBS_WRENCH])),
            ("/camera/wrist/compressed", "sensor_msgs/msg/CompressedImage", time_ns, compressed_image(time_ns, values[WRIST])),
            ("/commands", "std_msgs/msg/Float64MultiArray", time_ns, commands(values[ACTION])),
        ]
    return messages


@pytest.fixture(scope="module", params=["sqlite3", "mcap"])
def twin_bags(request, tmp_path_factory, twin_rollouts) -> list[Path]:
    folder = tmp_path_factory.mktemp(f"bags_{request.param}")
    return [
        write_bag(folder / f"episode_{index}", request.param, twin_messages(steps))
        for index, steps in enumerate(twin_rollouts)
    ]


def test_twin_bags_round_trip(twin_bags, twin_rollouts, tmp_path):
    report = import_rosbag(twin_bags, tmp_path / "dataset", mapping_from_dict(TWIN_MAPPING))
    dataset = open_dataset(tmp_path / "dataset")

    assert dataset.episode_lengths == [len(steps) for steps in twin_rollouts]
    assert dataset.spec.robot == UR5E
    assert dataset.spec.features[OBS_STATE].names == (*UR5E.joint_names, GRIPPER_NAME)
    assert dataset.spec.features[OBS_WRENCH].frame == "tool0"
    assert report.frames == 2 * STEPS
    assert report.dropped_frames == 0
    for topic in report.topics.values():
        assert (topic.messages, topic.late_frames, topic.dropped_frames) == (2 * STEPS, 0, 0)
    for index, steps in enumerate(twin_rollouts):
        episode = dataset.episode(index)
        for key in (OBS_STATE, OBS_WRENCH, ACTION):
            np.testing.assert_array_equal(episode[key], np.stack([s[key] for s in steps]))
        images = np.stack([s[WRIST] for s in steps]).astype(np.int16)
        error = np.abs(episode[WRIST].astype(np.int16) - images)
        assert error.mean() < 4.0  # JPEG at quality 1-2, then H.264 at CRF 18
        assert episode["task"][0] == "pick the part"
        assert dataset.episode_metadata(index)["source_bag"] == str(twin_bags[index])


def test_unmapped_topics_listed(tmp_path, twin_rollouts):
    status = ("/status", "std_msgs/msg/String", START_NS, _string("ready"))
    bag = write_bag(tmp_path / "bag", "mcap", [*twin_messages(twin_rollouts[0][:3]), status])

    report = import_rosbag(bag, tmp_path / "dataset", mapping_from_dict(TWIN_MAPPING))

    assert [(t.topic, t.msgtype, t.message_count) for t in report.unmapped] == [("/status", "std_msgs/msg/String", 1)]
    assert "not mapped: /status" in report.format()


def _string(text: str):
    from rosbag_helpers import T

    return T["std_msgs/msg/String"](data=text)


def test_alignment_counts_late_and_dropped(tmp_path):
    # /joint_states at 10 Hz with 500-700 ms missing; /commands every 300 ms (bag time only).
    messages = []
    for k in range(21):
        if k not in (5, 6, 7):
            time_ns = START_NS + k * PERIOD_NS
            messages.append(("/joint_states", "sensor_msgs/msg/JointState", time_ns, joint_state(time_ns, ["a", "b"], [k, -k])))
    for k in range(7):
        time_ns = START_NS + k * 3 * PERIOD_NS
        messages.append(("/commands", "std_msgs/msg/Float64MultiArray", time_ns, commands([3 * k, 0.5])))
    bag = write_bag(tmp_path / "bag", "sqlite3", messages)
    mapping = mapping_from_dict(
        {
            "fps": 10,
            "tolerance_s": 0.25,
            "topics": [
                {"topic": "/joint_states", "feature": OBS_STATE},
                {"topic": "/commands", "feature": ACTION},
            ],
        }
    )

    report = import_rosbag(bag, tmp_path / "dataset", mapping)
    episode = open_dataset(tmp_path / "dataset").episode(0)

    # 21 grid frames from 0 to 2 s. At 700 ms the latest joint state (400 ms) is 300 ms old: dropped.
    assert report.frames == 20
    assert report.dropped_frames == 1
    joints, command = report.topics["/joint_states"], report.topics["/commands"]
    assert (joints.late_frames, joints.dropped_frames) == (1, 1)  # 600 ms uses the 400 ms message
    assert (command.late_frames, command.dropped_frames) == (7, 0)  # 200 ms old at k % 3 == 2
    frame_times = [k for k in range(21) if k != 7]
    np.testing.assert_array_equal(episode[OBS_STATE][:, 0], [k if k not in (5, 6) else 4 for k in frame_times])
    np.testing.assert_array_equal(episode[ACTION][:, 0], [3 * (k // 3) for k in frame_times])


@pytest.mark.parametrize(
    ("bag", "topics"),
    [
        ("cdr_test_sqlite3", {"/test_topic": ("test_msgs/msg/BasicTypes", 3), "/array_topic": ("test_msgs/msg/Arrays", 4)}),
        ("cdr_test_mcap", {"/test_topic": ("test_msgs/msg/BasicTypes", 3), "/array_topic": ("test_msgs/msg/Arrays", 4)}),
        ("talker_sqlite3", {"/topic": ("std_msgs/msg/String", 10), "/rosout": ("rcl_interfaces/msg/Log", 10)}),
        ("talker_mcap", {"/topic": ("std_msgs/msg/String", 10), "/rosout": ("rcl_interfaces/msg/Log", 10)}),
    ],
)
def test_inspect_real_bags(shared_data, bag, topics):
    info = inspect_bag(shared_data / ROSBAG2 / bag)

    found = {t.topic: (t.msgtype, t.message_count) for t in info.topics}
    for topic, expected in topics.items():
        assert found[topic] == expected
    assert info.storage == bag.rsplit("_", 1)[1]
    assert not any(t.importable for t in info.topics)


@pytest.mark.parametrize("bag", ["cdr_test_sqlite3", "cdr_test_mcap"])
def test_real_bag_unsupported_type(shared_data, tmp_path, bag):
    mapping = mapping_from_dict(
        {"fps": 10, "tolerance_s": 0.1, "topics": [{"topic": "/array_topic", "feature": ACTION}]}
    )

    with pytest.raises(DatasetError, match="test_msgs/msg/Arrays, which robota does not convert"):
        import_rosbag(shared_data / ROSBAG2 / bag, tmp_path / "dataset", mapping)
    assert not (tmp_path / "dataset").exists()


def test_missing_topic_names_bag_topics(shared_data, tmp_path):
    mapping = mapping_from_dict({"fps": 10, "tolerance_s": 0.1, "topics": [{"topic": "/commands", "feature": ACTION}]})

    with pytest.raises(DatasetError, match=r"no topic \['/commands'\].*'/topic'"):
        import_rosbag(shared_data / ROSBAG2 / "talker_mcap", tmp_path / "dataset", mapping)


def test_mapping_toml_equals_yaml(tmp_path):
    (tmp_path / "map.toml").write_text(TWIN_TOML)
    (tmp_path / "map.yaml").write_text(TWIN_YAML)

    expected = mapping_from_dict(TWIN_MAPPING)
    assert load_mapping(tmp_path / "map.toml") == expected
    assert load_mapping(tmp_path / "map.yaml") == expected


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"topics": [{"topic": "/joint_states", "feature": OBS_STATE}]}, "exactly one topic mapped to 'action'"),
        ({"fps": 0}, "fps must be between 1 and 1000"),
        ({"tolerance_s": 0}, "tolerance_s must be positive"),
        ({"rate": 10}, r"unknown keys \['rate'\]"),
        ({"topics": [{"topic": "/c", "feature": "commands"}]}, "a feature key is observation"),
        ({"topics": [{"topic": "/c", "feature": ACTION, "size": [31, 32]}]}, "both even"),
        ({"topics": [{"topic": "/c", "feature": ACTION, "field": "torque"}]}, "field 'torque' is invalid"),
    ],
)
def test_mapping_errors(change, message):
    with pytest.raises(DatasetError, match=message):
        mapping_from_dict({**TWIN_MAPPING, **change})


def test_mapping_file_missing(tmp_path):
    with pytest.raises(DatasetError, match="mapping file .* not found"):
        load_mapping(tmp_path / "absent.toml")


def _cli() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robota")
    commands_parser = parser.add_subparsers(dest="command", required=True)
    dataset = commands_parser.add_parser("dataset").add_subparsers(dest="dataset_command", required=True)
    register(dataset)
    return parser


def test_cli_inspect_bag(shared_data, capsys):
    args = _cli().parse_args(["dataset", "inspect-bag", str(shared_data / ROSBAG2 / "talker_sqlite3")])

    assert args.handler(args) == 0
    output = capsys.readouterr().out
    assert re.search(r"/topic +std_msgs/msg/String  10 messages  \(not importable\)", output)


def test_cli_import_rosbag(twin_bags, tmp_path, capsys):
    (tmp_path / "map.toml").write_text(TWIN_TOML)
    argv = ["dataset", "import", "rosbag", *map(str, twin_bags), str(tmp_path / "out"), "--mapping", str(tmp_path / "map.toml")]
    args = _cli().parse_args(argv)

    assert args.handler(args) == 0
    assert f"wrote 2 episodes, {2 * STEPS} frames" in capsys.readouterr().out
    assert open_dataset(tmp_path / "out").num_episodes == 2


def test_raw_and_png_images_convert():
    from rosbag_helpers import T, header

    from robota.datasets.rosbag import COMPRESSED_IMAGE, IMAGE, message_value
    from robota.datasets.rosbag_mapping import TopicMapping

    rgb = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    topic = TopicMapping("/camera", "observation.images.top")
    bgr = T["sensor_msgs/msg/Image"](
        header=header(START_NS), height=4, width=6, encoding="bgr8", is_bigendian=0, step=6 * 3 + 2,
        data=np.pad(rgb[:, :, ::-1].reshape(4, 18), ((0, 0), (0, 2))).ravel(),  # rows padded to step
    )
    png = T["sensor_msgs/msg/CompressedImage"](header=header(START_NS), format="rgb8; png compressed", data=_png(rgb))

    np.testing.assert_array_equal(message_value(bgr, IMAGE, topic), rgb)
    np.testing.assert_array_equal(message_value(png, COMPRESSED_IMAGE, topic), rgb)  # PNG is lossless


def _png(image: np.ndarray) -> np.ndarray:
    import av

    encoder = av.CodecContext.create("png", "w")
    encoder.width, encoder.height, encoder.pix_fmt = image.shape[1], image.shape[0], "rgb24"
    packets = encoder.encode(av.VideoFrame.from_ndarray(image, format="rgb24"))
    return np.frombuffer(b"".join(bytes(p) for p in packets), dtype=np.uint8)
