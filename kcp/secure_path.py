"""Secure wire mode under the asyncio sessions: the packet path, the client handshake, and the
:class:`kcp.secure.SecureConfig` a wire and a session's tuning make together.

* :class:`SecurePath` is the :class:`kcp.path.PacketPath` of a secure session. Outgoing, every
  UDP payload the packet pipeline makes (KCP packet, FEC shard, OOB datagram; the pipeline runs
  without a cipher) is sealed by the :class:`kcp.secure.SecureConnection` and sent to
  ``conn.peer_addr`` (never a stored address, so migration moves the traffic). Incoming,
  ``conn.open`` authenticates the datagram, then the payload goes into the session as in compat
  mode. The connection's events (path change, validation, key update, CLOSE, GOAWAY) are acted on
  here and handed to the session's event callbacks; its timer (path probes, old-key expiry) rides
  on the session's timer-heap entry.
* :func:`secure_handshake` runs the client side of the handshake on a dialled endpoint and raises
  the core's :class:`kcp.secure.HandshakeError` (timeout, PSK mismatch, refusal with the server's
  reason) out of :func:`kcp.dial`.
* :func:`secure_config` composes the handshake core's configuration from the validated
  :class:`kcp.config.SecureWire` (identity, FEC, other knobs) and :class:`kcp.config.SessionConfig`
  (MTU, windows): each is declared once, by the user, there.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from collections.abc import Callable
from typing import Any, Literal

from kcp.batch import Address
from kcp.config import SecureWire, SessionConfig
from kcp.datagram_budget import AddressBudget
from kcp.endpoint import Endpoint
from kcp.path import EventCallback, Output, PathEndpoint, PathOwner
from kcp.pipeline import Pipeline
from kcp.pmtud import Pmtud
from kcp.secure import (
    ConnectionClosed,
    Event,
    GoAwayReceived,
    HandshakeConfig,
    HandshakeError,
    HandshakeUnreachable,
    KeyUpdated,
    PathChanged,
    PathFailed,
    PathValidated,
    PingAnswered,
    Reason,
    SecureClient,
    SecureConfig,
    SecureConnection,
    SecureConnectionClosed,
)
from kcp.secure.connection import reason_text
from kcp.secure.handshake import ClientState
from kcp.secure.packet import KEEPALIVE_PROBE, MAX_PARTS, MIN_TRANSPORT, PART_OVERHEAD
from kcp.stats import Counters, fold_secure

__all__ = [
    "SECURE_OVERHEAD",
    "SecurePath",
    "conv_of",
    "new_pmtud",
    "secure_config",
    "secure_handshake",
    "set_dont_fragment",
]

SECURE_OVERHEAD = MIN_TRANSPORT
"""Bytes a transport packet adds to its payload: header 17 + frame type 1 + AEAD tag 16."""

# what a local end sends as the CLOSE reason, by the session's close reason
_LOCAL_CODES = {
    "idle timeout": Reason.IDLE_TIMEOUT,
    "listener closed": Reason.GOING_AWAY,
    "dead link": Reason.PROTOCOL_ERROR,
    "aborted": Reason.APPLICATION,
}
CLOSE_COPIES = 2
"""A lost CLOSE costs the peer an idle timeout: it is sent twice."""
_MAX_WINDOW = 65535  # the handshake carries windows as u16
_NO_SPLIT = 1 << 30


def secure_config(wire: SecureWire, session: SessionConfig, *, server: bool) -> HandshakeConfig:
    """The handshake core's configuration: ``wire.config``'s knobs with the wire's identity and
    FEC and the session's MTU and windows (a client's proposal; a server's policy, the most any
    client gets). The wire was validated when it was built; the role is checked here."""
    if server:
        wire.check_server()
    else:
        wire.check_client()
    base = wire.config or SecureConfig()
    key = wire.key
    return HandshakeConfig.compose(
        base,
        static_key=None if wire.static_private_key is None else bytes(wire.static_private_key),
        server_public_key=None if wire.server_public_key is None else bytes(wire.server_public_key),
        psk=bytes(key) if isinstance(key, bytes | bytearray) else None,
        passphrase=key if isinstance(key, str) else None,
        token=bytes(wire.token) if isinstance(wire.token, bytes | bytearray) else b"",
        mtu=session.mtu,
        min_mtu=min(base.min_mtu, session.mtu),
        # a listener's own windows are its policy: no client gets more in flight or buffered
        snd_wnd=min(session.snd_wnd, _MAX_WINDOW) if server else session.snd_wnd,
        rcv_wnd=min(session.rcv_wnd, _MAX_WINDOW) if server else session.rcv_wnd,
        fec=wire.fec,
    )


def new_pmtud(conn: SecureConnection, now: int) -> Pmtud | None:
    """The path MTU search of a new connection (docs/tuning.md "Path MTU"), or None when
    ``SecureConfig.pmtud`` is off. It starts at the base (``pmtud_base``, or the negotiated MTU if
    smaller), as RFC 8899 does, and searches up to ``pmtud_max`` (a UDP payload over IPv4; 20
    bytes less over IPv6) or the negotiated MTU if larger."""
    cfg = conn.config
    if not cfg.pmtud:
        return None
    negotiated = conn.params.mtu
    base = min(cfg.pmtud_base, negotiated)
    addr = conn.peer_addr
    ipv6 = isinstance(addr, tuple) and len(addr) >= 2 and ":" in str(addr[0])
    return Pmtud(
        start=base,
        base=base,
        maximum=max(cfg.pmtud_max - (20 if ipv6 else 0), negotiated),
        now=now,
        probe_timeout_ms=cfg.pmtud_probe_timeout_ms,
        confirm_ms=cfg.pmtud_confirm_ms,
        raise_ms=cfg.pmtud_raise_ms,
        rtt=conn.handshake_rtt_ms,  # a client's first probes time out by it, not by the 1 s cap
    )


_IP_MTU_DISCOVER = 10  # Linux <linux/in.h> (Python's socket module does not name these)
_IPV6_MTU_DISCOVER = 23  # <linux/in6.h>
_PMTUDISC_PROBE = 3  # set DF, and ignore the kernel's path MTU cache: the probes decide


def set_dont_fragment(sock: Any) -> bool:
    """Make the kernel send the socket's datagrams with DF (don't fragment), as RFC 8899 needs:
    a probe that crossed the path as fragments would prove nothing. Linux only; False where it
    cannot be set (the MTU search is then off). A datagram larger than the local interface's MTU
    then fails to send (dropped and counted by the socket layer) instead of being fragmented."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_MTU_DISCOVER, _PMTUDISC_PROBE)
            with contextlib.suppress(OSError):  # a dual-stack socket sends IPv4 as well
                sock.setsockopt(socket.IPPROTO_IP, _IP_MTU_DISCOVER, _PMTUDISC_PROBE)
        else:
            sock.setsockopt(socket.IPPROTO_IP, _IP_MTU_DISCOVER, _PMTUDISC_PROBE)
    except (OSError, AttributeError):
        return False
    return True


