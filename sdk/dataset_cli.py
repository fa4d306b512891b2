"""The `robota dataset validate`, `stats` and `convert` commands.

`register(dataset_commands)` adds them to the subparsers of `robota dataset`. Each handler takes
the parsed arguments, prints its result and returns the exit status. Dataset modules load when a
command runs, so `robota --help` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from robota.errors import DatasetError


def register(dataset_commands: argparse._SubParsersAction) -> None:
    """Add `validate`, `stats` and `convert` to the subparsers of `robota dataset`."""
    q = dataset_commands.add_parser("validate", help="check a dataset folder and list its problems")
    q.add_argument("dataset", type=Path, help="dataset folder (LeRobot v3.0 or v2.1 layout)")
    q.set_defaults(handler=cmd_validate)

    q = dataset_commands.add_parser("stats", help="recompute a dataset's statistics from its frames")
    q.add_argument("dataset", type=Path, help="dataset folder (LeRobot v3.0 or v2.1 layout)")
    q.add_argument(
        "--output", type=Path, help="JSON file to write, in stats.json's form; outside the dataset folder"
    )
    q.add_argument(
        "--no-images", action="store_true", help="skip image statistics, which decode every video frame"
    )
    q.set_defaults(handler=cmd_stats)

    q = dataset_commands.add_parser("convert", help="convert a LeRobot v2.1 dataset to v3.0")
    q.add_argument("source", type=Path, help="LeRobot v2.1 dataset folder, only read")
    q.add_argument("destination", type=Path, help="new v3.0 dataset folder to write")
    q.set_defaults(handler=cmd_convert)


def cmd_validate(args: argparse.Namespace) -> int:
    """Print each problem of a dataset on one line; return 1 if there is any, else 0."""
    from robota.datasets.validate import validate

    problems = validate(args.dataset)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problems found in {args.dataset}")
        return 1
    print(f"no problems found in {args.dataset}")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    """Print recomputed statistics and write them to --output if given."""
    import numpy as np

    from robota.datasets.layout import write_json_atomic
    from robota.datasets.recompute import compute_stats
    from robota.datasets.stats import to_json

    if args.output is not None and args.output.resolve().is_relative_to(args.dataset.resolve()):
        raise DatasetError(
            f"--output {args.output} is inside the dataset folder {args.dataset}; robota never "
            "writes beside a dataset it reads, so choose a file outside it"
        )
    stats = compute_stats(args.dataset, images=not args.no_images)
    for key, feature in stats.items():
        print(f"{key} ({int(feature['count'][0])} frames)")
        for name, value in feature.items():
            if name != "count":
                print(f"  {name:<5} {np.array2string(np.ravel(value), precision=5, max_line_width=120)}")
    if args.output is not None:
        write_json_atomic(args.output, to_json(stats))
        print(f"wrote {args.output}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    """Convert a v2.1 dataset to v3.0 and print the result's size."""
    from robota.datasets import convert_v21_to_v30, open_dataset

    destination = convert_v21_to_v30(args.source, args.destination)
    reader = open_dataset(destination)
    print(
        f"wrote {destination} (LeRobot v3.0): {reader.num_episodes} episodes, "
        f"{reader.num_frames} frames"
    )
    return 0
