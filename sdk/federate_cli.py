"""The `robota federate` command group: `coordinator` and `site`.

`register(commands)` adds the group to the `robota` parser. Flower and torch are imported only
when a command runs. It also runs on its own:
`python -m robota.federate_cli federate coordinator --port 9092 --rounds 5`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from robota import console
from robota.errors import RobotaError

logger = logging.getLogger(__name__)

DEFAULT_PORT = 9092


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `federate` command group to a parser's subcommands.

    Args:
        commands: The object that `ArgumentParser.add_subparsers()` returned.
    """
    from robota.federated_strategy import AGGREGATIONS, COMPRESSIONS, STRATEGIES

    group = commands.add_parser("federate", help="train one policy across sites whose data stays local")
    actions = group.add_subparsers(dest="federate_command", required=True, metavar="ACTION")

    p = actions.add_parser(
        "coordinator",
        help="start the Flower SuperLink and run the federated rounds",
        description="Start a Flower SuperLink, wait for the sites, run the rounds and save the "
        "global model as a robota checkpoint in OUTPUT/global after every round.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address the SuperLink listens on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"SuperLink port (default: {DEFAULT_PORT})")
    p.add_argument("--output", type=Path, default=Path("federated-run"), help="run folder (default: federated-run)")
    p.add_argument("--rounds", type=int, default=3, help="federated rounds (default: 3)")
    p.add_argument("--local-steps", type=int, default=20, help="optimiser steps per site and round (default: 20)")
    p.add_argument("--strategy", choices=STRATEGIES, default="fedavg", help="aggregation strategy (default: fedavg)")
    p.add_argument("--min-sites", type=int, default=2, help="sites to wait for before round 1 (default: 2)")
    p.add_argument("--quorum", type=int, default=0, help="accepted updates a round needs; 0 means --min-sites")
    p.add_argument("--wait-timeout-s", type=float, default=120.0, help="deadline for the sites to connect, seconds")
    p.add_argument("--round-timeout-s", type=float, default=600.0, help="deadline of each round, seconds")
    p.add_argument("--compression", choices=COMPRESSIONS, default="none", help="site update encoding")
    p.add_argument("--aggregation", choices=AGGREGATIONS, default="mean", help="how updates combine")
    p.add_argument("--trim-fraction", type=float, default=0.2, help="fraction cut at each end by trimmed-mean")
    p.add_argument(
        "--max-norm-ratio", type=float, default=10.0,
        help="reject updates above this multiple of the round's median norm; 0 turns it off",
    )
    p.add_argument(
        "--allow-nonfinite", action="store_true",
        help="accept updates with NaN or Inf (only for a control run; the global model turns NaN)",
    )
    p.add_argument("--outer-lr", type=float, default=None, help="outer learning rate (default: 1.0, diloco 0.7)")
    p.add_argument("--outer-momentum", type=float, default=None, help="DiLoCo Nesterov momentum (default: 0.9)")
    p.add_argument("--proximal-mu", type=float, default=0.01, help="FedProx proximal coefficient")
    p.add_argument("--policy", default="act", help="registered policy name (default: act)")
    p.add_argument(
        "--policy-override", action="append", default=[], metavar="KEY=VALUE",
        help="policy config field to change, for example dim_model=64; repeatable",
    )
    p.add_argument("--chunk-size", type=int, default=10, help="action chunk length (default: 10)")
    p.add_argument("--batch-size", type=int, default=16, help="site batch size (default: 16)")
    p.add_argument("--lr", type=float, default=1e-4, help="site AdamW learning rate (default: 1e-4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights (default: 0)")
    p.add_argument("--workdir", type=Path, default=None, help="folder for Flower's home and logs")
    p.add_argument("--ssl-ca-certfile", type=Path, default=None, help="CA certificate (PEM); turns TLS on")
    p.add_argument("--ssl-certfile", type=Path, default=None, help="SuperLink certificate (PEM)")
    p.add_argument("--ssl-keyfile", type=Path, default=None, help="SuperLink private key (PEM)")
    p.add_argument(
        "--enable-supernode-auth", action="store_true",
        help="admit only sites whose public key is given with --site-public-key (needs TLS)",
    )
    p.add_argument(
        "--site-public-key", type=Path, action="append", default=[], metavar="FILE",
        help="OpenSSH public key of a site to admit; repeatable",
    )
    p.set_defaults(handler=_cmd_coordinator)

    p = actions.add_parser(
        "site",
        help="connect this site's data to a coordinator as a Flower SuperNode",
        description="Start a Flower SuperNode whose node config contains the dataset path. The path "
        "and the frames never leave this machine; only weight updates, the feature spec, "
        "dataset statistics and the sample count are sent.",
    )
    p.add_argument("--data", type=Path, required=True, help="dataset folder of this site")
    p.add_argument("--coordinator", required=True, metavar="HOST:PORT", help="address of the SuperLink")
    p.add_argument(
        "--connect-timeout-s", type=float, default=300.0,
        help="stop if the coordinator cannot be reached for this long, seconds (default: 300)",
    )
    p.add_argument("--workdir", type=Path, default=None, help="folder for Flower's home and logs")
    p.add_argument(
        "--root-certificates", type=Path, default=None,
        help="CA certificate (PEM) to verify the coordinator with; turns TLS on",
    )
    p.add_argument(
        "--auth-private-key", type=Path, default=None,
        help="this site's OpenSSH private key, for a coordinator with --enable-supernode-auth",
    )
    p.set_defaults(handler=_cmd_site)


def _cmd_coordinator(args: argparse.Namespace) -> int:
    from robota.federated import FederationConfig
    from robota.federated_processes import FlowerProcesses

    # DiLoCo's outer step defaults to the DiLoCo paper's values, the others to plain averaging.
    diloco = args.strategy == "diloco"
    outer_lr = args.outer_lr
    if outer_lr is None:
        outer_lr = 0.7 if diloco else 1.0
    outer_momentum = args.outer_momentum
    if outer_momentum is None:
        outer_momentum = 0.9 if diloco else 0.0
    config = FederationConfig(
        output=args.output.resolve(),
        rounds=args.rounds,
        local_steps=args.local_steps,
        strategy=args.strategy,
        min_sites=args.min_sites,
        quorum=args.quorum,
        wait_timeout_s=args.wait_timeout_s,
        round_timeout_s=args.round_timeout_s,
        compression=args.compression,
        aggregation=args.aggregation,
        trim_fraction=args.trim_fraction,
        reject_nonfinite=not args.allow_nonfinite,
        max_norm_ratio=args.max_norm_ratio,
        outer_lr=outer_lr,
        outer_momentum=outer_momentum,
        proximal_mu=args.proximal_mu,
        policy=args.policy,
        policy_overrides=_parse_overrides(args.policy_override),
        chunk_size=args.chunk_size,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
    )
    if args.host not in ("127.0.0.1", "localhost", "::1") and args.ssl_ca_certfile is None:
        logger.warning(
            "the SuperLink listens on %s without TLS; use it only inside a trusted network",
            args.host,
        )
    # The run's own deadlines end it first; this one only guards against a stuck process.
    run_timeout_s = config.wait_timeout_s + (config.rounds + 1) * config.round_timeout_s + 120
    tls = _tls_files(args)
    with (
        _workdir(args.workdir) as folder,
        FlowerProcesses(folder, host=args.host, tls=tls, supernode_auth=args.enable_supernode_auth) as processes,
    ):
        processes.start_superlink(port=args.port)
        for public_key in args.site_public_key:
            processes.register_site(public_key)
        logger.info("SuperLink listening on %s:%d; waiting for %d site(s)", args.host, args.port, config.min_sites)
        processes.run_app(config, run_timeout_s)
    logger.info("federated run finished; global checkpoint %s", config.output / "global")
    return 0


def _cmd_site(args: argparse.Namespace) -> int:
    from robota.federated_processes import FlowerProcesses

    if not args.data.is_dir():
        raise RobotaError(f"site dataset folder {args.data} not found; pass the folder robota record wrote")
    with _workdir(args.workdir) as folder, FlowerProcesses(folder) as processes:
        supernode = processes.start_site(
            "supernode", args.data, args.coordinator,
            extra_args=["--max-wait-time", str(args.connect_timeout_s)],
            ca_cert=args.root_certificates,
            private_key=args.auth_private_key,
        )
        logger.info("site started (SuperNode pid %d); logs in %s", supernode.pid, folder)
        code = supernode.wait()
    if code != 0:
        raise RobotaError(f"the SuperNode exited with code {code}; see {folder}/supernode.log")
    return 0


def _tls_files(args: argparse.Namespace):
    from robota.federated_tls import TlsFiles

    paths = (args.ssl_ca_certfile, args.ssl_certfile, args.ssl_keyfile)
    if all(path is None for path in paths):
        return None
    if any(path is None for path in paths):
        raise RobotaError(
            "TLS needs all of --ssl-ca-certfile, --ssl-certfile and --ssl-keyfile; "
            f"got {[str(path) for path in paths]}"
        )
    return TlsFiles(*paths)


def _parse_overrides(items: Sequence[str]) -> dict[str, object]:
    import json

    overrides: dict[str, object] = {}
    for item in items:
        key, separator, text = item.partition("=")
        if not separator:
            raise RobotaError(f"--policy-override {item!r} is not KEY=VALUE; write for example dim_model=64")
        try:
            overrides[key] = json.loads(text)
        except json.JSONDecodeError:
            overrides[key] = text
    return overrides


class _workdir:
    """The given folder, or a temporary one removed on exit."""

    def __init__(self, folder: Path | None):
        self.folder = folder
        self.scratch: tempfile.TemporaryDirectory | None = None

    def __enter__(self) -> Path:
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            return self.folder
        self.scratch = tempfile.TemporaryDirectory(prefix="robota-federate-")
        return Path(self.scratch.name)

    def __exit__(self, *exc_info: object) -> None:
        if self.scratch is not None:
            self.scratch.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    """Run `python -m robota.federate_cli [-v] federate ...` before `robota` itself has the group.

    Returns:
        The exit status: 0 on success, 2 on invalid settings or a failed run.
    """
    parser = argparse.ArgumentParser(prog="python -m robota.federate_cli", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    return console.run_command(args)


if __name__ == "__main__":
    sys.exit(main())
