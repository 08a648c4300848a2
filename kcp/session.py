"""asyncio KCP sessions: :class:`KCPSession` over a shared :class:`kcp.endpoint.Endpoint`.

A session runs one :class:`kcp.engine.KCP` behind its :class:`kcp.pipeline.Pipeline` (crypt, crc,
FEC, OOB). Its host (:class:`SessionHost`: a dialled socket, or a listener) feeds it datagrams and
learns when it ends; its :class:`kcp.path.PacketPath` (compat or secure) decides how datagrams are
sealed, opened and sent, and what counts as the peer being alive.

* receive: the host calls :meth:`KCPSession.feed` per datagram; after the endpoint's batch the
  session delivers to its reader and flushes acks (:meth:`KCPSession.after_input`);
* send: ``write()`` queues into the engine and asks for a flush at the end of the loop tick;
* timers: a session with data in flight is woken when its engine's ``check()`` says; an idle
  session only at its idle deadline (and at its packet path's timers).

KCP has no FIN: a session ends on :meth:`KCPSession.close` (after a bounded linger while sent data
is unacknowledged), on the idle timeout, or when the engine reports a dead link. After a local
close or an idle timeout, reads return ``b""``; after a dead link they raise
:class:`kcp.errors.DeadLinkError`. Writes after the end raise the matching
:class:`kcp.errors.ConnectionClosedError`. The states and their transitions are
:class:`SessionState` and ``SESSION_TRANSITIONS``.
"""

from __future__ import annotations

import asyncio
import enum
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from kcp.batch import Address
from kcp.config import SessionConfig
from kcp.congestion import BBRLite
from kcp.crypt import PacketCrypt
from kcp.endpoint import Endpoint
from kcp.engine import ACK_HOLD_MAX, IKCP_ASK_SEND, IKCP_ASK_TELL, IKCP_OVERHEAD, KCP
from kcp.errors import ConnectionClosedError, KCPUsageError
from kcp.path import PacketPath
from kcp.pipeline import KIND_KCP, KIND_OOB, Pipeline, bare_kcp
from kcp.secure.packet import KEEPALIVE_PROBE
from kcp.session_cc import SessionCC
from kcp.session_datagrams import DatagramQueue
from kcp.session_setup import check_close_code, make_engine, water_marks
from kcp.session_stats import session_stats
from kcp.session_timing import NearWake, dead_link_error, next_wake
from kcp.snmp import session_closed, session_opened
from kcp.stats import Counters

if TYPE_CHECKING:
    from kcp.secure import Event, SecureConnection

__all__ = ["SESSION_TRANSITIONS", "KCPSession", "SessionHost", "SessionState"]


class SessionState(enum.Enum):
    """A session's life: open → closing (linger while sent data is unacknowledged) → closed."""

    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


DIRECT_INPUTS = 2
"""The most datagrams a session may get in one receive batch for its input to go straight to its
receiver (:meth:`KCPSession.set_receiver`)."""

LONE_ACKS = 8
"""After this many delayed acks in a row went alone (nothing to ride with: a session that only
receives, as a subscriber to a push), a session's lone acks stop waiting: they go at the end of
the receive batch, in one send with the other sessions' (docs/tuning.md, "Delayed acks")."""

OUT_OF_ORDER_STEP = 64
"""Segments: each time a session's out-of-order receive buffer grows by this many since it was
last told, it calls the callback given to :meth:`KCPSession.watch_receive` (a server counts what
all its clients make it hold as it grows, not only on its periodic count)."""

HOLD_QUIET = 512
"""After a loss ends the holding of acks (``SessionConfig.ack_hold``), this many delayed acks in a
row must go alone before lone acks are held again."""

LONE_ACK_PROBE = 32
"""While lone acks go at once, every this many of them one waits again, to find out whether data
now goes the same way (a reply, a next call): if it rides, the session delays its acks again."""

_OPEN, _CLOSING, _CLOSED = SessionState.OPEN, SessionState.CLOSING, SessionState.CLOSED
SESSION_TRANSITIONS: dict[SessionState, frozenset[SessionState]] = {
    _OPEN: frozenset({_CLOSING, _CLOSED}),
    _CLOSING: frozenset({_CLOSED}),
    _CLOSED: frozenset(),
}
"""The legal state changes; anything else is a bug (asserted)."""


class SessionHost(Protocol):
    """What a session needs from what it runs on (a dialled socket or a listener)."""

    @property
    def endpoint(self) -> Endpoint: ...

    @property
    def passive(self) -> bool:
        """True for sessions a listener accepted."""

    def conv_mismatch(self, session: KCPSession, datagram: bytes, packet: bytes, now: int) -> bool:
        """A KCP packet with another conv reached ``session``; True if the session was replaced."""

    def session_ended(self, session: KCPSession) -> None:
        """The session ended: forget it (a dialled session's host closes its socket)."""

    def rebind(self, remote: Address, local_addr: tuple[str, int] | None) -> Address:
        """Move to a new local socket connected to ``remote`` (a dialled session's host only)."""


