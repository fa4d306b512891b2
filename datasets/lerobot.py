"""Import a LeRobot v3.0 dataset that robota did not write into a robota dataset with a spec.

LeRobot's info.json names features and shapes but no robot, limits or units, so
`DatasetReader.spec` is None and robota cannot train on it directly. `import_lerobot` builds a
spec with `robota.datasets.foreign`, optionally shrinks the camera images, and copies every
episode through `DatasetWriter`. The source folder is only read.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robota.datasets.foreign import (
    camera_feature,
    element_names,
    generic_robot,
    make_foreign_spec,
    resize_rgb,
    vector_feature,
)
from robota.datasets.reader import DatasetReader, open_dataset
from robota.datasets.writer import DatasetWriter
from robota.errors import DatasetError
from robota.spec import ACTION, OBS_IMAGES, TASK, Spec

logger = logging.getLogger(__name__)


def import_lerobot(
    source: str | Path,
    output: str | Path,
    *,
    image_size: tuple[int, int] | None = None,
    robot_name: str | None = None,
    joint_unit: str | None = None,
    episodes: Sequence[int] | None = None,
) -> Path:
    """Copy a LeRobot v3.0 dataset into a new robota dataset that carries a spec.

    The last element of `action` is taken as the gripper command and the others as arm
    commands, which is LeRobot's layout for SO-100/SO-101 and Koch arms.

    Args:
        source: LeRobot v3.0 dataset folder; it is only read.
        output: New dataset folder to write.
        image_size: `(height, width)` to resize every camera to; the source size when None.
            Both must be even, because the video is stored as yuv420p.
        robot_name: Robot name for the spec; the source's `robot_type` when None.
        joint_unit: Unit of the state and action elements, for example `rad`.
        episodes: Source episodes to copy, in order; all when None.

    Returns:
        The output folder.

    Raises:
        DatasetError: The source cannot be read, has no `action`, or the output exists.
    """
    reader = open_dataset(source)
    spec = lerobot_spec(reader, image_size=image_size, robot_name=robot_name, joint_unit=joint_unit)
    selected = list(range(reader.num_episodes)) if episodes is None else [int(e) for e in episodes]

    with DatasetWriter(output, spec, robot_type=spec.robot.name) as writer:
        for index in selected:
            _copy_episode(reader, index, spec, writer)
            writer.save_episode({"source_episode_index": index})
            logger.info("imported episode %d of %s", index, reader.root)
    return Path(output)


def lerobot_spec(
    reader: DatasetReader,
    *,
    image_size: tuple[int, int] | None = None,
    robot_name: str | None = None,
    joint_unit: str | None = None,
) -> Spec:
    """Build a robota spec for an open LeRobot dataset from its info.json features."""
    if ACTION not in reader.features:
        raise DatasetError(f"{reader.root} has no {ACTION!r} feature; features: {list(reader.features)}")
    action_names = feature_names(reader.features[ACTION], reader.action_dim, ACTION)
    robot = generic_robot(
        robot_name or str(reader.info.get("robot_type") or "unknown"),
        len(action_names) - 1,
        joint_names=action_names[:-1],
    )

    observations = []
    for key in reader.image_keys:
        height, width, _ = reader.image_shape(key)
        if image_size is not None:
            height, width = (int(v) for v in image_size)
        observations.append(camera_feature(key[len(OBS_IMAGES):], height, width))
    for key in reader.vector_keys:
        size = int(np.prod(reader.features[key]["shape"]))
        names = feature_names(reader.features[key], size, key.rsplit(".", 1)[-1])
        observations.append(vector_feature(key, names, unit=joint_unit, frame="joint"))
    return make_foreign_spec(
        robot,
        reader.fps,
        observations,
        action_names=action_names,
        action_unit=joint_unit,
        action_description=f"arm commands, then the gripper command, as recorded by {robot.name}",
    )


def feature_names(feature: Mapping[str, Any], size: int, prefix: str) -> tuple[str, ...]:
    """Read element names from a LeRobot feature: a list, `{"motors": [...]}` or None."""
    names = feature.get("names")
    if isinstance(names, Mapping) and len(names) == 1:
        names = next(iter(names.values()))
    if isinstance(names, list) and len(names) == size and all(isinstance(n, str) for n in names):
        return tuple(names)
    return element_names(prefix, size)


def _copy_episode(reader: DatasetReader, index: int, spec: Spec, writer: DatasetWriter) -> None:
    episode = reader.episode(index)
    for key in spec.image_keys:
        height, width, _ = spec.features[key].shape
        episode[key] = [resize_rgb(image, height, width) for image in episode[key]]
    for step, task in enumerate(episode[TASK]):
        frame: dict[str, Any] = {TASK: task}
        for key in spec.features:
            if key != TASK:
                frame[key] = episode[key][step]
        writer.add_frame(frame)
