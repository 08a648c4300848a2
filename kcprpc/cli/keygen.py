"""``kcprpc keygen [-o FILE]``: a new X25519 key pair for secure mode (``serve --static-key``,
clients' ``--server-key``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from kcprpc.cli.files import write_file


def cmd_keygen(args: argparse.Namespace) -> int:
    """``kcprpc keygen``: a new X25519 key pair for secure mode, as hex."""
    from kcp.secure import generate_keypair

    priv, pub = generate_keypair()
    if args.output:
        out = Path(args.output)
        write_file(out, priv.hex() + "\n", mode=0o600)
        print(f"private key written to {out} (serve --static-key @{out})", file=sys.stderr)
    else:
        print(f"private {priv.hex()}")
    print(f"public {pub.hex()}")
    return 0


def add_keygen_command(sub: Any) -> None:
    """Register ``keygen`` on an ``argparse`` sub-parsers object."""
    k = sub.add_parser(
        "keygen", help="a new X25519 key pair for secure mode (serve --static-key, --server-key)"
    )
    k.add_argument("-o", "--output", default=None, help="write the private key to this file (mode 600)")
    k.set_defaults(func=cmd_keygen, is_async=False)
