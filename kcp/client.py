"""Dialling: :func:`dial` opens one KCP session on its own UDP socket; :func:`run` runs a coroutine
on uvloop when it is there."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any, TypeVar

from kcp.batch import Address, open_udp_socket
from kcp.config import CompatWire, IOOptions, SecureWire, SessionConfig, Wire
from kcp.endpoint import Endpoint
from kcp.errors import KCPUsageError
from kcp.path import CompatPath
from kcp.session import KCPSession
from kcp.stats import Counters

__all__ = ["dial", "run"]

_T = TypeVar("_T")


def run(main: Coroutine[Any, Any, _T]) -> _T:
    """Run ``main`` on uvloop when it is installed, else on the default asyncio loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        return asyncio.run(main)
    result: _T = uvloop.run(main)
    return result


class _DialHost:
    """The host of a dialled session: its own endpoint, closed when the session ends."""

    __slots__ = ("endpoint",)

    passive = False

    def __init__(self, ep: Endpoint) -> None:
        self.endpoint = ep

    def conv_mismatch(self, session: KCPSession, datagram: bytes, packet: bytes, now: int) -> bool:
        return False  # the engine counted it (kcp_in_errors)

    def session_ended(self, session: KCPSession) -> None:
        self.endpoint.close()

    def rebind(self, remote: Address, local_addr: tuple[str, int] | None) -> Address:
        """A new socket for the session (the old one is closed, queued sends stay)."""
        ep = self.endpoint
        family = ep.sock.family
        if local_addr is None:
            local_addr = ("::" if family == socket.AF_INET6 else "0.0.0.0", 0)
        sock = open_udp_socket(local_addr[0], local_addr[1], family=family)
        try:
            sock.connect(remote)
        except BaseException:
            sock.close()
            raise
        ep.replace_socket(sock)
        return ep.local_address


def check_wire(wire: object) -> Wire:
    """``wire`` if it is a :class:`CompatWire` or :class:`SecureWire`, else :class:`KCPUsageError`."""
    if not isinstance(wire, CompatWire | SecureWire):
        raise KCPUsageError(f"wire must be a kcp.CompatWire or kcp.SecureWire, not {type(wire).__name__}")
    return wire


async def dial(
    host: str,
    port: int,
    wire: Wire = CompatWire(),  # noqa: B008 - frozen, validated once
    *,
    session: SessionConfig | None = None,
    io: IOOptions | None = None,
    conv: int | None = None,
    rng: Callable[[int], bytes] = os.urandom,
) -> KCPSession:
    """Open a KCP session to ``host:port`` on its own UDP socket.

    ``wire`` says what goes on the wire: a :class:`kcp.CompatWire` (the default, no crypt, no FEC)
    is kcp-go's ``DialWithOptions``: there is no handshake, so this returns as soon as the socket
    is ready; ``conv`` defaults to a random 32-bit id. A :class:`kcp.SecureWire` runs kcprpc's
    authenticated handshake first (docs/security.md): MTU, windows and FEC are proposed from
    ``session`` and the wire and negotiated; failures raise :class:`kcp.secure.HandshakeError`
    (``HandshakeTimeout``, ``HandshakeRefused`` with the server's reason). ``session`` tunes the
    session (:class:`kcp.SessionConfig`), ``io`` the socket (:class:`kcp.IOOptions`).
    """
    wire = check_wire(wire)
    cfg = session or SessionConfig()
    io = io or IOOptions()
    if isinstance(wire, SecureWire):
        if conv is not None:
            raise KCPUsageError("conv= is a compat-mode option (secure mode derives it from the handshake)")
        from kcp.secure_path import secure_config

        secure_cfg = secure_config(wire, cfg, server=False)
    else:
        packet_crypt = wire.packet_crypt()
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    if not infos:
        raise OSError(f"cannot resolve {host!r}")
    family, _, _, _, remote = infos[0]
    local_addr = io.local_address
    if local_addr is None:
        local_addr = ("::" if family == socket.AF_INET6 else "0.0.0.0", 0)
    sock = open_udp_socket(local_addr[0], local_addr[1], family=family)
    try:
        sock.connect(remote)
        remote = sock.getpeername()
        if conv is None:
            conv = int.from_bytes(rng(4), "little")
        ep = Endpoint(loop, sock, Counters(), mmsg=io.mmsg, gso=io.gso)
    except BaseException:
        sock.close()
        raise
    if isinstance(wire, SecureWire):
        return await _dial_secure(ep, remote, cfg, secure_cfg, rng)
    sess = KCPSession(
        _DialHost(ep), conv, remote, cfg, CompatPath(ep), crypt=packet_crypt, fec=wire.fec, rng=rng
    )
    feed = sess.feed
    ep.dispatch = lambda data, addr, now: feed(data, now)
    return sess


async def _dial_secure(
    ep: Endpoint, remote: Address, cfg: SessionConfig, secure_cfg: Any, rng: Callable[[int], bytes]
) -> KCPSession:
    """The handshake, then a session configured from the negotiated parameters."""
    from kcp.secure import Reason
    from kcp.secure_path import SecurePath, conv_of, secure_handshake

    try:
        conn = await secure_handshake(ep, remote, secure_cfg, rng)
    except BaseException:
        ep.close()
        raise
    p = conn.params
    try:
        cfg = replace(cfg, mtu=p.mtu, snd_wnd=p.snd_wnd, rcv_wnd=p.rcv_wnd)
        path = SecurePath(ep, conn, ep.timers.now_ms())
        session = KCPSession(
            _DialHost(ep), conv_of(conn), remote, cfg, path, fec=(p.data_shards, p.parity_shards), rng=rng
        )
    except BaseException as exc:  # no session for these parameters: tell the server, free everything
        if conn.is_open:
            why = f"client could not set up the session: {exc}"[:512]
            ep.tx.append((conn.close(Reason.INTERNAL, why, ep.timers.now_ms()), remote))
        ep.close()
        raise
    ep.dispatch = path.input
    path.on_timer(ep.timers.now_ms())  # the PING that confirms the keys to the server
    return session
