"""The KCP listener: one UDP socket, sessions demultiplexed by remote address as kcp-go does.

A datagram from a known address goes to that address's session. A datagram from an unknown
address that, once through the packet layer (decrypt, crc32, FEC framing), holds a well-formed KCP
packet starts a conversation with that packet's conversation id (kcp-go's
``Listener.packetInput``), but not at once: it first becomes a small *pending* entry, answered with
a challenge (a data-less PUSH below the peer's receive window, with a random ``ts``), and turns into
a session when the address acknowledges it, which every ikcp-based engine does by itself. A
spoofed or replayed datagram therefore costs no session, and copies of one datagram from other
addresses are dropped (:mod:`kcp.admission`). On a known address, a KCP packet with another conv is
dropped, unless its ``sn`` is 0: then the peer may have restarted (kcp-go's rule), and the new
conversation replaces the old session once it answered its challenge and the old peer has not
answered liveness probes for ``AdmissionConfig.restart_quiet``. FEC parity shards and OOB packets
never start a conversation.

Every table is bounded: at most ``max_sessions`` sessions, ``backlog`` created but not yet
accepted (half-open), ``AdmissionConfig.max_pending`` pending peers (expiring after
``pending_timeout``), and new sessions per source prefix are rate limited. Datagrams refused for
any reason are dropped and counted (``dropped_table_full``, ``dropped_backlog_full``,
``dropped_no_session``, ``dropped_bad_conv``, ``dropped_replay``, ``dropped_rate_limited``, and
the ``pending_*``/``restart_deferred``/``sessions_replaced`` counters in
:attr:`Listener.counters` and :data:`kcp.stats.SNMP`). Closed sessions leave the table at once.
The address lookup lives in :meth:`Listener._dispatch` only, so a connection-id lookup can
replace it later without touching sessions or engines.

In secure mode (``listen(..., mode="secure")``) that lookup is replaced: the listener's socket
feeds a :class:`kcp.secure_io.SecureDemux`, which finds sessions by connection ID and hands
handshakes to the secure core; the table is then keyed by connection ID. A listener serves one
mode (docs/security.md explains why).
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from kcp.admission import ALIVE, REPLACE, Admission, AdmissionConfig, Pending
from kcp.batch import Address, open_udp_socket
from kcp.config import IOOptions, SessionConfig, Wire
from kcp.crypt import PacketCrypt
from kcp.engine import IKCP_CMD_ACK, IKCP_CMD_PUSH, IKCP_OVERHEAD, IKCP_WND_RCV
from kcp.errors import ConnectionClosedError, KCPUsageError
from kcp.pipeline import KIND_KCP, Pipeline
from kcp.session import KCPSession, _Endpoint, _make_crypt, _wire_keywords
from kcp.stats import SNMP, Counters

if TYPE_CHECKING:
    from kcp.secure import SecureConfig, SecureServer
    from kcp.secure_io import SecureDemux

__all__ = ["AdmissionConfig", "Listener", "listen"]

_HDR = struct.Struct("<IBBHIIII")  # conv cmd frg wnd ts sn una len
_CHALLENGE_SN = 0xFFFFFFFF  # the sn of a pending peer's challenge: just below a fresh receive window
_snmp: Any = SNMP

AcceptCallback = Callable[[KCPSession], "Awaitable[None] | None"]


def _kcp_conv(packet: bytes) -> int:
    """The conv of a well-formed KCP packet (every segment parses, same conv, known cmd), else -1."""
    n = len(packet)
    if n < IKCP_OVERHEAD:
        return -1
    off = 0
    conv = -1
    unpack = _HDR.unpack_from
    while n - off >= IKCP_OVERHEAD:
        c, cmd, _frg, _wnd, _ts, _sn, _una, ln = unpack(packet, off)
        if (conv >= 0 and c != conv) or cmd < 81 or cmd > 84 or n - off - IKCP_OVERHEAD < ln:
            return -1
        conv = c
        off += IKCP_OVERHEAD + ln
    return conv


def _acks_challenge(packet: bytes, challenge: int) -> bool:
    """True if the KCP packet acknowledges our challenge segment (``sn`` and ``ts`` echoed)."""
    n = len(packet)
    off = 0
    unpack = _HDR.unpack_from
    while n - off >= IKCP_OVERHEAD:
        _c, cmd, _frg, _wnd, ts, sn, _una, ln = unpack(packet, off)
        if cmd == IKCP_CMD_ACK and sn == _CHALLENGE_SN and ts == challenge:
            return True
        off += IKCP_OVERHEAD + ln
    return False


class Listener:
    """Accepts KCP sessions on one UDP address; iterate it (``async for``) or pass ``on_accept``."""

    def __init__(
        self,
        ep: _Endpoint,
        config: SessionConfig,
        crypt: PacketCrypt | None,
        data_shards: int,
        parity_shards: int,
        *,
        max_sessions: int,
        backlog: int,
        on_accept: AcceptCallback | None,
        rng: Callable[[int], bytes],
        secure: SecureConfig | None = None,
        authorize: Callable[[bytes, bytes | None, Any], str | None] | None = None,
        admission: AdmissionConfig | None = None,
    ) -> None:
        self._ep = ep
        self._loop = ep.loop
        self.config = config
        self._crypt = crypt
        self._data_shards = data_shards
        self._parity_shards = parity_shards
        self.max_sessions = max_sessions
        self.backlog = backlog
        self._on_accept = on_accept
        self._rng = rng
        self.counters: Counters = ep.counters
        self._c: Any = ep.counters
        # the probe only learns the conv of a first packet: crypt check, no FEC state kept
        self._probe = Pipeline(crypt, 0, 0, self.counters, rng)
        self._sessions: dict[Any, KCPSession] = {}  # by remote address (compat) or connection ID (secure)
        self._pending: deque[KCPSession] = deque()
        self._accept_waiter: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._closed_fut: asyncio.Future[None] = self._loop.create_future()
        self._admission = Admission(admission or AdmissionConfig())
        self._timer_entry: tuple[int, int] | None = None  # the pending table's expiry (TimerTarget)
        self._evicted: list[Address] = []  # evicted pending peers whose cached addresses go next tick
        self._timer_input = ep
        self._demux: SecureDemux | None = None
        if secure is not None:
            from kcp.secure_io import SecureDemux

            self._demux = SecureDemux(self, secure, rng, authorize)
            ep.dispatch = self._demux.dispatch
        else:
            ep.dispatch = self._dispatch

    # -- properties ------------------------------------------------------------------------------
    @property
    def address(self) -> Address:
        """The local address (host, port, ...)."""
        return self._ep.sock.getsockname()

    @property
    def sessions(self) -> dict[Any, KCPSession]:
        """A copy of the session table: by remote address (compat) or connection ID (secure)."""
        return dict(self._sessions)

    @property
    def mode(self) -> str:
        """``"secure"`` or ``"compat"``."""
        return "secure" if self._demux is not None else "compat"

    @property
    def secure_server(self) -> SecureServer | None:
        """The secure core (its ``counters``, ``half_open``, ``state_sizes()``), or None in compat mode."""
        return self._demux.server if self._demux is not None else None

    @property
    def draining(self) -> bool:
        """True after :meth:`drain` or :meth:`goaway`."""
        return self._demux is not None and self._demux.draining

    def drain(self) -> None:
        """Secure mode: refuse new handshakes from now on, with a clear reason the client sees
        (``server is going away (draining)``); existing sessions are untouched. Compat mode has no
        handshake to refuse: there, stop accepting instead."""
        if self._demux is None:
            raise KCPUsageError("drain() needs a secure-mode listener (compat mode has no handshake)")
        self._demux.draining = True
        self._demux.update_load()

    def goaway(self, code: int = 9, message: str = "server is draining") -> None:
        """Secure mode: :meth:`drain`, and every session gets an authenticated GOAWAY (its peer's
        ``goaway_received`` and event callbacks). Sessions stay open so calls in flight finish; the
        mux/RPC layers act on the event (kcprpc's client stops starting calls on that connection).
        """
        self.drain()
        for s in list(self._sessions.values()):
            if not s.is_closing():
                s.goaway(code, message)

    def __len__(self) -> int:
        return len(self._sessions)

    @property
    def admission(self) -> AdmissionConfig:
        """The compat-mode admission bounds (pending peers, rate limit, restarts)."""
        return self._admission.config

    def state_sizes(self) -> dict[str, int]:
        """Sizes of every per-peer table this listener keeps (they return to 0 when peers go)."""
        out = {"sessions": len(self._sessions), "backlog": len(self._pending)}
        out.update(self._admission.sizes())
        out["recv_addr_cache"], out["send_addr_cache"] = self._ep.io.cache_sizes()
        return out

    @property
    def stats(self) -> dict[str, int]:
        """Listener counters (socket I/O and drops) plus table sizes."""
        # the process-wide secure_* fields stay out: secure mode's own counters follow, by their names
        out = {k: v for k, v in self.counters.snapshot().items() if not k.startswith("secure_")}
        out["sessions"] = len(self._sessions)
        out["backlog"] = len(self._pending)
        out["pending"] = len(self._admission)
        out["tx_dropped"] = self._ep.tx_dropped
        if self._demux is not None:
            for k, v in self._demux.server.counters.snapshot().items():
                out["secure_" + k] = v
        return out

    # -- demux -----------------------------------------------------------------------------------
    def _dispatch(self, data: bytes, addr: Address, now: int) -> None:
        s = self._sessions.get(addr)
        if s is not None:
            s._input(data, now)
        else:
            self._new_peer(data, addr, now)

    def _new_peer(self, data: bytes, addr: Address, now: int) -> None:
        """A datagram from an address without a session: hold, promote or drop it (kcp.admission)."""
        if self._closed:
            return
        p = self._admission.pending.get(addr)
        if p is None:
            self._first_datagram(data, addr, now, None, -1)
        else:
            self._pending_datagram(p, data, addr, now, None, None)

    def _count(self, name: str) -> None:
        setattr(self._c, name, getattr(self._c, name) + 1)
        setattr(_snmp, name, getattr(_snmp, name) + 1)

    def _probe_packet(self, data: bytes, now: int) -> tuple[int, bytes]:
        """The conv and the plaintext of the datagram's own KCP packet (decrypted, crc checked), or
        ``(-1, b"")`` (OOB packets, FEC parity shards, garbage). Only a KCP packet starts a
        conversation."""
        for kind, payload in self._probe.open(data, now):
            if kind == KIND_KCP:
                return _kcp_conv(payload), payload
            break
        return -1, b""

    def _first_datagram(
        self, data: bytes, addr: Address, now: int, old: KCPSession | None, conv: int
    ) -> None:
        """The first datagram of a conversation from ``addr``: a pending entry, not a session.

        ``old`` is the live session at ``addr`` when this is a restart (``conv`` is then its new
        conv; otherwise -1: not known yet).
        """
        adm = self._admission
        digest = hash(data)
        if adm.is_replay(digest, addr):
            self._count("dropped_replay")
            if old is None:
                self._ep.io.forget(addr)
            return
        if old is None:
            if self._room_for_one() is not None:
                self._ep.io.forget(addr)
                return
            conv = self._probe_packet(data, now)[0]
            if conv < 0:
                self._count("dropped_no_session")
                self._ep.io.forget(addr)
                return
        self._expire(now)
        # the ts the peer must echo: random, and 2**30..2**30+2**29 ms ahead of our clock, so that
        # its ack, fed to the new session's engine, is never taken for an RTT sample (ikcp only
        # samples acks whose ts is not in the future)
        challenge = (now + (1 << 30) + (int.from_bytes(self._rng(4), "little") >> 3)) & 0xFFFFFFFF
        for gone in adm.add(addr, conv, data, digest, now, old is not None, challenge):
            self._count("pending_evicted")
            self._evicted.append(gone)  # forgotten by the timer, after its challenge went out
        self._count("pending_created")
        self._send_challenge(adm.pending[addr], addr, now)
        if old is not None:
            self._poke(now)  # is the live session's peer still there?
        self._arm_expiry()

    def _pending_datagram(
        self,
        p: Pending,
        data: bytes,
        addr: Address,
        now: int,
        old: KCPSession | None,
        probed: tuple[int, bytes] | None,
    ) -> bool:
        """Another datagram from a pending peer: promote the peer once it answered the challenge;
        True if ``old`` (the live session at ``addr``, for a restart candidate) was replaced.

        ``probed`` is the datagram's (conv, KCP packet) when the caller already opened it.
        """
        adm = self._admission
        if data == p.first:
            self._count("dropped_replay")
            return False
        digest = hash(data)
        if adm.is_replay(digest, addr):
            self._count("dropped_replay")
            return False
        conv, packet = self._probe_packet(data, now) if probed is None else probed
        if conv >= 0 and conv != p.conv:
            self._count("dropped_bad_conv")
            return False
        if conv < 0 or not _acks_challenge(packet, p.challenge):
            # the peer's own traffic before its answer (its next segments, a retransmission, OOB
            # packets, FEC parity): kept for its session, bounded (its pipeline sorts it out); and
            # the challenge goes again in case it or its answer was lost
            if not adm.hold(p, data):
                self._count("pending_overflow")
            if conv >= 0:
                self._send_challenge(p, addr, now)
            return False
        # proven: the peer at this address received our challenge and acknowledged it
        if old is not None:
            verdict = adm.restart_verdict(p, old._last_valid, old.is_closing(), now)
            if verdict != REPLACE:
                self._count("restart_deferred")
                if verdict == ALIVE:  # the old peer answered: this is not its restart
                    adm.drop(addr)
                    self._arm_expiry()
                return False
        if not adm.allow(addr, now):
            self._count("dropped_rate_limited")
            return False
        if self._room_for_one(replacing=old is not None) is not None:
            return False
        if old is not None:
            old._finish(now, None, "replaced by a new conversation")
            self._count("sessions_replaced")
        p = adm.take(addr, digest)
        self._count("pending_promoted")
        s = KCPSession(
            self._ep,
            p.conv,
            addr,
            self.config,
            self._crypt,
            self._data_shards,
            self._parity_shards,
            listener=self,
            rng=self._rng,
        )
        self._register(addr, s)
        # what the peer sent before its answer, then the answer (its ack of the challenge matches
        # nothing in the engine; the rest of that datagram, such as new data, is the peer's)
        for held in (*p.datagrams(), data):
            if s.closed:
                break
            s._input(held, now)
        self._arm_expiry()
        return True

    def _send_challenge(self, p: Pending, addr: Address, now: int) -> None:
        """Send a pending peer its challenge: a PUSH with no data, ``sn`` one before the peer's
        next expected segment (``0xFFFFFFFF`` for a fresh one) and a random ``ts``. Every ikcp
        engine (kcp-go, C ikcp, ours) acknowledges a segment below its receive window, echoing
        ``sn`` and ``ts``, and delivers nothing; so only a peer that receives what we send to its
        address can answer, which a spoofed source cannot. The challenge is never larger than the
        datagram that caused it; it goes again at most every 100 ms."""
        if now < p.next_challenge:
            return
        p.next_challenge = now + 100
        wnd = min(max(self.config.rcv_wnd, IKCP_WND_RCV), 0xFFFF)
        pkt = _HDR.pack(p.conv, IKCP_CMD_PUSH, 0, wnd, p.challenge, _CHALLENGE_SN, 0, 0)
        for datagram in self._probe.seal(pkt, now):
            self._ep.tx.append((datagram, addr))
        self._ep.kick()

    def _expire(self, now: int) -> None:
        for addr, _p in self._admission.expire(now):
            self._count("pending_expired")
            if addr not in self._sessions:
                self._ep.io.forget(addr)

    def _poke(self, now: int) -> None:
        """Send the liveness probes that restart candidates ask of the live sessions at their address."""
        for addr in self._admission.due_pokes(now):
            s = self._sessions.get(addr)
            if s is not None:
                s._probe_peer()

    def _arm_expiry(self) -> None:
        due = self._admission.next_due()
        if self._evicted:
            soon = self._ep.timers.now_ms() + 1
            due = soon if due is None or soon < due else due
        if due is not None:
            self._ep.timers.schedule(self, due)
        else:
            self._ep.timers.cancel(self)

    def _on_timer(self, now: int) -> None:
        """The timer heap's call: expire pending peers (so memory is released when a flood stops)
        and send the liveness probes of restart candidates."""
        if self._closed:
            return
        if self._evicted:
            evicted, self._evicted = self._evicted, []
            pending = self._admission.pending
            for addr in evicted:
                if addr not in self._sessions and addr not in pending:
                    self._ep.io.forget(addr)
        self._expire(now)
        self._poke(now)
        self._arm_expiry()

    def _room_for_one(self, replacing: bool = False) -> str | None:
        """None if one more session fits (``replacing``: one that takes a live one's place); else
        count the drop and say why."""
        c = self._c
        if len(self._sessions) - replacing >= self.max_sessions:
            c.dropped_table_full += 1
            _snmp.dropped_table_full += 1
            return "session table full"
        if self._on_accept is None and len(self._pending) >= self.backlog:
            c.dropped_backlog_full += 1
            _snmp.dropped_backlog_full += 1
            return "accept backlog full"
        return None

    def _register(self, key: Any, s: KCPSession) -> None:
        """Put a new session in the table (by address or connection ID) and hand it out."""
        self._sessions[key] = s
        if self._on_accept is not None:
            self._run_callback(s)
        else:
            self._pending.append(s)
            w = self._accept_waiter
            if w is not None and not w.done():
                w.set_result(None)

    def _conv_mismatch(self, s: KCPSession, datagram: bytes, packet: bytes, now: int) -> bool:
        """A KCP packet with a foreign conv reached ``s``; True if ``s`` was replaced.

        kcp-go's restart rule (another conv with ``sn == 0`` from a known address: the peer
        restarted) no longer acts on one packet: the new conversation becomes a pending restart
        candidate, which replaces ``s`` only once it answered its challenge and ``s`` has
        accepted nothing from its own peer (which it probes) for ``restart_quiet``
        (kcp.admission). Until then ``s`` stays.
        """
        conv, _cmd, _frg, _wnd, _ts, sn, _una, _ln = _HDR.unpack_from(packet, 0)
        if self._demux is None and conv != s.conv and not self._closed:
            addr = s.remote_address
            p = self._admission.pending.get(addr)
            if p is not None:
                if p.conv == conv:
                    return self._pending_datagram(p, datagram, addr, now, s, (conv, packet))
            elif sn == 0 and _kcp_conv(packet) >= 0:
                self._first_datagram(datagram, addr, now, s, conv)
                return False
        self._c.dropped_bad_conv += 1
        _snmp.dropped_bad_conv += 1
        return False

    def _forget(self, s: KCPSession) -> None:
        sec = s.secure
        key = sec.local_cid if sec is not None else s.remote_address
        if self._sessions.get(key) is s:
            del self._sessions[key]
            if sec is None:
                self._admission.session_closed(key)
                if not self._ep.closed:
                    self._ep.io.forget(key)
        if self._demux is not None and sec is not None:
            self._demux.forget(sec.local_cid)

    def _run_callback(self, s: KCPSession) -> None:
        assert self._on_accept is not None
        try:
            result = self._on_accept(s)
        except Exception as exc:
            self._loop.call_exception_handler({"message": "KCP accept callback failed", "exception": exc})
            s.abort()
            return
        if asyncio.iscoroutine(result):
            task = self._loop.create_task(result)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    # -- accepting -------------------------------------------------------------------------------
    async def accept(self) -> KCPSession:
        """The next new session; raises :class:`ConnectionClosedError` once the listener is closed."""
        if self._on_accept is not None:
            raise KCPUsageError("this listener hands sessions to its on_accept callback")
        while True:
            while self._pending:
                s = self._pending.popleft()
                if not s.closed:
                    return s
            if self._closed:
                raise ConnectionClosedError("listener closed")
            if self._accept_waiter is not None:
                raise KCPUsageError("another coroutine is already waiting in accept()")
            fut = self._loop.create_future()
            self._accept_waiter = fut
            try:
                await fut
            finally:
                self._accept_waiter = None

    def __aiter__(self) -> AsyncIterator[KCPSession]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[KCPSession]:
        while True:
            try:
                yield await self.accept()
            except ConnectionClosedError:
                return

    # -- closing ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop accepting, end every session and close the socket."""
        if self._closed:
            return
        self._closed = True
        now = self._ep.timers.now_ms()
        for s in list(self._sessions.values()):
            s._engine.flush(now)
            s._finish(now, None, "listener closed")
        self._sessions.clear()
        self._pending.clear()
        self._ep.timers.cancel(self)
        self._admission.clear()
        self._evicted.clear()
        if self._demux is not None:
            self._demux.close()
        self._ep.close()
        w = self._accept_waiter
        if w is not None and not w.done():
            w.set_result(None)
        if not self._closed_fut.done():
            self._closed_fut.set_result(None)

    async def wait_closed(self) -> None:
        """Wait for :meth:`close` and for the accept callbacks still running."""
        await asyncio.shield(self._closed_fut)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> Listener:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()

    def __repr__(self) -> str:
        return f"<Listener {self.address} sessions={len(self._sessions)}>"


async def listen(
    host: str,
    port: int,
    wire: Wire | None = None,
    *,
    session: SessionConfig | None = None,
    io: IOOptions | None = None,
    mode: str = "compat",
    crypt: str | PacketCrypt | None = None,
    key: bytes | str | None = None,
    data_shards: int = 0,
    parity_shards: int = 0,
    config: SessionConfig | None = None,
    max_sessions: int = 16384,
    backlog: int = 1024,
    admission: AdmissionConfig | None = None,
    on_accept: AcceptCallback | None = None,
    reuse_port: bool = False,
    mmsg: bool | None = None,
    gso: bool | None = None,
    rng: Callable[[int], bytes] = os.urandom,
    static_private_key: bytes | None = None,
    psk: bytes | None = None,
    authorize: Callable[[bytes, bytes | None, Any], str | None] | None = None,
    secure_options: dict[str, Any] | None = None,
    **options: Any,
) -> Listener:
    """Listen for KCP sessions on ``host:port`` (kcp-go's ``ListenWithOptions``).

    ``crypt``/``key``/``data_shards``/``parity_shards`` must match the clients'. Sessions are
    returned by ``async for session in listener`` / :meth:`Listener.accept`, or handed to
    ``on_accept(session)`` (a coroutine function runs as a task). ``reuse_port`` sets
    ``SO_REUSEPORT`` so several processes can share the port. Further keyword arguments override
    :class:`SessionConfig` fields for every accepted session.

    In compat mode ``admission`` (:class:`kcp.admission.AdmissionConfig`) bounds what peers that
    have not proved themselves may cost: the pending table, the rate of new sessions per source
    prefix, and when a new conversation may replace a live one from the same address.

    ``mode="compat"`` (the default at this level) is kcp-go's packet format. ``mode="secure"``
    accepts only kcprpc's secure handshake: ``static_private_key`` is the server identity that
    clients pin (:func:`kcp.secure.generate_keypair`), ``key`` a passphrase str or a 32-byte PSK
    (or ``psk=``); ``authorize(token, client_static_public, addr)`` returns None to accept or a
    refusal message the client sees. Here ``data_shards``/``parity_shards``, ``mtu`` and windows
    are what the server accepts; each client's proposal is negotiated. ``secure_options``
    overrides other :class:`kcp.secure.SecureConfig` fields (``retry_threshold``,
    ``max_half_open``, ``rekey_after_packets``, ``fec_strict`` ...).
    """
    if wire is not None:  # the new description (skeleton adapter: H-kcp replaces the keywords below)
        kw = _wire_keywords(wire, session, io, client=False)
        return await listen(
            host,
            port,
            max_sessions=max_sessions,
            backlog=backlog,
            admission=admission,
            on_accept=on_accept,
            rng=rng,
            **kw,
        )
    if max_sessions < 1 or backlog < 1:
        raise KCPUsageError("max_sessions and backlog must be >= 1")
    loop = asyncio.get_running_loop()
    cfg = (config or SessionConfig()).with_options(**options)
    secure_cfg: SecureConfig | None = None
    if mode == "secure":
        if crypt is not None:
            raise KCPUsageError("crypt= is a compat-mode option (secure mode always uses an AEAD)")
        from kcp.secure_io import server_config

        secure_cfg = server_config(
            cfg,
            key=key,
            psk=psk,
            static_private_key=static_private_key,
            data_shards=data_shards,
            parity_shards=parity_shards,
            secure_options=secure_options,
        )
        packet_crypt = None
    elif mode == "compat":
        if static_private_key is not None or psk is not None or authorize is not None:
            raise KCPUsageError("static_private_key/psk/authorize need mode='secure'")
        packet_crypt = _make_crypt(crypt, key)
    else:
        raise KCPUsageError(f"mode must be 'secure' or 'compat', not {mode!r}")
    Pipeline(packet_crypt, data_shards, parity_shards, Counters())  # validates the shard counts now
    sock = open_udp_socket(host, port, reuse_port=reuse_port)
    try:
        ep = _Endpoint(loop, sock, Counters(), mmsg=mmsg, gso=gso)
    except BaseException:
        sock.close()
        raise
    return Listener(
        ep,
        cfg,
        packet_crypt,
        data_shards,
        parity_shards,
        max_sessions=max_sessions,
        backlog=backlog,
        on_accept=on_accept,
        rng=rng,
        secure=secure_cfg,
        authorize=authorize,
        admission=admission,
    )
