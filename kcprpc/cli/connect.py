"""The client commands' connection: ``HOST:PORT`` and the transport flags (built into a
:class:`~kcprpc.config.Transport` by :func:`kcprpc.cli.flags.build_transport`), ``--timeout`` and
``--connect-timeout``, ``-H`` metadata; and the frame every client command runs in.

While it connects, a command that got no answer for about a second says on stderr what it waits
for (``waiting for the secure handshake with HOST:PORT (2 s of 5 s)...``), once a second, then
either goes quiet (connected) or ends with the distinct connect error. stdout stays for results.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

from kcprpc.cli.args import parse_address
from kcprpc.cli.catalog import Catalog
from kcprpc.cli.flags import build_transport
from kcprpc.cli.runner import CliError
from kcprpc.client import Client, ClientConfig, connect
from kcprpc.errors import UsageError
from kcprpc.status import Status

DEFAULT_CONNECT_TIMEOUT = 5.0
WAIT_NOTICE_EVERY = 1.0
"""Seconds without an answer before (and between) the "waiting for ..." lines on stderr."""


def _positionals_after_address(args: argparse.Namespace) -> list[str]:
    """The positional arguments given after HOST:PORT, in order (for :func:`parse_address`'s hint)."""
    out = []
    for name in ("service", "target", "method", "request", "topic"):
        v = getattr(args, name, None)
        if isinstance(v, str):
            out.append(v)
    return [*out, *(getattr(args, "extra", None) or ())]


def connect_timeout(args: argparse.Namespace) -> float:
    """How long the command waits to connect: ``--connect-timeout`` (default 5 s), but never longer
    than ``--timeout``, which bounds every wait of a command."""
    ct = DEFAULT_CONNECT_TIMEOUT if args.connect_timeout is None else args.connect_timeout
    return min(float(ct), float(args.timeout))


def make_client(args: argparse.Namespace) -> Client:
    """The (not yet connected) client of a command: HOST:PORT, the transport flags, the timeouts, ``-H``."""
    after = _positionals_after_address(args)
    host, port = parse_address(args.address, after)
    extra = getattr(args, "extra", None)
    if extra:
        raise UsageError(f"unrecognized arguments: {' '.join(extra)}")
    cfg = ClientConfig(
        connect_timeout=connect_timeout(args), metadata=parse_metadata(getattr(args, "header", None))
    )
    return connect(host, port, transport=build_transport(args), config=cfg)


def waiting_for(args: argparse.Namespace) -> str:
    """What a connecting command waits for, in words: the secure handshake, or (compat mode, which
    has no handshake) the server's first answer."""
    return "the secure handshake" if build_transport(args).mode == "secure" else "an answer (compat wire)"


async def _connected(client: Client, args: argparse.Namespace) -> None:
    address, timeout, what = args.address, connect_timeout(args), waiting_for(args)
    connecting = asyncio.ensure_future(client.connect())
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    try:
        while not (await asyncio.wait({connecting}, timeout=WAIT_NOTICE_EVERY))[0]:
            waited = loop.time() - t0
            if waited >= timeout - 0.1:
                continue  # the connect's own error comes next
            print(
                f"waiting for {what} with {address} ({waited:.0f} s of {timeout:g} s)...",
                file=sys.stderr,
                flush=True,
            )
        connecting.result()
    except TimeoutError:
        raise CliError(
            Status.UNAVAILABLE, f"no answer from {address} (wrong address, or transport flags?)"
        ) from None
    except (ConnectionError, OSError) as e:
        raise CliError(Status.UNAVAILABLE, f"cannot connect to {address}: {e}") from None
    finally:
        if not connecting.done():  # the command was interrupted (Ctrl-C)
            connecting.cancel()
            with contextlib.suppress(BaseException):
                await connecting


def parse_metadata(headers: Sequence[str] | None) -> dict[str, Any]:
    """``-H key=value`` flags as call metadata."""
    md: dict[str, Any] = {}
    for h in headers or ():
        k, sep, v = h.partition("=")
        if not sep or not k:
            raise UsageError(f"-H {h!r}: expected key=value")
        md[k.strip()] = v
    return md


async def with_client(args: argparse.Namespace, body: Callable[[Client, Catalog], Any]) -> int:
    """Connect, run ``body(client, catalog)`` and close: the frame of every client command."""
    client = make_client(args)
    catalog = Catalog(client, getattr(args, "idl", None) or (), args.timeout)  # bad --idl files fail first
    await _connected(client, args)
    try:
        return int(await body(client, catalog))
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), 2.0)
