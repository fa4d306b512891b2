"""`robota dataset import ...` and `robota dataset inspect-bag`: the importers on the command line.

`register(dataset_subparsers)` adds the commands to the `robota dataset` group:

    robota dataset import robomimic HDF5 DST [--fps HZ] [--filter-key NAME] [--task TEXT]
    robota dataset import rosbag BAG [BAG ...] DST --mapping FILE
    robota dataset import lerobot SRC DST [--image-size HEIGHT WIDTH] [--episodes INDEX ...]
    robota dataset import edge-log LOG DST
    robota dataset inspect-bag BAG

Each handler imports its module when it runs, prints one summary and returns the exit status.
Errors that robota raises propagate, so the CLI's main prints them as one line with status 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _cmd_import_robomimic(args: argparse.Namespace) -> int:
    from robota.datasets import open_dataset
    from robota.datasets.robomimic import import_robomimic

    output = import_robomimic(
        args.hdf5, args.output, fps=args.fps, filter_key=args.filter_key, task=args.task,
        include_sim_state=not args.no_sim_state,
    )
    dataset = open_dataset(output)
    print(
        f"wrote {dataset.num_episodes} episodes, {dataset.num_frames} frames at {dataset.fps} Hz "
        f"to {output}; features: {', '.join(dataset.spec.features)}"
    )
    return 0


def _cmd_import_rosbag(args: argparse.Namespace) -> int:
    from robota.datasets.rosbag import import_rosbag

    report = import_rosbag(args.bags, args.output, args.mapping)
    print(report.format())
    return 0


def _cmd_import_lerobot(args: argparse.Namespace) -> int:
    from robota.datasets import open_dataset
    from robota.datasets.lerobot import import_lerobot

    output = import_lerobot(
        args.source, args.output, image_size=tuple(args.image_size) if args.image_size else None,
        robot_name=args.robot, joint_unit=args.unit, episodes=args.episodes,
    )
    dataset = open_dataset(output)
    print(f"wrote {dataset.num_episodes} episodes, {dataset.num_frames} frames to {output} with a robota spec")
    return 0


def _cmd_import_edge_log(args: argparse.Namespace) -> int:
    from robota.datasets import open_dataset
    from robota.datasets.edge_log import import_edge_log

    output = import_edge_log(args.log, args.output)
    dataset = open_dataset(output)
    print(
        f"wrote {dataset.num_episodes} episodes, {dataset.num_frames} frames at {dataset.fps} Hz "
        f"to {output}; action is the command sent after the safety filter"
    )
    return 0


def _cmd_inspect_bag(args: argparse.Namespace) -> int:
    from robota.datasets.rosbag import inspect_bag

    print(inspect_bag(args.bag).format())
    return 0


def register(dataset_subparsers: argparse._SubParsersAction) -> None:
    """Add `import robomimic|rosbag|lerobot|edge-log` and `inspect-bag` to the `robota dataset` group."""
    p = dataset_subparsers.add_parser("import", help="convert foreign demonstrations into a robota dataset")
    sources = p.add_subparsers(dest="import_source", required=True, metavar="SOURCE")

    q = sources.add_parser("robomimic", help="robosuite or robomimic HDF5 demonstrations")
    q.add_argument("hdf5", type=Path, help="demo.hdf5 file (robosuite raw or robomimic layout)")
    q.add_argument("output", type=Path, help="new dataset folder to write")
    q.add_argument("--fps", type=int, help="frame rate in Hz (default: the controller's control_freq)")
    q.add_argument("--filter-key", help="import only the demos listed in mask/FILTER_KEY")
    q.add_argument("--task", help="instruction stored with every frame (default: the environment name)")
    q.add_argument("--no-sim-state", action="store_true", help="leave out the MuJoCo states")
    q.set_defaults(handler=_cmd_import_robomimic)

    q = sources.add_parser("rosbag", help="ROS 2 bags (sqlite3 or mcap), one episode per bag")
    q.add_argument("bags", type=Path, nargs="+", help="bag folders (sqlite3 or mcap)")
    q.add_argument("output", type=Path, help="new dataset folder to write")
    q.add_argument("--mapping", type=Path, required=True, help="TOML or YAML file mapping topics to features")
    q.set_defaults(handler=_cmd_import_rosbag)

    q = sources.add_parser("lerobot", help="a LeRobot v3.0 dataset without a robota spec")
    q.add_argument("source", type=Path, help="LeRobot v3.0 dataset folder (only read)")
    q.add_argument("output", type=Path, help="new dataset folder to write")
    q.add_argument(
        "--image-size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"), help="resize cameras to this size in pixels"
    )
    q.add_argument("--robot", help="robot name for the spec (default: the source's robot_type)")
    q.add_argument("--unit", help="unit of the state and action elements, for example rad")
    q.add_argument("--episodes", type=int, nargs="+", metavar="INDEX", help="source episodes to copy (default: all)")
    q.set_defaults(handler=_cmd_import_lerobot)

    q = sources.add_parser("edge-log", help="the log of `robota-edge run --record`, one episode per log episode")
    q.add_argument("log", type=Path, help="log folder with episode_NNNNNN folders (only read)")
    q.add_argument("output", type=Path, help="new dataset folder to write")
    q.set_defaults(handler=_cmd_import_edge_log)

    p = dataset_subparsers.add_parser("inspect-bag", help="list a ROS 2 bag's topics, types and counts")
    p.add_argument("bag", type=Path, help="bag folder (sqlite3 or mcap)")
    p.set_defaults(handler=_cmd_inspect_bag)