def conv_of(conn: SecureConnection) -> int:
    """The KCP conv both ends derive from the handshake (no conv travels in secure mode)."""
    return int.from_bytes(conn.handshake_hash[:4], "little")


class SecurePath:
    """The secure connection under one session (see the module docstring)."""

    __slots__ = (
        "_counters",
        "_now_ms",
        "_pipeline_seal",
        "_pmtu_applied",
        "_retrans_seen",
        "_segs_seen",
        "_tx",
        "ack_repeat",
        "base_payload",
        "budget",
        "callbacks",
        "conn",
        "ep",
        "held_acks",
        "held_back",
        "on_end",
        "owner",
        "pmtud",
        "rekey_due",
        "sent_large",
        "split_payload",
    )

    mode: Literal["compat", "secure"] = "secure"
    overhead = SECURE_OVERHEAD
    has_timer = True

    def __init__(
        self,
        ep: PathEndpoint,
        conn: SecureConnection,
        now: int,
        on_end: Callable[[SecureConnection], None] | None = None,
    ) -> None:
        self.ep = ep
        self.conn = conn
        self.on_end = on_end  # a listener's: the core forgets the connection
        self.held_acks = conn.params.held_acks
        self.ack_repeat = conn.params.ack_repeat
        self.rekey_due = now + conn.config.rekey_after_ms  # time-based key update, even when idle
        self.held_back = 0  # datagrams not sent to an unvalidated new path (KCP resends them)
        self.callbacks: list[EventCallback] = []
        self.owner: PathOwner | None = None
        self.budget: AddressBudget | None = None
        """A listener's: the datagram budget of the address the connection was admitted from
        (:mod:`kcp.datagram_budget`; None: not limited)."""
        pm = new_pmtud(conn, now)
        sock = getattr(ep, "sock", None)
        if pm is not None and sock is not None and not set_dont_fragment(sock):
            pm = None  # without DF a probe could cross as fragments: its answer would prove nothing
        self.pmtud = pm
        """The path MTU search (None: ``SecureConfig.pmtud`` is off, or DF cannot be set)."""
        self._pmtu_applied = conn.params.mtu
        self.split_payload = _NO_SPLIT
        """Payloads longer than this go in DATA_PART pieces (the current MTU's payload size, once
        both ends agreed to DATA_PART and the MTU search runs; else never)."""
        self._split_at(conn.params.mtu if pm is None else pm.plpmtu)
        self.base_payload = _NO_SPLIT if pm is None else pm.base - SECURE_OVERHEAD
        """Payloads longer than this fit only above the MTU search's base: only their losses can
        mean that the path MTU fell."""
        self.sent_large = False
        """A payload longer than :attr:`base_payload` went out since the last retransmission seen."""
        self._counters: Counters | None = None
        # what the engine's output (make_output) uses: the endpoint's send batch and clock, and the
        # pipeline's seal once make_output named the pipeline
        self._tx: list[tuple[bytes, Address]] = ep.tx
        self._now_ms: Callable[[], int] = ep.timers.now_ms
        self._pipeline_seal: Callable[[bytes, int], list[bytes]] | None = None
        self._retrans_seen = 0
        self._segs_seen = 0

    @property
    def connection(self) -> SecureConnection:
        return self.conn

    def attach(self, owner: PathOwner) -> None:
        self.owner = owner
        self._apply_pmtu()  # the search starts from the base

    # -- sending ---------------------------------------------------------------------------------
    def make_output(self, pipeline: Pipeline, plain: bool, counters: Counters) -> Output:
        """The engine's output: pipeline (FEC) → seal → the endpoint's send batch, to the current path."""
        self._counters = counters
        if plain:
            return self._output_plain
        self._pipeline_seal = pipeline.seal
        return self._output_pipeline

    def _output_plain(self, packet: bytes) -> None:
        try:
            self._send_payload(packet, self._now_ms())
        except SecureConnectionClosed:
            return

    def _output_pipeline(self, packet: bytes) -> None:
        seal = self._pipeline_seal
        if seal is None:
            return
        now = self._now_ms()
        try:
            for payload in seal(packet, now):
                self._send_payload(payload, now)
        except SecureConnectionClosed:
            return

    def _send_payload(self, payload: bytes, now: int) -> None:
        """Seal one pipeline payload and queue it (the engine's output, per datagram)."""
        n = len(payload)
        if n > self.base_payload:
            if n > self.split_payload:
                self.send_parts(payload, now)  # sent before the MTU fell: in pieces
                return
            self.sent_large = True
        conn = self.conn
        d = conn.seal(payload, now)
        if not conn.path_validated and not conn.can_send(len(d)):
            self.held_back += 1  # new path not validated yet: KCP retransmits later
            return
        self._tx.append((d, conn.peer_addr))
        c = self._counters
        if c is not None:
            c.out_pkts += 1
            c.bytes_sent += len(d)

    def _apply_pmtu(self) -> None:
        """Give the owner's engine the MTU the search found, if it changed."""
        pm = self.pmtud
        owner = self.owner
        if pm is not None and owner is not None and pm.plpmtu != self._pmtu_applied:
            self._pmtu_applied = pm.plpmtu
            owner.set_mtu(pm.plpmtu)
            self._split_at(pm.plpmtu)

    def _split_at(self, pmtu: int) -> None:
        if self.pmtud is None or not self.conn.params.data_parts:
            self.split_payload = _NO_SPLIT
        else:
            self.split_payload = pmtu - SECURE_OVERHEAD

    def send_parts(self, payload: bytes, now: int) -> None:
        """Send a payload larger than the current MTU allows (a KCP segment sent at a larger MTU
        before a fall back, resent now) as DATA_PART pieces that fit; the peer reassembles it."""
        conn = self.conn
        limit = self.split_payload + SECURE_OVERHEAD
        if len(payload) > MAX_PARTS * (limit - PART_OVERHEAD):
            ds = [conn.seal(payload, now)]  # no MTU this small is ever searched: send it whole
        else:
            ds = conn.seal_parts(payload, limit, now)
        c = self._counters
        for d in ds:
            if self._queue(d) and c is not None:
                c.out_pkts += 1
                c.bytes_sent += len(d)

    def _queue(self, d: bytes) -> bool:
        """Queue sealed datagram ``d`` to the peer, unless the path is new, not validated yet and
        its anti-amplification budget spent (counted in ``held_back``: KCP resends later)."""
        conn = self.conn
        if not conn.path_validated and not conn.can_send(len(d)):
            self.held_back += 1
            return False
        self.ep.tx.append((d, conn.peer_addr))
        return True

    def send_datagram(self, datagram: bytes, now: int) -> None:
        """Seal one pipeline payload (an OOB datagram) and queue it."""
        if len(datagram) > self.split_payload:
            self.send_parts(datagram, now)
            return
        self._queue(self.conn.seal(datagram, now))

    def _flush_control(self, now: int) -> None:
        out = self.conn.datagrams_to_send(now)
        if out:
            self.ep.tx.extend(out)
            self.ep.kick()

    def goaway(self, code: int, message: str, now: int) -> None:
        conn = self.conn
        self.ep.send(conn.goaway(code, message, now), conn.peer_addr)

    def announce_rebind(self, now: int) -> None:
        conn = self.conn
        pm = self.pmtud
        if pm is not None:
            if set_dont_fragment(self.ep.sock):
                pm.suspect()  # maybe a new network: confirm the MTU there
            else:
                self.pmtud = None  # the new socket cannot set DF: keep the MTU found so far
        self.ep.tx.append((conn.ping(now), conn.peer_addr))

    def add_stats(self, out: dict[str, int]) -> None:
        for k, v in self.conn.counters.snapshot().items():
            out["secure_" + k] = v
        out["secure_held_back"] = self.held_back
        out["secure_key_epoch"] = self.conn.epoch
        if self.pmtud is not None:
            out.update(self.pmtud.snapshot())

    # -- path MTU --------------------------------------------------------------------------------
    def _pmtud_run(self, now: int) -> None:
        """Send the probes the MTU search wants now and apply its MTU to the session."""
        pm = self.pmtud
        conn = self.conn
        if pm is None or not conn.is_open or not conn.path_validated:
            return
        probes = pm.poll(now)
        for pid, size in probes:
            self.ep.tx.append((conn.ping(now, size, pid), conn.peer_addr))
        if probes:
            self.ep.kick()
        self._apply_pmtu()

    def _probe_acks(self, now: int) -> None:
        """PING_ACKs arrived: a keepalive's answer goes to the callbacks, an MTU probe's to the search."""
        conn = self.conn
        acks, conn.probe_acks = conn.probe_acks, []
        pm = self.pmtud
        searched = False
        for pid in acks:
            if pid & KEEPALIVE_PROBE:
                self._notify(PingAnswered(pid ^ KEEPALIVE_PROBE))
            elif pm is not None:
                pm.on_ack(pid, now)
                searched = True
        if searched:
            self._pmtud_run(now)  # the next probe at once

    # -- keepalive -------------------------------------------------------------------------------
    def ping(self, nonce: int, now: int) -> bool:
        """Send a keepalive: an authenticated PING carrying ``nonce`` that the peer's transport answers
        (the answer comes back as :class:`~kcp.secure.PingAnswered`)."""
        conn = self.conn
        if not conn.is_open:
            return False
        self.ep.send(conn.ping(now, 0, KEEPALIVE_PROBE | nonce), conn.peer_addr)
        return True

    # -- receiving -------------------------------------------------------------------------------
    def input(self, datagram: bytes, addr: Address, now: int) -> bool:
        """One datagram for this connection (by connection ID on a listener, or the dialled socket).

        Returns True if it authenticated. Only such datagrams keep the session alive: junk sent
        to the connection ID, or a replayed packet, is dropped and counted and does not reset the
        idle timer.
        """
        conn = self.conn
        counters = conn.counters
        opened = counters.packets_opened
        payload = conn.open(datagram, addr, now)
        authentic = counters.packets_opened != opened
        if conn.events:
            self._events(now)
        if conn.outbox:
            self._flush_control(now)
        s = self.owner
        if s is not None:
            if payload is not None:
                s.feed(payload, now)  # a session that ended ignores it
            elif authentic:
                s.touch(now)  # authenticated control traffic (PING, path probes) keeps it alive
        if payload is None and conn.probe_acks:
            self._probe_acks(now)
        return authentic

    def _events(self, now: int) -> None:
        conn = self.conn
        s = self.owner
        while (ev := conn.next_event()) is not None:
            if s is not None:
                if isinstance(ev, PathChanged | PathFailed):
                    s.remote_address = conn.peer_addr
                    # the address left behind (a path that failed validation: the one tried)
                    self.ep.forget(ev.old if isinstance(ev, PathChanged) else ev.addr)
                elif isinstance(ev, PathValidated):
                    s.request_flush()  # segments held back from the new path may go now
                    if self.pmtud is not None:
                        self.pmtud.suspect()  # a new path: confirm the MTU there
                elif isinstance(ev, GoAwayReceived):
                    s.goaway_received = (ev.code, ev.message)
                elif isinstance(ev, KeyUpdated):
                    self.rekey_due = now + conn.config.rekey_after_ms
            self._notify(ev)
            if isinstance(ev, ConnectionClosed) and ev.by_peer and s is not None:
                s.peer_closed(now, ev.code, "closed by peer: " + reason_text(ev.code, ev.message))

    def _notify(self, ev: Event) -> None:
        for cb in tuple(self.callbacks):
            try:
                cb(ev)
            except Exception as exc:
                self.ep.loop.call_exception_handler(
                    {"message": "KCP session event callback failed", "exception": exc, "event": ev}
                )

    # -- timers ----------------------------------------------------------------------------------
    def timer(self) -> int:
        """When the session should wake for the connection: probes, old-key expiry, key update."""
        t = self.conn.get_timer()
        due = self.rekey_due if t is None or self.rekey_due < t else t
        pm = self.pmtud
        if pm is not None and self.conn.path_validated and self.conn.is_open:
            c = self._counters
            if c is not None:
                if c.out_segs != self._segs_seen:
                    self._segs_seen = c.out_segs
                    pm.note_traffic()  # an idle session is not probed
                if c.retrans_segs != self._retrans_seen:
                    self._retrans_seen = c.retrans_segs
                    if self.sent_large:  # large data is being resent: is the MTU still right?
                        self.sent_large = False
                        pm.suspect()
            tp = pm.timer()
            if tp < due:
                due = tp
        return due

    def on_timer(self, now: int) -> None:
        conn = self.conn
        t = conn.get_timer()
        if t is not None and now >= t:
            conn.handle_timer(now)
        if now >= self.rekey_due and conn.is_open:
            # keys age out on the timer heap even when nothing is sent (the core also checks on
            # every seal); a PING carries the new phase so the peer follows at once
            if conn.update_keys(now):
                self.ep.send(conn.ping(now), conn.peer_addr)
            else:
                self.rekey_due = now + max(1, conn.config.key_grace_ms)  # previous update unfinished
        pm = self.pmtud
        if pm is not None and now >= pm.timer():
            self._pmtud_run(now)
        if conn.events:
            self._events(now)
        if conn.outbox:
            self._flush_control(now)

    # -- ending ----------------------------------------------------------------------------------
    def finish(self, now: int, code: int | None, reason: str) -> None:
        """The session ended locally: send an authenticated CLOSE (unless the peer closed first)."""
        conn = self.conn
        if conn.is_open:
            if code is None:
                code = _LOCAL_CODES.get(reason, Reason.NONE)
            message = "" if reason in ("closed", "") else reason
            pkt = conn.close(code, message[:512], now)
            self._events(now)  # callbacks see ConnectionClosed(by_peer=False)
            for _ in range(CLOSE_COPIES):
                self.ep.tx.append((pkt, conn.peer_addr))
        if self.on_end is not None:
            self.on_end(conn)
        fold_secure(conn.counters)


