"""The ``kcprpc`` command.

::

    kcprpc serve module:app [--host H] [--port P] [--grace S] [--log-level L] [transport flags]
    kcprpc list | describe | call | watch | ping | stats  HOST:PORT ... [transport flags]
    kcprpc keygen [-o FILE]
    kcprpc web-cert --out DIR [--days N]
    kcprpc idl export | check | gen-python | gen-ts | validate ...

Every command that talks to a server, and ``serve`` itself, takes the same transport flags, named
as kcptun names them (``--crypt``, ``--key``, ``--datashard``, ``--parityshard``, ``--mode``,
``--mtu`` ...), plus ``--wire secure|compat`` (the wire mode: secure by default, compat implied by
``--crypt``); :func:`kcprpc.cli.flags.build_transport` turns them into a
:class:`~kcprpc.config.Transport`.

The package, one module per concern: :mod:`~kcprpc.cli.flags` (the transport flags),
:mod:`~kcprpc.cli.serve`, :mod:`~kcprpc.cli.commands` and :mod:`~kcprpc.cli.call` (the
grpcurl-like client commands) with :mod:`~kcprpc.cli.connect`, :mod:`~kcprpc.cli.catalog`,
:mod:`~kcprpc.cli.schema` and :mod:`~kcprpc.cli.render`; :mod:`~kcprpc.cli.keygen`, :mod:`~kcprpc.cli.webcert`,
:mod:`~kcprpc.cli.idl`; :mod:`~kcprpc.cli.args`, :mod:`~kcprpc.cli.files` and
:mod:`~kcprpc.cli.runner` (parsing, files, exit codes and the event loop).

Exit codes: 0 on success; ``64 + status code`` when a call (or the server) ends with an RPC status
(``INVALID_ARGUMENT`` 67, ``NOT_FOUND`` 69, ``UNAVAILABLE`` 78 ...), with ``STATUS_NAME: message`` on
stderr; 2 for a usage error (``kcprpc: message``); 1 when ``idl check`` finds a breaking change;
70 for an unexpected error (a bug, in one line too: ``KCPRPC_TRACEBACK=1`` shows the traceback).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import kcprpc
from kcprpc.buildinfo import build_name
from kcprpc.cli.args import ArgumentParser
from kcprpc.cli.commands import add_client_commands
from kcprpc.cli.idl import add_idl_commands
from kcprpc.cli.keygen import add_keygen_command
from kcprpc.cli.runner import run_command
from kcprpc.cli.serve import add_serve_command
from kcprpc.cli.webcert import add_web_cert_command

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``kcprpc`` argument parser (every sub-command sets ``func``; see
    :func:`kcprpc.cli.runner.run_command`)."""
    ap = ArgumentParser(prog="kcprpc", description="Typed RPC over KCP.")
    ap.add_argument("--version", action="version", version=f"kcprpc {kcprpc.__version__} ({build_name()})")
    sub = ap.add_subparsers(dest="cmd", required=True)
    add_serve_command(sub)
    add_client_commands(sub)  # list, describe, call, watch, ping, stats
    add_keygen_command(sub)
    add_idl_commands(sub)  # idl export, check, gen-python, gen-ts, validate (docs/idl.md)
    add_web_cert_command(sub)  # a development certificate for WebTransport
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kcprpc`` command."""
    return run_command(build_parser().parse_args(argv))
