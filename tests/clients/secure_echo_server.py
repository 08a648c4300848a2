"""A secure-mode KCP echo server for the TypeScript secure session tests
(clients/typescript/test/secure_session.test.ts).

Usage: python tests/clients/secure_echo_server.py [--psk HEX | --passphrase TEXT] [--static-key HEX]
       [--fec DATA PARITY] [--token TEXT] [--rekey-after-packets N] [--always-retry] [--port N]

Listens on 127.0.0.1 (a free port) with ``kcp.SecureWire``, prints the port on its first line,
then echoes every session's stream bytes and out-of-band datagrams back to it until it is killed.
A stream that carries ``b"close please"`` is answered by closing the session with code 7
(application) and the message ``"maintenance window"``; ``b"goaway please"`` by a transport GOAWAY.
With ``--token``, the server's authorize hook refuses every other token (``bad token: unknown``);
``--always-retry`` makes it ask every initiation for a cookie (a RETRY first).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import kcp
from kcp.secure import Reason, SecureConfig

sys.path.append(str(Path(__file__).resolve().parents[2]))  # the checkout, after an installed kcp
from tests.clients.echo_session import Outcome, echo


async def close_or_goaway(session: kcp.KCPSession, data: bytes) -> Outcome:
    """``b"close please"`` closes the session (application, "maintenance window"); ``b"goaway please"`` sends a GOAWAY."""
    if data == b"close please":
        await session.drain()
        session.close(Reason.APPLICATION, "maintenance window")
        return "stop"
    if data == b"goaway please":
        session.goaway(Reason.GOING_AWAY, "draining")
        session.write(b"goaway sent")
        return "next"
    return "echo"


async def serve(session: kcp.KCPSession) -> None:
    await echo(session, close_or_goaway)


async def main(args: argparse.Namespace) -> None:
    key: bytes | str | None = None
    if args.psk:
        key = bytes.fromhex(args.psk)
    elif args.passphrase:
        key = args.passphrase
    authorize: Any = None
    if args.token is not None:
        expected = args.token.encode()

        def authorize(token: bytes, _client: bytes | None, _addr: Any) -> str | None:
            return None if token == expected else "unknown"

    knobs: dict[str, Any] = {"always_retry": args.always_retry}
    if args.rekey_after_packets:
        knobs["rekey_after_packets"] = args.rekey_after_packets
    config = SecureConfig(**knobs)
    wire = kcp.SecureWire(
        key=key,
        static_private_key=bytes.fromhex(args.static_key) if args.static_key else None,
        fec=(args.fec[0], args.fec[1]),
        authorize=authorize,
        config=config,
    )
    listener = await kcp.listen("127.0.0.1", args.port, wire, on_accept=serve)
    async with listener:
        print(listener.address[1], flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--psk")
    p.add_argument("--passphrase")
    p.add_argument("--static-key")
    p.add_argument("--fec", nargs=2, type=int, default=[0, 0])
    p.add_argument("--token")
    p.add_argument("--rekey-after-packets", type=int, default=0)
    p.add_argument("--always-retry", action="store_true")
    p.add_argument("--port", type=int, default=0)
    kcp.run(main(p.parse_args()))