# ---------------------------------------------------------------------------------- client side


class _HandshakeTimer:
    """Timer-heap target that drives :meth:`SecureClient.handle_timer`."""

    __slots__ = ("_timer_entry", "cb")

    def __init__(self, cb: Callable[[int], None]) -> None:
        self._timer_entry = -1  # TimerTarget: kcp.timers.NO_ENTRY
        self.cb = cb

    def _on_timer(self, now: int) -> None:
        self.cb(now)


def _host_port(addr: Address) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


async def secure_handshake(
    ep: Endpoint, remote: Address, cfg: HandshakeConfig, rng: Callable[[int], bytes]
) -> SecureConnection:
    """Run the client handshake on ``ep`` (its socket connected to ``remote``).

    Returns the established connection, or raises the :class:`kcp.secure.HandshakeError` the core
    reports, each naming ``HOST:PORT`` and what to check: :class:`kcp.secure.HandshakeUnreachable`
    (ICMP: nothing listens there, at once), :class:`kcp.secure.HandshakeKeyMismatch` (the server's
    wire hint: wrong key; or a PSK mismatch after one round trip),
    :class:`kcp.secure.HandshakeWireMismatch` (the server speaks kcp-go's wire),
    :class:`kcp.secure.HandshakeRefused` with the server's reason (bad token, version, parameters),
    :class:`kcp.secure.HandshakeNoAnswer` (not one datagram back before the timeout) or
    :class:`kcp.secure.HandshakeTimeout` (answers that never authenticated).
    """
    loop = ep.loop
    timers = ep.timers
    client = SecureClient(cfg, rng, peer=_host_port(remote))
    fut: asyncio.Future[SecureConnection] = loop.create_future()

    def settle() -> None:
        for d in client.datagrams_to_send(timers.now_ms()):
            ep.tx.append((d, remote))
        if ep.tx:
            ep.kick()
        if fut.done():
            return
        if client.state is ClientState.ESTABLISHED and client.connection is not None:
            fut.set_result(client.connection)
        elif client.state is ClientState.FAILED:
            fut.set_exception(client.error or HandshakeError("handshake failed"))

    def dispatch(data: bytes, addr: Address, now: int) -> None:
        if client.state is ClientState.INITIATING:
            client.receive(data, addr, now)
            settle()

    def on_timer(now: int) -> None:
        client.handle_timer(now)
        settle()
        t = client.get_timer()
        if t is not None and not fut.done():
            timers.schedule(timer, t)

    def refused() -> None:
        if not fut.done():
            client.abandon(timers.now_ms())
            fut.set_exception(
                HandshakeUnreachable(
                    f"handshake failed: connection refused (nothing listens on {_host_port(remote)})"
                )
            )

    timer = _HandshakeTimer(on_timer)
    ep.dispatch = dispatch
    ep.on_refused = refused
    ep.send(client.initiate(timers.now_ms()), remote)
    t0 = client.get_timer()
    if t0 is not None:
        timers.schedule(timer, t0)
    try:
        return await fut
    except asyncio.CancelledError:
        client.abandon(timers.now_ms())
        raise
    finally:
        timers.cancel(timer)
        ep.ignore_input()
        fold_secure(client.counters)  # the handshake's own counters (the connection has its own)
