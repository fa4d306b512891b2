"""The `robota keys` command group: Ed25519 key pairs for signing bundles.

`register(commands)` adds the group to the `robota` parser:

    robota keys new --private-key FILE --public-key FILE

`robota export --sign FILE` signs a bundle with the private key, and `robota-edge run
--trusted-key FILE` on the robot accepts only bundles signed by the matching public key. The
key code is `robota.edge.signing`, the same that `robota-edge keygen` runs; it imports the
cryptography package only when the command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _cmd_new(args: argparse.Namespace) -> int:
    from robota.edge.signing import generate_key_pair

    key_id = generate_key_pair(args.private_key, args.public_key)
    print(
        f"wrote private key {args.private_key} (mode 0600) and public key {args.public_key}; "
        f"key id {key_id}. Keep the private key off the robot; copy the public key to it for "
        "`robota-edge run --trusted-key`"
    )
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `keys` command group to a parser's subcommands.

    Args:
        commands: The object that `ArgumentParser.add_subparsers()` returned.
    """
    group = commands.add_parser("keys", help="create key pairs for signing bundles")
    key_commands = group.add_subparsers(dest="keys_command", required=True, metavar="ACTION")

    p = key_commands.add_parser(
        "new",
        help="write a new Ed25519 key pair; existing files are never replaced",
        description="Write a new Ed25519 key pair as PEM files: the private key (PKCS#8, "
        "mode 0600) for `robota export --sign` and the public key for `robota-edge run "
        "--trusted-key`. Existing files are never replaced.",
    )
    p.add_argument("--private-key", type=Path, required=True, help="private key file to create")
    p.add_argument("--public-key", type=Path, required=True, help="public key file to create")
    p.set_defaults(handler=_cmd_new)