class KCPSession:
    """A reliable, ordered byte stream (and unreliable datagrams) to one peer over KCP.

    Created by :func:`dial` or accepted from a :class:`kcp.listener.Listener`; not built directly.
    Reading and writing follow :class:`asyncio.StreamReader`/:class:`asyncio.StreamWriter`, except
    that ``read(-1)`` returns whatever is buffered as soon as there is something (KCP streams
    rarely end, so it does not wait for EOF).
    """

    __slots__ = (
        "_ack_delay",
        "_ack_due",
        "_cc",
        "_closed_fut",
        "_config",
        "_dgram_sink",
        "_dgrams",
        "_dgrams_fed",
        "_disorder",
        "_drain_waiter",
        "_engine",
        "_ep",
        "_event_callbacks",
        "_exc",
        "_fed",
        "_flush_marked",
        "_held_at",
        "_high_water",
        "_hold",
        "_host",
        "_idle_ms",
        "_in_dirty",
        "_last_recv",
        "_last_valid",
        "_linger_until",
        "_live",
        "_lone_acks",
        "_loop",
        "_low_water",
        "_near",
        "_ooo_mark",
        "_ooo_watch",
        "_overhead",
        "_path",
        "_path_timer",
        "_pipeline",
        "_plain",
        "_rbuf",
        "_read_waiter",
        "_rlimit",
        "_sink",
        "_state",
        "_timer_entry",
        "_timer_input",
        "_timers",
        "ack_nodelay",
        "close_code",
        "close_reason",
        "counters",
        "goaway_received",
        "local_address",
        "remote_address",
    )

    def __init__(
        self,
        host: SessionHost,
        conv: int,
        remote: Address,
        config: SessionConfig,
        path: PacketPath,
        *,
        crypt: PacketCrypt | None = None,
        fec: tuple[int, int] = (0, 0),
        rng: Callable[[int], bytes] = os.urandom,
    ) -> None:
        ep = host.endpoint
        self._ep = ep
        self._host = host
        self._loop = ep.loop
        self._timers = ep.timers
        self._timer_input = ep  # the heap reads the socket's pending acks before firing timers
        self._config = config
        self.remote_address: Address = remote
        self.local_address: Address = ep.local_address
        self.counters = Counters()
        # a secure handshake agreed on the FEC both ends run; a compat peer shows it (kcp.pipeline)
        self._pipeline = Pipeline(crypt, fec[0], fec[1], self.counters, rng, peer_fec=path.mode == "secure")
        self._plain = crypt is None and not self._pipeline.fec_enabled
        self._path = path
        self._path_timer = path.timer if path.has_timer else None
        self._overhead = self._pipeline.overhead + path.overhead
        self.close_code: int | None = None
        self.goaway_received: tuple[int, str] | None = None
        self._event_callbacks = path.callbacks
        eng = self._engine = make_engine(conv, config, self._overhead, self.counters)
        self._cc = SessionCC(eng) if config.congestion == "bbr" else None
        self.ack_nodelay = config.ack_nodelay
        self._ack_delay = config.ack_delay
        self._ack_due = -1  # when acks waiting for data to ride with go alone (-1: none wait)
        self._lone_acks = 0  # delayed acks in a row that went alone (then immediate ones, LONE_ACKS)
        # held acks (docs/tuning.md "Delayed acks"): only with a peer that agreed to them
        eng.hold_aware = path.held_acks
        eng.ack_repeat = path.ack_repeat  # (docs/tuning.md "Repeated acks")
        self._hold = config.ack_hold if path.held_acks else 0  # ms a lone ack may wait, once LONE_ACKS
        self._held_at = -1  # when the ack being held came (-1: none held)
        self._disorder = 0  # the engine's disorder count when last looked at (a new one: a loss)
        self._rbuf = bytearray()
        self._rlimit = config.read_buffer
        self._sink: Callable[[bytes], bool] | None = None
        self._dgram_sink: Callable[[bytes], None] | None = None
        self._fed = 0  # datagrams fed since the last after_input (one receive batch)
        self._dgrams = DatagramQueue(config.datagram_queue, self._loop)
        self._dgrams_fed = False  # a datagram was queued in this receive batch (after_input hands it on)
        self._read_waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._closed_fut: asyncio.Future[None] = self._loop.create_future()
        self._state = SessionState.OPEN
        self._exc: BaseException | None = None
        self.close_reason = ""
        self._flush_marked = False
        self._in_dirty = False
        self._ooo_watch: Callable[[], None] | None = None  # watch_receive's callback
        self._ooo_mark = 0  # out-of-order segments when it was last called (or fewer, since)
        self._timer_entry = -1  # TimerTarget: kcp.timers.NO_ENTRY
        self._near = NearWake(self, ep)  # the second heap entry (kcp.session_timing)
        self._high_water, self._low_water = water_marks(config, eng)
        self._idle_ms = int(config.idle_timeout * 1000) if config.idle_timeout else 0
        self._linger_until = 0
        self._last_recv = self._last_valid = self._timers.now_ms()
        self._live = session_opened(self.counters, path, passive=host.passive)
        path.attach(self)
        eng.output = path.make_output(self._pipeline, self._plain, self.counters)
        self._post(self._last_recv)

    # -- properties ------------------------------------------------------------------------------
    @property
    def conv(self) -> int:
        """The KCP conversation id."""
        return self._engine.conv

    @property
    def config(self) -> SessionConfig:
        """The configuration the session was created with."""
        return self._config

    @property
    def closed(self) -> bool:
        """True once the session has fully ended (see :meth:`wait_closed`)."""
        return self._state is _CLOSED

    @property
    def state(self) -> SessionState:
        """Where the session is: open, closing (lingering for unacknowledged data), closed."""
        return self._state

    def is_closing(self) -> bool:
        """True after :meth:`close` or once the session ended for any reason."""
        return self._state is not _OPEN

    # -- the host's and the packet path's view (kcp.listener, kcp.demux, kcp.path) ----------------
    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def ended(self) -> bool:
        """True once the session has fully ended (as :attr:`closed`)."""
        return self._state is _CLOSED

    @property
    def last_valid(self) -> int:
        """When (ms) the engine last accepted a packet of this conversation."""
        return self._last_valid

    def touch(self, now: int) -> None:
        """Authenticated traffic without a payload arrived (secure mode): the peer is alive."""
        self._last_recv = now

    # -- liveness --------------------------------------------------------------------------------
    def ping(self, nonce: int) -> bool:
        """Secure mode: send a keepalive, an authenticated PING carrying ``nonce`` (0 to 2**63 - 1)
        that the peer's transport answers at once, with no KCP, mux or RPC work on either side. The
        answer reaches the event callbacks as :class:`kcp.secure.PingAnswered` (``nonce``); a lost
        PING or answer is simply not answered. Returns False, and sends nothing, in compat mode
        (kcp-go's wire has no PING) or once the session is closing."""
        if not 0 <= nonce < KEEPALIVE_PROBE:
            raise KCPUsageError(f"ping nonce must be in 0..2**63-1, got {nonce}")
        if self._state is not _OPEN:
            return False
        return self._path.ping(nonce, self._timers.now_ms())

    def silent_ms(self) -> int:
        """Milliseconds since the peer last sent something this session accepted (secure mode: an
        authenticated datagram, its keepalives included)."""
        return max(0, self._timers.now_ms() - self._last_recv)

    def end(self, now: int, reason: str, *, flush: bool = False) -> None:
        """End the session now for ``reason`` (its host's decision: listener closed, replaced);
        ``flush`` sends what the engine still has first."""
        if flush and self._state is not _CLOSED:
            self._engine.flush(now)
        self._finish(now, None, reason)

    @property
    def congestion_controller(self) -> BBRLite | None:
        """The sender's controller with ``congestion="bbr"`` (its ``bw``, ``min_rtt``, ``cwnd``,
        ``pacing_rate``, ``state``), or None for ikcp's own (see docs/tuning.md)."""
        return self._cc.cc if self._cc is not None else None

    @property
    def endpoint_counters(self) -> Counters:
        """The counters of the UDP socket under this session (shared with a listener's sessions)."""
        return self._ep.counters

    @property
    def engine(self) -> KCP:
        """The underlying engine (for inspection; do not drive it directly)."""
        return self._engine

    # -- secure mode -----------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        """``"secure"`` or ``"compat"`` (the wire mode, see docs/security.md)."""
        return self._path.mode

    @property
    def secure(self) -> SecureConnection | None:
        """The secure connection (negotiated ``params``, ``counters``, ``peer_static``...), or None."""
        return self._path.connection

    def add_event_callback(self, callback: Callable[[Event], object]) -> None:
        """Call ``callback(event)`` for each secure-mode event of this session.

        Events are :mod:`kcp.secure`'s: ``PathChanged(old, new)`` (the peer moved; its
        ``remote_address`` has already changed), ``PathValidated``, ``PathFailed``, ``KeyUpdated``,
        ``GoAwayReceived(code, message)`` and ``ConnectionClosed(code, message, by_peer)``. The
        callback runs inside the receive path: it must not block. Compat sessions have no events.
        """
        self._event_callbacks.append(callback)

    def remove_event_callback(self, callback: Callable[[Event], object]) -> None:
        """Stop calling ``callback`` (no error if it was not registered)."""
        if callback in self._event_callbacks:
            self._event_callbacks.remove(callback)

    def goaway(self, code: int = 9, message: str = "") -> None:
        """Secure mode: tell the peer to open no new streams (an authenticated GOAWAY).

        The session stays open so calls in flight finish; the peer's ``goaway_received`` is set and
        its event callbacks get ``GoAwayReceived``. Acting on it is the mux/RPC layer's job.
        """
        self._check_writable()
        self._path.goaway(code, message, self._timers.now_ms())

    def rebind(self, local_addr: tuple[str, int] | None = None) -> Address:
        """Secure client sessions: move to a new local UDP socket (a phone changing networks).

        The old socket is closed; an authenticated PING from the new one tells the server, which
        moves the session there once the new path answers its probe. Data in flight is resent by
        KCP. Returns the new local address.
        """
        self._check_writable()
        if self._path.connection is None or self._host.passive:
            raise KCPUsageError("rebind() is for secure-mode client sessions (kcp.dial with a SecureWire)")
        self.local_address = self._host.rebind(self.remote_address, local_addr)
        self._path.announce_rebind(self._timers.now_ms())
        self.request_flush()
        return self.local_address

    @property
    def stats(self) -> dict[str, int]:
        """This session's counters plus the engine's RTT and window state."""
        dgrams = self._dgrams
        return session_stats(
            self.counters,
            self._engine,
            self._path.add_stats,
            read_buffered=len(self._rbuf),
            datagrams_queued=len(dgrams),
            datagrams_dropped=dgrams.dropped,
        )

    @property
    def datagrams_dropped(self) -> int:
        """Received datagrams dropped because the queue (``datagram_queue``) was full."""
        return self._dgrams.dropped

    # -- tuning ----------------------------------------------------------------------------------
    def set_nodelay(self, nodelay: int, interval: int, resend: int, nc: int) -> None:
        """ikcp ``nodelay()``: e.g. ``(1, 10, 2, 1)`` for the fastest retransmission."""
        self._engine.nodelay(nodelay, interval, resend, nc)

    def set_window(self, snd_wnd: int, rcv_wnd: int) -> None:
        """Send and receive windows, in segments (the receive window is at least 128)."""
        self._engine.wndsize(snd_wnd, rcv_wnd)
        self._high_water, self._low_water = water_marks(self._config, self._engine)

    def set_mtu(self, mtu: int) -> None:
        """UDP payload size; the engine gets ``mtu`` minus the packet-layer overhead."""
        if self._engine.setmtu(mtu - self._overhead) < 0:
            raise KCPUsageError(f"mtu {mtu} is too small")

    def set_stream_mode(self, enable: bool) -> None:
        """KCP stream mode: writes are packed into full segments, message boundaries are lost."""
        self._engine.stream = 1 if enable else 0

    def set_ack_nodelay(self, enable: bool) -> None:
        """Flush acks right after each receive batch instead of at the next interval."""
        self.ack_nodelay = enable

    # -- network input ---------------------------------------------------------------------------
    def feed(self, data: bytes, now: int) -> None:
        """One datagram from the remote address (called by the host's demux or the packet path);
        ignored once the session ended."""
        if self._state is _CLOSED:
            return
        self._last_recv = now
        self._fed += 1
        c = self.counters
        c.in_pkts += 1
        c.bytes_received += len(data)
        eng = self._engine
        if self._plain and bare_kcp(data):
            rc = eng.input(data, now)
            if rc == 0:
                self._last_valid = now
            elif rc == -1 and len(data) >= IKCP_OVERHEAD:
                self._host.conv_mismatch(self, data, data, now)
                return
        else:
            for kind, payload in self._pipeline.open(data, now):
                if kind != KIND_OOB:
                    rc = eng.input(payload, now, regular=kind == KIND_KCP)
                    if rc == 0:
                        self._last_valid = now
                    elif (
                        rc == -1
                        and len(payload) >= IKCP_OVERHEAD
                        and self._host.conv_mismatch(self, data, payload, now)
                    ):
                        return
                elif self._state is _OPEN:
                    self._dgrams.push(payload)
                    self._dgrams_fed = True
        if not self._in_dirty:
            self._in_dirty = True
            self._ep.dirty.append(self)

    def probe_peer(self) -> None:
        """Ask the peer for its window now (a KCP WASK, as ikcp sends when the remote window is
        zero): a live ikcp peer answers at its next flush. The listener uses it to tell a live peer
        from one that restarted (kcp.admission)."""
        if self._state is _CLOSED:
            return
        self._engine.probe |= IKCP_ASK_SEND
        self.request_flush()

    def after_input(self, now: int) -> None:
        """After a receive batch: deliver to the reader, flush acks, re-arm the timer."""
        self._in_dirty = False
        fed = self._fed
        self._fed = 0
        if self._state is _CLOSED:
            return
        eng = self._engine
        if eng.rcv_queue:  # an input of acks only has nothing to deliver
            # a session that got a few datagrams in this batch hands them to its receiver now (one
            # loop turn saved per message); a busier one leaves them to the reader's task, which
            # takes what more arrives until it runs in one piece: larger batches above
            self._deliver(fed <= DIRECT_INPUTS)
            if self._state is _CLOSED:  # its receiver ended it: nothing to flush or re-arm
                return
        if self._dgrams_fed:  # (a flag: the queue is another object, cold in a fan-out's acks)
            self._dgrams_fed = False
            if self._dgram_sink is not None and self._dgrams.queue:
                self._hand_datagrams()
                if self._state is _CLOSED:
                    return
        watch = self._ooo_watch
        if watch is not None:  # (a server's: what its clients make it hold, as it grows)
            n = len(eng.rcv_buf)
            if n >= self._ooo_mark + OUT_OF_ORDER_STEP:
                self._ooo_mark = n
                watch()
                if self._state is _CLOSED:  # it ended this session
                    return
            elif n < self._ooo_mark:
                self._ooo_mark = n
        cc = self._cc
        if cc is not None:
            cc.after_input(eng, now)
            if cc.measuring and not self._config.write_buffer:  # a bulk flow: a write buffer for its window
                self._high_water, self._low_water = water_marks(self._config, eng, cc.cc.cwnd)
        # a flush only for what it would send: acks, a probe, or data (an input of pure acks, one
        # per fan-out delivery, asks for none: docs/BENCHMARKS.md "Fan-out")
        lost = False
        if self._hold and eng.disorder != self._disorder:  # a segment out of order or again: a loss
            self._disorder = eng.disorder
            lost = self._lone_acks >= LONE_ACKS  # holding: acks go at once until quiet again
            if lost:
                self._stop_hold(now)
        if not self._flush_marked:
            if eng.waitsnd() or (self.ack_nodelay and eng.probe):
                self._flush_marked = True
                self._ep.flushq.append(self)
            elif self.ack_nodelay and (acks := eng.acks_pending()):
                # one lone ack may wait for data to ride with (or for _ack_due); two or more go at
                # once, as TCP acks every second segment: bulk flows keep their ack clock
                if lost:
                    self._flush_marked = True
                    self._ep.flushq.append(self)
                elif self._ack_delay and acks == 1 and self._lone_acks < LONE_ACKS:
                    if self._ack_due < 0:
                        self._ack_due = now + self._ack_delay
                elif acks == 1 and self._hold and eng.ack_frg:  # receive-only, and the peer was told
                    if self._held_at < 0:
                        self._held_at = now
                        self._ack_due = now + self._hold
                        self.counters.acks_held += 1
                else:
                    if self._held_at >= 0:  # a second segment came: both acks go now
                        eng.hold_first_ack(now - self._held_at)
                        self._held_at = -1
                        self._ack_due = -1
                    elif acks == 1 and self._ack_delay:  # its lone acks found no ride lately
                        n = self._lone_acks + 1
                        # every LONE_ACK_PROBE-th waits again (LONE_ACKS - 1: one more try)
                        self._lone_acks = LONE_ACKS - 1 if n >= LONE_ACKS + LONE_ACK_PROBE else n
                    self._flush_marked = True
                    self._ep.flushq.append(self)
        if eng.state != 0:
            self._die(now)
            return
        if self._flush_marked:
            return  # its flush (this tick, or at once for a quiet batch) re-arms the timer
        self._post(now)

    def _deliver(self, direct: bool = True) -> None:
        """Move received messages to the sink (``direct``, see :meth:`set_receiver`) or the read
        buffer, and wake the reader."""
        eng = self._engine
        if self._state is not _OPEN:
            while eng.recv() is not None:  # nobody reads any more: keep the window open
                pass
            return
        rbuf = self._rbuf
        got = False
        sink = self._sink if direct else None
        if sink is not None and not rbuf:
            # the direct path (set_receiver): what the engine has ready goes to the sink in one
            # piece (bounded by the receive window), in this turn, while nothing waits for read();
            # refused, it starts the read buffer
            m = eng.recv()
            if m is not None:
                n = eng.recv()
                if n is not None:
                    parts = [m, n]
                    while (n := eng.recv()) is not None:
                        parts.append(n)
                    m = b"".join(parts)
                if m:
                    if not sink(m):
                        rbuf += m
                        got = True
                    elif self._state is not _OPEN:  # the sink closed the session
                        return
        limit = self._rlimit
        while len(rbuf) < limit:
            m = eng.recv()
            if m is None:
                break
            if m:
                rbuf += m
                got = True
        if got:
            w = self._read_waiter
            if w is not None and not w.done():
                w.set_result(None)

    # -- timers and flushing ---------------------------------------------------------------------
    def _on_timer(self, now: int) -> None:
        if self._state is _CLOSED:
            return
        if self._path_timer is not None:
            self._path.on_timer(now)  # path probes, old-key expiry, their events
            if self._state is _CLOSED:
                return
        eng = self._engine
        if self._idle_ms and now - self._last_recv >= self._idle_ms:
            self._finish(now, None, "idle timeout")
            return
        if self._state is _CLOSING and now >= self._linger_until:
            self._finish(now, None, self.close_reason or "closed")
            return
        cc = self._cc
        if 0 <= self._ack_due <= now:  # delayed acks found nothing to ride with: they go alone
            self._ack_due = -1
            if eng.acks_pending():
                if self._held_at >= 0:  # a held ack's time is up
                    eng.hold_first_ack(now - self._held_at)
                    self._held_at = -1
                elif self._lone_acks < LONE_ACKS:
                    self._lone_acks += 1
                    if self._lone_acks == LONE_ACKS and self._hold:
                        eng.ack_frg = 1  # this ack tells the peer, before any is held
                if cc is None:
                    eng.flush(now)
                else:
                    cc.flush(eng, now)
        elif self._held_at >= 0:  # the update below may send the held ack: with its wait
            eng.hold_first_ack(now - self._held_at)
        if cc is None:
            eng.update(now)
        else:
            cc.update(eng, now)
        if eng.state != 0:
            self._die(now)
            return
        self._ep.kick()
        self._post(now)

    def flush_now(self, now: int) -> None:
        """Flush the engine now (the endpoint's tick, for a session that asked)."""
        self._flush_marked = False
        if self._state is _CLOSED:
            return
        eng = self._engine
        if self._held_at >= 0:  # the held ack goes with what this flush sends
            eng.hold_first_ack(now - self._held_at)
            self._held_at = -1
        cc = self._cc
        if cc is None:
            eng.flush(now)
        else:
            cc.flush(eng, now)
        if eng.state != 0:
            self._die(now)
            return
        self._post(now)

    def _post(self, now: int) -> None:
        """Wake writers, finish a lingering close, and schedule the next wake-up."""
        eng = self._engine
        ws = eng.waitsnd()
        if ws < self._low_water:
            w = self._drain_waiter
            if w is not None and not w.done():
                w.set_result(None)
        if self._state is _CLOSING and ws == 0:
            self._finish(now, None, self.close_reason or "closed")
            return
        # near wake-ups (self._near): retransmission, pacing, delayed acks; they come and go with
        # each message. Far ones (this session's own entry): the idle deadline, a close's linger,
        # the path's timers
        if ws and eng.ack_frg:  # it sends data now: no longer receive-only, its acks go at once
            eng.ack_frg = 0
            self._lone_acks = 0
        near = next_wake(eng, self.ack_nodelay, now) if ws or eng.probe or eng.wins_pending() else -1
        cc = self._cc
        if cc is not None and eng.snd_queue:  # the pacer only waits with data queued
            t = cc.next_send(eng, now)
            if t >= 0 and (near < 0 or t < near):
                near = t
        ack_due = self._ack_due
        if ack_due >= 0:
            if not eng.acks_pending():
                self._ack_due = -1  # a flush took them
                self._held_at = -1
                if ws:  # with data: they rode
                    self._lone_acks = 0
            elif near < 0 or ack_due < near:
                near = ack_due
        due = self._last_recv + self._idle_ms if self._idle_ms else -1
        if self._state is _CLOSING and (due < 0 or self._linger_until < due):
            due = self._linger_until
        path_timer = self._path_timer
        if path_timer is not None:
            t = path_timer()
            if due < 0 or t < due:
                due = t
        timers = self._timers
        if near >= 0 and (due < 0 or near < due):
            timers.schedule(self._near, near)
        elif self._near._timer_entry >= 0:
            timers.cancel(self._near)  # the acks came: no retransmission wake-up is left
        if due >= 0:
            timers.schedule(self, due, now)  # a far one stays put when it only moves later

    def hold_acks(self, ms: int) -> bool:
        """Hold lone acks up to ``ms`` once this session only receives, as ``SessionConfig.ack_hold``
        would (a kcprpc server's WELCOME asks it: ``kcprpc.ServerConfig.ack_hold``). False, and
        nothing changed, when the peer did not agree to held acks (compat mode, an older peer), the
        session's own ``ack_hold`` is set (it wins), or ``ms`` is not in 1..250."""
        if not self._engine.hold_aware or self._config.ack_hold or not 0 < ms <= ACK_HOLD_MAX:
            return False
        self._hold = ms
        if self._lone_acks >= LONE_ACKS and not self._engine.ack_frg:
            self._lone_acks = LONE_ACKS - 1  # the next lone ack tells the peer, then they are held
        return True

    def _stop_hold(self, now: int) -> None:
        """Acks go at once again (a loss): the held one, if any, says how long it waited; the rest
        (``frg`` 0) tell the peer that acks no longer wait (docs/wire-format/kcp.md "Held acks")."""
        if self._held_at >= 0:
            self._engine.hold_first_ack(now - self._held_at)
            self._held_at = -1
            self._ack_due = -1
        self._engine.ack_frg = 0
        self._lone_acks = LONE_ACKS - HOLD_QUIET

    def request_flush(self) -> None:
        """Flush the engine at the end of this loop tick."""
        if not self._flush_marked:
            self._flush_marked = True
            self._ep.queue_flush(self)

    def _die(self, now: int) -> None:
        self._finish(now, dead_link_error(self._engine, self.remote_address), "dead link")

    def _finish(self, now: int, exc: BaseException | None, reason: str) -> None:
        """End the session now: wake everyone, leave the listener/endpoint, fold counters."""
        if self._state is _CLOSED:
            return
        self._set_state(_CLOSED)
        self._sink = self._dgram_sink = None
        if exc is not None and self._exc is None:
            self._exc = exc
        self.close_reason = reason
        self._path.finish(now, self.close_code, reason)  # after the state change: callbacks cannot re-enter
        self._timers.cancel(self)
        self._timers.cancel(self._near)
        eng = self._engine
        eng.drop_unsent()  # a slow reader's megabytes go now, not at the next full GC
        eng.rcv_buf.clear()  # and what came above a hole: no input fills it now
        for w in (self._read_waiter, self._drain_waiter):
            if w is not None and not w.done():
                w.set_result(None)
        self._dgrams.wake()
        session_closed(self._live)
        self._host.session_ended(self)
        if not self._closed_fut.done():
            self._closed_fut.set_result(None)

    def peer_closed(self, now: int, code: int, reason: str) -> None:
        """An authenticated CLOSE from the peer (secure mode): end at once, keep what was received."""
        self.close_code = code
        eng = self._engine
        if self._state is _OPEN:
            while (m := eng.recv()) is not None:  # acknowledged data stays readable
                self._rbuf += m
        self._finish(now, None, reason)

    # -- reading ---------------------------------------------------------------------------------
    def set_receiver(self, sink: Callable[[bytes], bool] | None) -> None:
        """Hand received data to ``sink(data)`` in the loop turn that read it, instead of waking a
        task waiting in :meth:`read` (``None``: stop). While nothing is buffered for :meth:`read`,
        what a receive batch of at most ``DIRECT_INPUTS`` datagrams completed goes to the sink, in
        order, in one piece; the sink returns False when it cannot take it now, and it and what
        follows are buffered for :meth:`read` (within the same ``read_buffer`` bound) until
        :meth:`read` has emptied the buffer again. A busier batch is buffered for :meth:`read` too
        (its reader then takes everything that arrived before it ran). End of stream and errors
        are still only reported by :meth:`read`. For the layer above (the mux), which keeps a
        reader task for what does not go to the sink."""
        self._sink = sink

    def set_datagram_receiver(self, receiver: Callable[[bytes], None] | None) -> None:
        """Hand each received OOB datagram to ``receiver(data)`` once its receive batch has been
        read, in that loop turn, instead of queueing it for :meth:`recv_datagram` (``None``: stop;
        what is queued when it is set goes to it first). :meth:`recv_datagram` then only reports
        the session's end. The receiver must not raise."""
        self._dgram_sink = receiver
        if receiver is not None and self._dgrams.queue:
            self._hand_datagrams()

    def _hand_datagrams(self) -> None:
        q = self._dgrams.queue
        while q:
            sink = self._dgram_sink
            if sink is None or self._state is not _OPEN:
                return
            sink(q.popleft())

    async def _wait(self, attr: str) -> None:
        if getattr(self, attr) is not None:
            raise KCPUsageError(f"another coroutine is already waiting in {attr.strip('_')}")
        fut = self._loop.create_future()
        setattr(self, attr, fut)
        try:
            await fut
        finally:
            setattr(self, attr, None)

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (``n < 0``: all that is buffered) once any are available.

        Returns ``b""`` after :meth:`close` or an idle timeout; raises
        :class:`kcp.errors.DeadLinkError` once buffered data is consumed after a dead link.
        """
        if n == 0:
            return b""
        rbuf = self._rbuf
        while not rbuf:
            if self._state is not _OPEN:
                if self._exc is not None:
                    raise self._exc
                return b""
            await self._wait("_read_waiter")
        if n < 0 or n >= len(rbuf):
            data = bytes(rbuf)
            rbuf.clear()
        else:
            data = bytes(rbuf[:n])
            del rbuf[:n]
        self._refill()
        return data

    async def readexactly(self, n: int) -> bytes:
        """Exactly ``n`` bytes; raises :class:`asyncio.IncompleteReadError` if the session ends first."""
        if n < 0:
            raise KCPUsageError("readexactly needs n >= 0")
        rbuf = self._rbuf
        while len(rbuf) < n:
            if self._state is not _OPEN:
                if self._exc is not None:
                    raise self._exc
                partial = bytes(rbuf)
                rbuf.clear()
                raise asyncio.IncompleteReadError(partial, n)
            if len(rbuf) >= self._rlimit:
                self._rlimit = n  # let a large readexactly through the bound
                self._refill()
                continue
            await self._wait("_read_waiter")
        data = bytes(rbuf[:n])
        del rbuf[:n]
        self._rlimit = self._config.read_buffer
        self._refill()
        return data

    def _refill(self) -> None:
        """After the app consumed data: pull more from the engine, reopen its window if shut."""
        eng = self._engine
        if not eng.rcv_queue or self._state is not _OPEN:
            return
        # to the read buffer even with a sink: the caller of read() still holds older data
        self._deliver(False)
        if eng.probe & IKCP_ASK_TELL:
            self.request_flush()

    # -- writing ---------------------------------------------------------------------------------
    def _check_writable(self) -> None:
        if self._state is not _OPEN:
            if self._exc is not None:
                raise self._exc
            raise ConnectionClosedError(
                f"KCP session {self.conv} is closed ({self.close_reason or 'closed'})"
            )

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data`` for reliable, ordered delivery; never blocks (use :meth:`drain`)."""
        self._check_writable()
        n = len(data)
        if not n:
            return
        eng = self._engine
        chunk = eng.mss * 120
        if n <= chunk:
            eng.send(data)
        else:
            view = memoryview(data)
            for i in range(0, n, chunk):
                eng.send(view[i : i + chunk])
        self.request_flush()

    def writelines(self, lines: list[bytes]) -> None:
        """Write each item of ``lines``."""
        for line in lines:
            self.write(line)

    async def drain(self) -> None:
        """Wait until the send queue is below the high-water mark (or raise if the session ended)."""
        self._check_writable()
        if self._engine.waitsnd() < self._high_water:
            return
        while self._engine.waitsnd() >= self._low_water:
            await self._wait("_drain_waiter")
            self._check_writable()

    def write_ready(self) -> bool:
        """True when :meth:`drain` would return at once: open for writing and below high water.

        Lets a layer above (the mux) write synchronously instead of waking a writer task.
        """
        return self._state is _OPEN and self._engine.waitsnd() < self._high_water

    def write_buffer_size(self) -> int:
        """Segments queued or in flight and not yet acknowledged."""
        return self._engine.waitsnd()

    def send_backlog(self) -> int:
        """Bytes written and not yet acknowledged by the peer (queued or in flight), as segments
        times the MSS: exact for the full segments of stream mode, an upper bound otherwise. It
        grows while the peer's receive window is closed (a peer that stops reading)."""
        eng = self._engine
        return eng.waitsnd() * eng.mss

    def receive_held(self) -> int:
        """Bytes received and held for the reader: the read buffer, plus the engine's in-order and
        out-of-order segments (as segments times the MSS, an upper bound). Bounded by
        ``read_buffer`` and twice ``rcv_wnd`` segments."""
        eng = self._engine
        return len(self._rbuf) + (eng.nrcv_que + eng.nrcv_buf) * eng.mss

    def watch_receive(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback`` after a receive batch in which the segments held out of order (above a
        hole, :meth:`receive_held` counts them) grew by :data:`OUT_OF_ORDER_STEP` since it was
        last called; ``None`` stops it. A peer that never fills a hole makes a receiver hold up to
        ``rcv_wnd`` segments this way, and a server wants to know before its next periodic count."""
        self._ooo_watch = callback
        self._ooo_mark = len(self._engine.rcv_buf)

    def send_acked(self) -> int:
        """The engine's ``snd_una`` (u32, wraps): it moves exactly when the peer acknowledges the
        oldest data waiting for it, never because more was written behind it."""
        return self._engine.snd_una

    # -- datagrams -------------------------------------------------------------------------------
    def send_datagram(self, data: bytes) -> None:
        """Send one unreliable out-of-band datagram (kcp-go's OOB packet, flag 0xf3)."""
        self._check_writable()
        limit = self._pipeline.oob_max_size(self._engine.mtu)
        if len(data) > limit:
            raise KCPUsageError(f"datagram of {len(data)} bytes exceeds the limit of {limit}")
        if self._flush_marked:  # keep the order of the caller's write() and send_datagram()
            self._ep.flushq.remove(self)
            self.flush_now(self._timers.now_ms())
        now = self._timers.now_ms()
        self._path.send_datagram(self._pipeline.seal_oob(bytes(data), self.conv), now)
        self._ep.kick()

    def max_datagram_size(self) -> int:
        """Largest payload :meth:`send_datagram` accepts."""
        return self._pipeline.oob_max_size(self._engine.mtu)

    async def recv_datagram(self) -> bytes:
        """The next out-of-band datagram; raises :class:`ConnectionClosedError` once the session ended."""
        return await self._dgrams.get(self._check_writable)

    # -- closing ---------------------------------------------------------------------------------
    def close(self, code: int = 0, message: str = "") -> None:
        """Stop reading and writing; unacknowledged data gets up to ``close_linger`` to arrive.

        In secure mode the peer then gets an authenticated CLOSE carrying ``code`` (a
        :class:`kcp.secure.Reason` or an application value < 65536) and ``message`` (<= 512
        bytes of UTF-8), and ends at once with that reason. Compat mode has no close on the wire:
        the peer notices by its idle timeout, and ``code``/``message`` are only kept locally.
        """
        if self._state is not _OPEN:
            return
        check_close_code(code)
        self._set_state(_CLOSING)
        self.close_code = code
        self.close_reason = message or "closed"
        self._rbuf.clear()
        self._dgrams.clear()
        w = self._read_waiter
        if w is not None and not w.done():
            w.set_result(None)
        self._dgrams.wake()
        w = self._drain_waiter
        if w is not None and not w.done():
            w.set_result(None)
        now = self._timers.now_ms()
        eng = self._engine
        if eng.waitsnd() == 0 or self._config.close_linger <= 0:
            eng.flush(now)
            self._ep.kick()
            self._finish(now, None, self.close_reason)
            return
        self._linger_until = now + int(self._config.close_linger * 1000)
        self.request_flush()
        self._post(now)

    def abort(self, code: int | None = None, message: str = "") -> None:
        """End the session at once, dropping unsent data. In secure mode the peer gets an
        authenticated CLOSE with ``code`` and ``message`` when given (as :meth:`close`)."""
        if code is not None:
            check_close_code(code)
            if self._state is not _CLOSED:
                self.close_code = code
        self._finish(self._timers.now_ms(), None, message or "aborted")

    async def wait_closed(self) -> None:
        """Wait until the session has fully ended."""
        await asyncio.shield(self._closed_fut)

    async def __aenter__(self) -> KCPSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()

    def __repr__(self) -> str:
        return f"<KCPSession conv={self.conv} remote={self.remote_address} {self._state.value}>"

    def _set_state(self, new: SessionState) -> None:
        assert new in SESSION_TRANSITIONS[self._state], f"illegal transition {self._state} -> {new}"
        self._state = new
