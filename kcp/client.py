"""Dialling: :func:`dial` opens one KCP session on its own UDP socket; :func:`run` runs a coroutine
on uvloop when it is there."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any, TypeVar, cast

from kcp.batch import Address, open_udp_socket, unresolved
from kcp.config import CompatWire, IOOptions, SecureWire, SessionConfig, Wire
from kcp.endpoint import Endpoint
from kcp.errors import KCPUsageError
from kcp.fieldcheck import check_port
from kcp.path import CompatPath
from kcp.session import KCPSession
from kcp.stats import SNMP, Counters
from kcp.wirehint import (
    HINT_LEN,
    T_HINT,
    HintCode,
    SentLog,
    WireMismatch,
    compat_conv,
    hint_message,
    parse_hint,
)

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
    is ready; ``conv`` defaults to a random 32-bit id (:func:`kcp.wirehint.compat_conv`). If a
    secure kcprpc server answers its first datagrams with a wire hint (it speaks the secure wire),
    the session ends at once with that reason as ``close_reason``, and its event callbacks get a
    :class:`kcp.wirehint.WireMismatch` first. A :class:`kcp.SecureWire` runs kcprpc's authenticated handshake first
    (docs/security.md): MTU, windows and FEC are proposed from ``session`` and the wire and
    negotiated; failures raise a :class:`kcp.secure.HandshakeError` that names ``HOST:PORT`` and
    what to check (``HandshakeUnreachable``, ``HandshakeNoAnswer``, ``HandshakeKeyMismatch``,
    ``HandshakeWireMismatch``, ``HandshakeRefused`` with the server's reason, ``HandshakeTimeout``).
    ``session`` tunes the session (:class:`kcp.SessionConfig`), ``io`` the socket
    (:class:`kcp.IOOptions`).
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
    check_port(port, KCPUsageError)
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as e:
        raise unresolved(host, e) from None
    if not infos:
        raise unresolved(host)
    family, _, _, _, remote = infos[0]
    local_addr = io.local_address
    if local_addr is None:
        local_addr = ("::" if family == socket.AF_INET6 else "0.0.0.0", 0)
    sock = open_udp_socket(local_addr[0], local_addr[1], family=family)
    try:
        sock.connect(remote)
        remote = sock.getpeername()
        if conv is None:
            conv = compat_conv(rng(4))
        ep = Endpoint(loop, sock, Counters(), mmsg=io.mmsg, gso=io.gso)
    except BaseException:
        sock.close()
        raise
    if isinstance(wire, SecureWire):
        return await _dial_secure(ep, remote, cfg, secure_cfg, rng)
    path = CompatPath(ep)
    sess = KCPSession(_DialHost(ep), conv, remote, cfg, path, crypt=packet_crypt, fec=wire.fec, rng=rng)
    _HintWatch(sess, ep, path, f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    return sess


class _HintWatch:
    """A compat dial's watch for a wire hint (kcp.wirehint) until the server first answered.

    kcp-go has no handshake, so a compat client dialling a secure server would only hear nothing.
    A secure kcprpc server answers what is not its wire with a 20-byte hint that echoes the first
    bytes of a datagram we sent; one that matches ends the session at once with the reason (and
    gives its event callbacks a :class:`kcp.wirehint.WireMismatch`). Anything else is fed to the
    session as usual; once the server has answered, the endpoint feeds the session directly.
    """

    __slots__ = ("ep", "feed", "path", "peer", "sent", "session", "since")

    def __init__(self, session: KCPSession, ep: Endpoint, path: CompatPath, peer: str) -> None:
        self.session = session
        self.ep = ep
        self.path = path
        self.peer = peer
        self.feed = session.feed
        self.sent = SentLog()
        self.since = session.last_valid
        ep.on_sent = self.sent.add
        ep.dispatch = self.dispatch

    def dispatch(self, data: bytes, addr: Address, now: int) -> None:
        if len(data) == HINT_LEN and data[0] == T_HINT and self._hint(data, now):
            return
        self.feed(data, now)
        if self.session.last_valid != self.since:  # the server answered: no more watching
            feed = self.feed
            self.ep.on_sent = None
            self.ep.dispatch = lambda data, addr, now: feed(data, now)

    def _hint(self, data: bytes, now: int) -> bool:
        """True if ``data`` was a hint bound to what we sent (the session ended with its reason)."""
        hint = parse_hint(data)
        if hint is None:
            return False
        c = self.ep.counters
        s = SNMP
        code, _detail, echo = hint
        # every code but COMPAT_WIRE comes from a secure server (one that took our datagram for a
        # bad initiation says "wrong key" or "wire version": to us it all means "the secure wire")
        if code is HintCode.COMPAT_WIRE or not self.sent.bound(echo):
            c.wire_hints_ignored += 1
            s.wire_hints_ignored += 1
            return False
        c.wire_hints_received += 1
        s.wire_hints_received += 1
        message = hint_message(HintCode.SECURE_WIRE, 0, self.peer)
        event = WireMismatch(HintCode.SECURE_WIRE, message)
        for cb in tuple(self.path.callbacks):
            try:
                cb(cast(Any, event))
            except Exception as exc:
                self.ep.loop.call_exception_handler(
                    {"message": "KCP session event callback failed", "exception": exc, "event": event}
                )
        self.ep.on_sent = None
        self.session.end(now, message)
        return True


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
