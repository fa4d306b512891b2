"""Import robosuite and robomimic HDF5 demonstration files into a robota dataset.

Both formats keep demonstrations under a `data` group, one group per demo (`demo_1`, ...):

- robosuite's `DataCollectionWrapper` output (the raw format): `data` has the JSON attribute
  `env_info`. Each demo has `states` (T, 1 + nq + nv) float64, laid out as [time, qpos, qvel],
  `actions` (T, action_dim) and the MJCF scene in its `model_file` attribute.
- robomimic's converted files add `obs/<key>` and `next_obs/<key>` groups (low-dimensional
  arrays and uint8 camera images such as `agentview_image` (T, H, W, 3)), `rewards`, `dones`,
  a `num_samples` attribute per demo, `env_args` (JSON) on `data`, and `mask/<filter>` datasets
  that list demo names as bytes.

Feature mapping:

| source | robota feature |
|---|---|
| `obs/<name>_image` uint8 (T, H, W, 3) | `observation.images.<name>` |
| `obs/<key>` (T,) or (T, d) | `observation.<key>`, float32 |
| `states` | `observation.sim_state`, float32 (a replay needs the float64 source) |
| `states` of a Panda, raw robosuite files only | `observation.state`: 7 arm joints (rad), then the finger gap (m) |
| `actions` | `action`: the arm controller's command, then the gripper command |

`next_obs` repeats `obs` one step later, so it is not stored; `rewards` and `dones` are not
stored either, because robota's policies learn from actions only. The environment metadata
(`env_info` or `env_args`) and the demo's `model_file` go into each episode's metadata.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from robota.datasets.foreign import (
    camera_feature,
    element_names,
    generic_robot,
    make_foreign_spec,
    vector_feature,
)
from robota.datasets.writer import DatasetWriter
from robota.errors import DatasetError, MissingExtraError
from robota.spec import ACTION, OBS_IMAGES, OBS_STATE, TASK, FeatureSpec, Spec

logger = logging.getLogger(__name__)

SIM_STATE = "observation.sim_state"
IMAGE_SUFFIX = "_image"

# Command axes of robosuite's arm controllers, before the gripper command. OSC deltas are
# normalised to [input_min, input_max] and scaled by the controller to m and rad.
CONTROLLER_AXES: dict[str, tuple[str, ...]] = {
    "OSC_POSE": ("dx", "dy", "dz", "dax", "day", "daz"),
    "OSC_POSITION": ("dx", "dy", "dz"),
    "IK_POSE": ("dx", "dy", "dz", "dqx", "dqy", "dqz", "dqw"),
}
# Robots whose joints lead robosuite's qpos: arm joints, then the two finger joints.
# NOTE: only the Panda's layout is checked against a real file; other robots keep the raw
# `observation.sim_state` without an `observation.state`.
QPOS_LAYOUTS: dict[str, tuple[int, int]] = {"Panda": (7, 2)}


def import_robomimic(
    hdf5_path: str | Path,
    output: str | Path,
    *,
    fps: int | None = None,
    filter_key: str | None = None,
    task: str | None = None,
    include_sim_state: bool = True,
) -> Path:
    """Import a robosuite or robomimic HDF5 file into a new robota dataset.

    Args:
        hdf5_path: The HDF5 file; it is only read.
        output: New dataset folder to write.
        fps: Frame rate in Hz. When None it is the controller's `control_freq` from the
            environment metadata, or the step of the time column of `states`.
        filter_key: Name of a `mask/<filter_key>` list; only its demos are imported.
        task: Instruction stored with every frame; the environment name when None.
        include_sim_state: Store `states` as `observation.sim_state`.

    Returns:
        The output folder.

    Raises:
        DatasetError: The file has no `data` group or no demos, the filter key is unknown, the
            frame rate cannot be found, or the output folder exists.
        MissingExtraError: h5py is not installed.
    """
    try:
        import h5py
    except ImportError:
        raise MissingExtraError("h5py", "data") from None

    path = Path(hdf5_path)
    if not path.is_file():
        raise DatasetError(f"HDF5 file {path} not found; check the path")
    with h5py.File(path, "r") as file:
        data = _data_group(file, path)
        metadata = environment_metadata(data)
        demos = demo_names(file, path, filter_key)
        first = data[demos[0]]
        spec = robomimic_spec(
            first, metadata, fps=fps or _find_fps(first, metadata, path), include_sim_state=include_sim_state
        )
        instruction = task or metadata.get("env_name") or "demonstration"
        with DatasetWriter(output, spec, robot_type=spec.robot.name) as writer:
            for name in demos:
                _write_demo(data[name], name, spec, instruction, writer)
                writer.save_episode(_episode_metadata(data[name], name, metadata))
    logger.info("imported %d demos of %s into %s", len(demos), path, output)
    return Path(output)


def _data_group(file: Any, path: Path) -> Any:
    if "data" not in file:
        raise DatasetError(
            f"{path} has no 'data' group (top-level keys: {sorted(file.keys())}), so it is not a "
            "robosuite or robomimic demonstration file. Pass the demo.hdf5 that robosuite's "
            "DataCollectionWrapper or robomimic's conversion scripts write"
        )
    return file["data"]


def environment_metadata(data: Any) -> dict[str, Any]:
    """Read the environment description: robomimic's `env_args` or robosuite's `env_info`.

    Returns:
        `env_name`, `robots`, `controller` (a dict), `control_freq` (or None), and `source`,
        the attribute's JSON text as stored.
    """
    for attribute in ("env_args", "env_info"):
        if attribute in data.attrs:
            text = _text(data.attrs[attribute])
            parsed = json.loads(text)
            break
    else:
        text, parsed = "{}", {}
    kwargs = parsed.get("env_kwargs", parsed)  # robomimic nests the constructor arguments
    robots = kwargs.get("robots")
    robot = robots[0] if isinstance(robots, list) and robots else robots
    controller = kwargs.get("controller_configs") or {}
    env_name = parsed.get("env_name") or _text(data.attrs.get("env", "")) or None
    return {
        "env_name": env_name,
        "robot": str(robot) if robot else None,
        "controller": controller if isinstance(controller, Mapping) else {},
        "control_freq": kwargs.get("control_freq"),
        "source": text,
    }


def demo_names(file: Any, path: Path, filter_key: str | None = None) -> list[str]:
    """List the demos to import, in numeric order, or those a `mask/<filter_key>` names."""
    data = file["data"]
    if filter_key is not None:
        masks = file.get("mask")
        if masks is None or filter_key not in masks:
            known = sorted(masks.keys()) if masks is not None else []
            raise DatasetError(f"{path} has no filter key {filter_key!r}; filter keys in mask/: {known}")
        names = [_text(name) for name in masks[filter_key][()]]
        missing = [name for name in names if name not in data]
        if missing:
            raise DatasetError(f"{path}: mask/{filter_key} names demos that data/ lacks: {missing}")
    else:
        names = [name for name in data.keys() if name.startswith("demo")]
        names.sort(key=lambda name: [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)])
    if not names:
        raise DatasetError(f"{path} has no demos under data/; expected groups named demo_1, demo_2, ...")
    return names


def robomimic_spec(demo: Any, metadata: Mapping[str, Any], *, fps: int, include_sim_state: bool = True) -> Spec:
    """Build the spec of an imported file from its first demo and environment metadata."""
    observations = _observation_features(demo, metadata, include_sim_state)
    action_dim = int(demo["actions"].shape[1])
    if action_dim < 2:
        raise DatasetError(
            f"demo actions have {action_dim} element(s); robota needs the arm's commands and a "
            "gripper command, so append a constant gripper column before importing"
        )
    controller = metadata["controller"]
    axes = CONTROLLER_AXES.get(str(controller.get("type")))
    if axes is None or len(axes) != action_dim - 1:
        axes = element_names("axis", action_dim - 1)
    robot = generic_robot(
        str(metadata.get("robot") or "robot").lower(),
        action_dim - 1,
        joint_names=axes,
        lower_rad=_controller_range(controller, "input_min", action_dim - 1),
        upper_rad=_controller_range(controller, "input_max", action_dim - 1),
    )
    unit = f"{controller.get('type', 'controller')} command; gripper -1 open, 1 closed"
    return make_foreign_spec(
        robot,
        fps,
        observations,
        action_names=(*axes, "gripper"),
        action_unit=unit,
        action_description="arm controller command as recorded, then the gripper command",
    )


def _observation_features(demo: Any, metadata: Mapping[str, Any], include_sim_state: bool) -> list[FeatureSpec]:
    features: list[FeatureSpec] = []
    obs = demo.get("obs")
    if obs is not None:
        for key in sorted(obs.keys()):
            array = obs[key]
            is_rgb = array.ndim == 4 and array.dtype == np.uint8 and array.shape[-1] == 3
            if key.endswith(IMAGE_SUFFIX) and is_rgb:
                features.insert(0, camera_feature(key[: -len(IMAGE_SUFFIX)], array.shape[1], array.shape[2]))
            elif array.ndim in (1, 2) and np.issubdtype(array.dtype, np.number):
                size = 1 if array.ndim == 1 else int(array.shape[1])
                features.append(vector_feature(f"observation.{key}", element_names(key, size)))
            else:
                logger.warning(
                    "skipping obs/%s of shape %s and dtype %s: not RGB and not a vector", key, array.shape, array.dtype
                )
    if "states" in demo:
        layout = QPOS_LAYOUTS.get(str(metadata.get("robot")))
        if obs is None and layout is not None:
            arm = layout[0]
            features.append(
                vector_feature(
                    OBS_STATE,
                    (*element_names("joint", arm), "gripper"),
                    unit="rad; gripper m",
                    frame="joint",
                    description="arm joint positions, then the gap between the two fingers",
                )
            )
        if include_sim_state:
            size = int(demo["states"].shape[1])
            features.append(
                vector_feature(
                    SIM_STATE,
                    ("time", *element_names("mujoco_state", size - 1)),
                    description="MuJoCo state flattened by robosuite: time, qpos, qvel (float32 here)",
                )
            )
    return features


def _controller_range(controller: Mapping[str, Any], key: str, size: int) -> tuple[float, ...] | None:
    value = controller.get(key)
    if isinstance(value, int | float):
        return (float(value),) * size
    if isinstance(value, list) and len(value) == size:
        return tuple(float(v) for v in value)
    return None


def _find_fps(demo: Any, metadata: Mapping[str, Any], path: Path) -> int:
    if metadata.get("control_freq"):
        return int(round(float(metadata["control_freq"])))
    if "states" in demo and demo["states"].shape[0] > 1:
        time_s = demo["states"][:2, 0]
        step_s = float(time_s[1] - time_s[0])
        if step_s > 0:
            return int(round(1.0 / step_s))
    raise DatasetError(
        f"cannot find the control rate of {path}: no control_freq in its environment metadata "
        "and no time column in states. Pass fps=..."
    )


def _write_demo(demo: Any, name: str, spec: Spec, instruction: str, writer: DatasetWriter) -> None:
    """Add every step of one demo as a frame."""
    columns: dict[str, np.ndarray] = {ACTION: np.asarray(demo["actions"][()], dtype=np.float32)}
    length = len(columns[ACTION])
    obs = demo.get("obs")
    states = np.asarray(demo["states"][()]) if "states" in demo else None
    for key in spec.features:
        if key.startswith(OBS_IMAGES):
            columns[key] = obs[key[len(OBS_IMAGES) :] + IMAGE_SUFFIX][()]
        elif key == SIM_STATE:
            columns[key] = states.astype(np.float32)
        elif key == OBS_STATE and obs is None:
            columns[key] = _panda_state(states)
        elif key.startswith("observation."):
            columns[key] = np.asarray(obs[key[len("observation.") :]][()], dtype=np.float32).reshape(length, -1)
    for key, values in columns.items():
        if len(values) != length:
            raise DatasetError(f"demo {name}: {key!r} has {len(values)} steps but actions have {length}")
    for step in range(length):
        frame = {key: values[step] for key, values in columns.items()}
        frame[TASK] = instruction
        writer.add_frame(frame)


def _panda_state(states: np.ndarray) -> np.ndarray:
    """Return (T, 8): the 7 arm joints from qpos, then the finger gap, from (T, 1 + nq + nv)."""
    qpos = states[:, 1:]
    arm, fingers = QPOS_LAYOUTS["Panda"]
    gap = qpos[:, arm] - qpos[:, arm + 1]  # the two finger joints move in opposite directions
    return np.concatenate([qpos[:, :arm], gap[:, None]], axis=1).astype(np.float32)  # (T, arm + 1)


def _episode_metadata(demo: Any, name: str, metadata: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {"source_demo": name, "env_name": metadata.get("env_name") or ""}
    values["env_metadata"] = metadata["source"]
    values["model_file"] = _text(demo.attrs.get("model_file", ""))
    return values


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes | np.bytes_) else str(value)
