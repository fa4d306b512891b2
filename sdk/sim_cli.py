"""The `robota sim` command group: `robota sim serve` runs a twin as a ROS 2 robot.

`register(commands)` adds the group to the `robota` parser. The module imports no MuJoCo until
a command runs, so `robota --help` stays fast without the `sim` extra. It also runs on its own:
`python -m robota.sim_cli sim serve --task pick-place --mode lockstep --port 9090`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from robota import console

DEFAULT_PORT = 9090


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `sim` command group to a parser's subcommands.

    Args:
        commands: The object that `ArgumentParser.add_subparsers()` returned.
    """
    group = commands.add_parser("sim", help="serve twins to ROS 2 clients")
    sim_commands = group.add_subparsers(dest="sim_command", required=True, metavar="ACTION")

    p = sim_commands.add_parser(
        "serve",
        help="serve a twin as a ROS 2 robot over the rosbridge v2 websocket protocol",
        description="Serve a twin as a ROS 2 robot over the rosbridge v2 websocket protocol "
        "until SIGINT or SIGTERM. docs/sil.md lists its topics and services.",
    )
    p.add_argument("--task", default="pick-place", help="twin task name (default: pick-place)")
    p.add_argument("--robot", default="ur5e", help="arm of the twin: ur5e or panda (default: ur5e)")
    p.add_argument(
        "--domain-randomization",
        action="store_true",
        help="draw the task's domain randomisation every episode",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1, local clients only)",
    )
    p.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"TCP port to listen on, 0 for a free one (default: {DEFAULT_PORT}, rosbridge's)",
    )
    p.add_argument(
        "--mode",
        choices=("realtime", "lockstep"),
        default="realtime",
        help="realtime: step at the control rate; lockstep: step on each /robota/step call "
        "(default: realtime)",
    )
    p.add_argument(
        "--image-size", type=int, default=96, help="camera image height and width in pixels"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the first episode (default: 0)"
    )
    p.set_defaults(handler=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    from robota.sim.sil import SilConfig, run_server

    config = SilConfig(
        task=args.task,
        host=args.host,
        port=args.port,
        mode=args.mode,
        image_size=args.image_size,
        seed=args.seed,
        robot=args.robot,
        domain_randomization=args.domain_randomization,
    )
    run_server(config)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run `python -m robota.sim_cli [-v] sim serve ...` before `robota` itself has the group.

    Returns:
        The exit status: 0 after a signal stopped the server, 2 on invalid settings.
    """
    parser = argparse.ArgumentParser(prog="python -m robota.sim_cli", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    return console.run_command(args)


if __name__ == "__main__":
    sys.exit(main())
