"""The target server of ``bench/abuse.py`` (run as ``python -m bench._abuse_server``).

``--mode secure|compat`` on 127.0.0.1 (port 0: it picks one), the passphrase of
:data:`bench._abuse_common.KEY`, default :class:`kcprpc.ServerConfig`. It prints one JSON line
``{"port": ..., "pid": ...}`` when it serves, then answers each line on stdin: ``stats`` prints one
JSON line of counters (the server's, the listener's and the process's RSS in KiB); ``quit`` stops it.
Logging goes to stderr (``abuse.py`` counts tracebacks there).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import json
import logging
import os
import sys
from typing import Any

import kcp
import kcprpc
from bench._abuse_common import (
    COMPAT_CRYPT,
    KEY,
    PRESENCE,
    PRIVATE_ROOM,
    PUBLIC_ROOM,
    PUBLIC_TOPIC,
    SECRET_TOPIC,
    STATE_NAME,
    AbuseService,
    News,
    refuse_secret_topics,
    target_transport,
)


def malloc_trim() -> None:
    """glibc's ``malloc_trim(0)``: free pages back to the OS (a no-op without it)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)


def rss_kib() -> int:
    """This process's resident set size in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def counters(server: kcprpc.Server) -> dict[str, Any]:
    """Every counter the server exposes, flat."""
    out: dict[str, Any] = {
        "rss_kib": rss_kib(),
        "sessions": len(server.sessions),
        "detached": server.detached_sessions,
    }
    out.update({f"server.{k}": v for k, v in server.stats.items()})
    listener = getattr(server, "_listener", None)
    stats = getattr(listener, "stats", None)
    if stats is not None:
        out.update({f"listener.{k}": v for k, v in stats().items()})
    # secure connections' own counters (DATA_PART pieces dropped, say), live and ended
    out.update({f"snmp.{k}": v for k, v in kcp.snmp().items() if k.startswith("secure_")})
    return out


async def publisher(server: kcprpc.Server) -> None:
    text = "x" * 512
    while True:
        await asyncio.sleep(0.01)
        ev = News(text=text)
        for room in (PUBLIC_ROOM, PRIVATE_ROOM):
            await server.push.to_room(room, ev)
        for topic in (PUBLIC_TOPIC, SECRET_TOPIC):
            await server.push.publish(topic, ev)


def state_sync() -> tuple[Any, Any]:
    """A StateSync (groups) of 200 entities and the StateService that takes its acks."""
    from bench._abuse_common import StateWorld
    from kcprpc.state import StateService, StateSync

    sync = StateSync(StateWorld, STATE_NAME, groups=16)
    return sync, StateService([sync])


async def state_ticker(sync: Any) -> None:
    """20 Hz: a tenth of the 200 entities move, the state goes to every session."""
    from bench._abuse_common import StateUnit, StateWorld

    world = StateWorld(units={i: StateUnit(x=float(i)) for i in range(200)})
    tick = 0
    while True:
        await asyncio.sleep(0.05)
        tick += 1
        world.tick = tick
        for i in range(tick % 10, 200, 10):
            world.units[i].x += 1.0
        sync.send(world)


def server_config(args: argparse.Namespace) -> kcprpc.ServerConfig:
    """The target's ServerConfig: the defaults, changed only as the attack's server_args say."""
    changes: dict[str, Any] = {}
    if args.presence:
        changes["presence"] = PRESENCE
    if args.max_connections is not None:
        changes["max_connections"] = args.max_connections
    if args.per_address is not None:
        changes["max_connections_per_address"] = None if args.per_address == "none" else int(args.per_address)
    return kcprpc.ServerConfig(**changes)


async def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mode", choices=("secure", "compat"), default="secure")
    ap.add_argument("--datashard", type=int, default=0)
    ap.add_argument("--parityshard", type=int, default=0)
    ap.add_argument(
        "--presence", action="store_true", help="presence on presence.* topics (bench/_abuse_presence.py)"
    )
    ap.add_argument(
        "--state",
        action="store_true",
        help="a state sync with groups to every session (bench/_abuse_state.py)",
    )
    ap.add_argument("--max-connections", type=int, default=None, help="ServerConfig.max_connections")
    ap.add_argument(
        "--per-address", default=None, help="ServerConfig.max_connections_per_address ('none': no limit)"
    )
    ap.add_argument(
        "--datagram-rate",
        type=float,
        default=None,
        help="secure mode: SecureConfig.datagram_rate (0: no limit; default: the library's)",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    fec = (args.datashard, args.parityshard) if args.datashard else None
    sync, states = state_sync() if args.state else (None, None)
    server = kcprpc.Server(
        [AbuseService(), *([states] if states is not None else [])],
        "127.0.0.1",
        0,
        transport=target_transport(args.mode, KEY, COMPAT_CRYPT, fec, datagram_rate=args.datagram_rate),
        interceptors=[refuse_secret_topics],
        config=server_config(args),
        on_connect=(lambda s: sync.add_client(s)) if sync is not None else None,
        on_disconnect=(lambda s: sync.remove_client(s)) if sync is not None else None,
    )
    _host, port = await server.start()
    pub = asyncio.ensure_future(publisher(server))
    ticker = asyncio.ensure_future(state_ticker(sync)) if sync is not None else None
    print(json.dumps({"port": port, "pid": os.getpid()}), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().strip()
        if line == "stats":
            out = counters(server)
            if sync is not None and states is not None:
                out.update({f"state.{k}": v for k, v in sync.stats.items()})
                out["state.acks_unknown"] = states.acks_unknown
            print(json.dumps(out), flush=True)
        elif line == "trim":  # what live objects hold: collect, and hand free pages back to the OS
            gc.collect()
            malloc_trim()
            print(json.dumps(counters(server)), flush=True)
        elif line in ("quit", ""):
            break
    pub.cancel()
    if ticker is not None:
        ticker.cancel()
    await server.shutdown(grace=0.5)


if __name__ == "__main__":
    import kcp

    kcp.run(main())
