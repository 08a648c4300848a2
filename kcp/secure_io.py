"""Secure wire mode under the asyncio sessions: the glue between :mod:`kcp.secure` and
:mod:`kcp.session` / :mod:`kcp.listener`.

One concern: move datagrams between the UDP endpoint, the sans-I/O secure core and a
:class:`kcp.session.KCPSession`.

* :class:`SecureLink` sits under one session. Outgoing, every UDP payload the packet pipeline
  makes (KCP packet, FEC shard, OOB datagram; the pipeline runs without a cipher) is sealed by the
  :class:`kcp.secure.SecureConnection` and sent to ``conn.peer_addr`` (never a stored address, so
  migration moves the traffic). Incoming, ``conn.open`` authenticates the datagram, then the
  payload goes into the session as in compat mode. The connection's events (path change,
  validation, key update, CLOSE, GOAWAY) are acted on here and handed to the session's event
  callbacks; its timer (path probes, old-key expiry) rides on the session's timer-heap entry.
* :class:`SecureDemux` replaces the listener's address lookup: transport packets are found by
  connection ID (``SecureServer.connection_for``), everything else goes to ``SecureServer.receive``
  (initiations, cookies, confirmations).
* :func:`secure_handshake` runs the client side of the handshake on a dialled endpoint and raises
  the core's :class:`kcp.secure.HandshakeError` (timeout, PSK mismatch, refusal with the server's
  reason) out of :func:`kcp.dial`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from kcp.batch import Address
from kcp.errors import KCPUsageError
from kcp.logutil import RateLimitedLog
from kcp.pipeline import Pipeline
from kcp.secure import (
    ConnectionClosed,
    Event,
    GoAwayReceived,
    HandshakeError,
    KeyUpdated,
    PathChanged,
    PathFailed,
    PathValidated,
    Reason,
    SecureClient,
    SecureConfig,
    SecureConnection,
    SecureConnectionClosed,
    SecureCounters,
    SecureServer,
)
from kcp.secure.config import outside_policy
from kcp.secure.connection import reason_text
from kcp.secure.packet import CID_LEN, MIN_TRANSPORT, TRANSPORT_TYPES
from kcp.session import _CLOSED, KCPSession, SessionConfig, _Endpoint
from kcp.stats import SNMP, Counters

if TYPE_CHECKING:
    from kcp.listener import Listener

__all__ = [
    "SECURE_OVERHEAD",
    "SecureDemux",
    "SecureLink",
    "client_config",
    "secure_handshake",
    "server_config",
]

_CID_END = 1 + CID_LEN
SECURE_OVERHEAD = MIN_TRANSPORT
"""Bytes a transport packet adds to its payload: header 17 + frame type 1 + AEAD tag 16."""

EventCallback = Callable[[Event], object]

SNMP_SECURE: dict[str, tuple[str, ...]] = {
    "secure_handshakes": ("handshakes_completed", "accepted"),
    "secure_handshake_failures": ("handshakes_failed",),
    "secure_bad_mac1": ("bad_mac1",),
    "secure_retries_sent": ("retries_sent",),
    "secure_refused": ("refused", "accept_failed"),
    "secure_half_open_dropped": ("half_open_evicted", "half_open_expired"),
    "secure_decrypt_errors": ("decrypt_errors", "handshake_decrypt_errors"),
    "secure_replays": ("replay_duplicates", "replay_too_old", "initiation_replays"),
    "secure_unknown_cid": ("unknown_cid",),
    "secure_key_updates": ("key_updates",),
    "secure_path_changes": ("path_changes",),
    "secure_path_validated": ("path_validated",),
    "secure_path_failed": ("path_failed",),
    "secure_closes_sent": ("closes_sent",),
    "secure_closes_received": ("closes_received",),
    "secure_goaways_sent": ("goaways_sent",),
    "secure_goaways_received": ("goaways_received",),
    "secure_stateless_resets_sent": ("stateless_resets_sent",),
    "secure_stateless_resets_received": ("stateless_resets_received",),
}
"""Which :class:`kcp.secure.SecureCounters` feed each process-wide ``secure_*`` field of
:class:`kcp.stats.Counters` (``kcp.SNMP`` / ``kcp.snmp()``)."""

_snmp_any: Any = SNMP
_live_demux: weakref.WeakSet[SecureDemux] = weakref.WeakSet()


def add_secure_counters(total: dict[str, int], sc: SecureCounters) -> None:
    """Add ``sc`` into the ``secure_*`` entries of a counters dict (``kcp.snmp()``'s)."""
    for field, sources in SNMP_SECURE.items():
        total[field] += sum(getattr(sc, f) for f in sources)


def fold_secure_counters(sc: SecureCounters) -> None:
    """Add ``sc`` into :data:`kcp.stats.SNMP` (once, when its owner ends)."""
    for field, sources in SNMP_SECURE.items():
        v = sum(getattr(sc, f) for f in sources)
        if v:
            setattr(_snmp_any, field, getattr(_snmp_any, field) + v)


def live_secure_totals(total: dict[str, int]) -> None:
    """Add what live secure listeners' handshake cores counted so far (``kcp.snmp()``)."""
    for demux in list(_live_demux):
        add_secure_counters(total, demux.server.counters)


# what a local end sends as the CLOSE reason, by the session's close reason
_LOCAL_CODES = {
    "idle timeout": Reason.IDLE_TIMEOUT,
    "listener closed": Reason.GOING_AWAY,
    "dead link": Reason.PROTOCOL_ERROR,
    "aborted": Reason.APPLICATION,
}
_CLOSE_COPIES = 2  # a lost CLOSE costs the peer an idle timeout: send it twice
_MAX_WINDOW = 65535  # the handshake carries windows as u16
_MAX_SESSION_MTU = 9000  # SessionConfig's limit
_WARN_REFUSALS = (Reason.PARAMS_REFUSED, Reason.VERSION_MISMATCH, Reason.BAD_TOKEN)
LOG_BURST = 10
"""Records per kind and listener that :class:`SecureDemux` logs per ``LOG_INTERVAL`` seconds."""
LOG_INTERVAL = 60.0


# ---------------------------------------------------------------------------------- configuration


def _auth_material(key: bytes | str | None, psk: bytes | None) -> tuple[bytes | None, str | None]:
    if psk is not None and key is not None:
        raise KCPUsageError("give key= (passphrase or 32-byte PSK) or psk=, not both")
    if isinstance(key, str):
        return None, key
    if key is not None:
        psk = bytes(key)
    if psk is not None and len(psk) != 32:
        raise KCPUsageError("a secure-mode PSK must be 32 bytes (or pass a passphrase str as key=)")
    return psk, None


def _merge(cfg: SecureConfig, options: Mapping[str, Any] | None) -> SecureConfig:
    if not options:
        return cfg
    unknown = set(options) - {f.name for f in dataclasses.fields(SecureConfig)}
    if unknown:
        raise KCPUsageError(f"unknown secure option(s): {', '.join(sorted(unknown))}")
    cfg = dataclasses.replace(cfg, **options)
    if cfg.mtu > _MAX_SESSION_MTU:  # it could be agreed, and then no session could be built with it
        raise KCPUsageError(f"secure mtu {cfg.mtu} is above what a KCP session supports ({_MAX_SESSION_MTU})")
    return cfg


def client_config(
    session_cfg: SessionConfig,
    *,
    key: bytes | str | None,
    psk: bytes | None,
    server_public_key: bytes | None,
    static_private_key: bytes | None,
    token: bytes | str,
    data_shards: int,
    parity_shards: int,
    handshake_timeout: float | None,
    secure_options: Mapping[str, Any] | None,
) -> SecureConfig:
    """The client's :class:`SecureConfig` from :func:`kcp.dial`'s keywords (validated)."""
    psk_bytes, passphrase = _auth_material(key, psk)
    if server_public_key is None and psk_bytes is None and passphrase is None:
        raise KCPUsageError(
            "secure mode needs server_public_key= (the server's pinned X25519 key) and/or "
            "key= (a passphrase str or a 32-byte PSK)"
        )
    extra: dict[str, Any] = {}
    if handshake_timeout is not None:
        extra["handshake_timeout_ms"] = max(1, int(handshake_timeout * 1000))
    cfg = SecureConfig(
        static_key=static_private_key,
        server_public_key=server_public_key,
        psk=psk_bytes,
        passphrase=passphrase,
        token=token.encode() if isinstance(token, str) else bytes(token),
        mtu=session_cfg.mtu,
        min_mtu=min(576, session_cfg.mtu),
        snd_wnd=session_cfg.snd_wnd,
        rcv_wnd=session_cfg.rcv_wnd,
        fec=(data_shards, parity_shards) if data_shards > 0 and parity_shards > 0 else (0, 0),
        **extra,
    )
    return _merge(cfg, secure_options)


def server_config(
    session_cfg: SessionConfig,
    *,
    key: bytes | str | None,
    psk: bytes | None,
    static_private_key: bytes | None,
    data_shards: int,
    parity_shards: int,
    secure_options: Mapping[str, Any] | None,
) -> SecureConfig:
    """The listener's :class:`SecureConfig` from :func:`kcp.listen`'s keywords (validated)."""
    psk_bytes, passphrase = _auth_material(key, psk)
    if static_private_key is None and psk_bytes is None and passphrase is None:
        raise KCPUsageError(
            "secure mode needs static_private_key= (clients pin its public key) and/or "
            "key= (a passphrase str or a 32-byte PSK)"
        )
    cfg = SecureConfig(
        static_key=static_private_key,
        psk=psk_bytes,
        passphrase=passphrase,
        mtu=session_cfg.mtu,
        min_mtu=min(576, session_cfg.mtu),
        # the listener's own windows are its policy: no client gets more in flight or buffered
        snd_wnd=min(session_cfg.snd_wnd, _MAX_WINDOW),
        rcv_wnd=min(session_cfg.rcv_wnd, _MAX_WINDOW),
        fec=(data_shards, parity_shards) if data_shards > 0 and parity_shards > 0 else (0, 0),
    )
    return _merge(cfg, secure_options)


def conv_of(conn: SecureConnection) -> int:
    """The KCP conv both ends derive from the handshake (no conv travels in secure mode)."""
    return int.from_bytes(conn.handshake_hash[:4], "little")


# ---------------------------------------------------------------------------------- per session


class SecureLink:
    """The secure connection under one session (see the module docstring)."""

    __slots__ = (
        "callbacks",
        "conn",
        "held_back",
        "overhead",
        "rekey_due",
        "server",
        "session",
    )

    def __init__(self, conn: SecureConnection, now: int, server: SecureServer | None = None) -> None:
        self.conn = conn
        self.server = server
        self.rekey_due = now + conn._cfg.rekey_after_ms  # time-based key update, even when idle
        self.overhead = SECURE_OVERHEAD
        self.held_back = 0  # datagrams not sent to an unvalidated new path (KCP resends them)
        self.callbacks: list[EventCallback] = []
        self.session: KCPSession | None = None

    # -- sending ---------------------------------------------------------------------------------
    def make_output(
        self,
        pipeline: Pipeline,
        plain: bool,
        counters: Counters,
        now_ms: Callable[[], int],
        tx_append: Callable[[tuple[bytes, Address]], None],
    ) -> Callable[[bytes], None]:
        """The engine's output: pipeline (FEC) → seal → the endpoint's send batch, to the current path."""
        conn = self.conn
        seal = conn.seal
        pseal = pipeline.seal
        c: Any = counters
        link = self

        def output(packet: bytes) -> None:
            now = now_ms()
            try:
                for payload in (packet,) if plain else pseal(packet, now):
                    d = seal(payload, now)
                    if not conn.path_validated and not conn.can_send(len(d)):
                        link.held_back += 1  # new path not validated yet: KCP retransmits later
                        continue
                    tx_append((d, conn.peer_addr))
                    c.out_pkts += 1
                    c.bytes_sent += len(d)
            except SecureConnectionClosed:
                return

        return output

    def send_payload(self, payload: bytes, tx: list[tuple[bytes, Address]], now: int) -> None:
        """Seal one pipeline payload (an OOB datagram) and queue it."""
        conn = self.conn
        d = conn.seal(payload, now)
        if conn.path_validated or conn.can_send(len(d)):
            tx.append((d, conn.peer_addr))
        else:
            self.held_back += 1

    def _flush_control(self, now: int) -> None:
        s = self.session
        if s is None:
            return
        out = self.conn.datagrams_to_send(now)
        if out:
            s._ep.tx.extend(out)
            s._ep.kick()

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
        if conn._events:
            self._events(now)
        if conn._outbox:
            self._flush_control(now)
        s = self.session
        if s is not None and s._state != _CLOSED:
            if payload is not None:
                s._input(payload, now)
            elif authentic:
                s._last_recv = now  # authenticated control traffic (PING, path probes) keeps it alive
        return authentic

    def _events(self, now: int) -> None:
        conn = self.conn
        s = self.session
        while (ev := conn.next_event()) is not None:
            if s is not None:
                if isinstance(ev, PathChanged | PathFailed):
                    s.remote_address = conn.peer_addr
                elif isinstance(ev, PathValidated):
                    s._mark_flush()  # segments held back from the new path may go now
                elif isinstance(ev, GoAwayReceived):
                    s.goaway_received = (ev.code, ev.message)
                elif isinstance(ev, KeyUpdated):
                    self.rekey_due = now + conn._cfg.rekey_after_ms
            for cb in tuple(self.callbacks):
                try:
                    cb(ev)
                except Exception as exc:
                    loop = s._loop if s is not None else asyncio.get_event_loop()
                    loop.call_exception_handler(
                        {"message": "KCP session event callback failed", "exception": exc, "event": ev}
                    )
            if isinstance(ev, ConnectionClosed) and ev.by_peer and s is not None:
                s._peer_closed(now, ev.code, "closed by peer: " + reason_text(ev.code, ev.message))

    # -- timers ----------------------------------------------------------------------------------
    def timer(self) -> int:
        """When the session should wake for the connection: probes, old-key expiry, key update."""
        t = self.conn.get_timer()
        return self.rekey_due if t is None or self.rekey_due < t else t

    def on_timer(self, now: int) -> None:
        conn = self.conn
        t = conn.get_timer()
        if t is not None and now >= t:
            conn.handle_timer(now)
        if now >= self.rekey_due and conn.state == "open":
            # keys age out on the timer heap even when nothing is sent (the core also checks on
            # every seal); a PING carries the new phase so the peer follows at once
            if conn.update_keys(now):
                self.session_send(conn.ping(now), now)
            else:
                self.rekey_due = now + max(1, conn._cfg.key_grace_ms)  # previous update unfinished
        if conn._events:
            self._events(now)
        if conn._outbox:
            self._flush_control(now)

    def session_send(self, datagram: bytes, now: int) -> None:
        s = self.session
        if s is not None:
            s._ep.tx.append((datagram, self.conn.peer_addr))
            s._ep.kick()

    # -- ending ----------------------------------------------------------------------------------
    def finish(self, tx: list[tuple[bytes, Address]], now: int, code: int | None, reason: str) -> None:
        """The session ended locally: send an authenticated CLOSE (unless the peer closed first)."""
        conn = self.conn
        if conn.state == "open":
            if code is None:
                code = _LOCAL_CODES.get(reason, Reason.NONE)
            message = "" if reason in ("closed", "") else reason
            pkt = conn.close(code, message[:512], now)
            self._events(now)  # callbacks see ConnectionClosed(by_peer=False)
            for _ in range(_CLOSE_COPIES):
                tx.append((pkt, conn.peer_addr))
        if self.server is not None:
            self.server.remove(conn)
        fold_secure_counters(conn.counters)


# ---------------------------------------------------------------------------------- client side


class _HandshakeTimer:
    """Timer-heap target that drives :meth:`SecureClient.handle_timer`."""

    __slots__ = ("_timer_entry", "cb")

    def __init__(self, cb: Callable[[int], None]) -> None:
        self._timer_entry: tuple[int, int] | None = None
        self.cb = cb

    def _on_timer(self, now: int) -> None:
        self.cb(now)


async def secure_handshake(
    ep: _Endpoint, remote: Address, cfg: SecureConfig, rng: Callable[[int], bytes]
) -> SecureConnection:
    """Run the client handshake on ``ep`` (its socket connected to ``remote``).

    Returns the established connection, or raises the :class:`kcp.secure.HandshakeError` the core
    reports: :class:`kcp.secure.HandshakeTimeout` (wrong server key or passphrase, server down),
    a PSK mismatch after one round trip, or :class:`kcp.secure.HandshakeRefused` with the server's
    reason (bad token, version, parameters).
    """
    loop = ep.loop
    timers = ep.timers
    client = SecureClient(cfg, rng)
    fut: asyncio.Future[SecureConnection] = loop.create_future()

    def settle() -> None:
        for d in client.datagrams_to_send(timers.now_ms()):
            ep.tx.append((d, remote))
        if ep.tx:
            ep.kick()
        if fut.done():
            return
        if client.state == "established" and client.connection is not None:
            fut.set_result(client.connection)
        elif client.state == "failed":
            fut.set_exception(client.error or HandshakeError("handshake failed"))

    def dispatch(data: bytes, addr: Address, now: int) -> None:
        if client.state == "initiating":
            client.receive(data, addr, now)
            settle()

    def on_timer(now: int) -> None:
        client.handle_timer(now)
        settle()
        t = client.get_timer()
        if t is not None and not fut.done():
            timers.schedule(timer, t)

    timer = _HandshakeTimer(on_timer)
    ep.dispatch = dispatch
    ep.tx.append((client.initiate(timers.now_ms()), remote))
    ep.kick()
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
        ep.dispatch = lambda d, a, n: None
        fold_secure_counters(client.counters)  # the handshake's own counters (the connection has its own)


# ---------------------------------------------------------------------------------- server side


class SecureDemux:
    """The listener's lookup in secure mode: sessions by connection ID, handshakes by the core."""

    __slots__ = ("__weakref__", "_timer_entry", "draining", "links", "listener", "log", "server")

    def __init__(
        self,
        listener: Listener,
        config: SecureConfig,
        rng: Callable[[int], bytes],
        authorize: Callable[[bytes, bytes | None, Any], str | None] | None,
    ) -> None:
        self.listener = listener
        self.draining = False
        self._timer_entry: tuple[int, int] | None = None
        self.links: dict[bytes, SecureLink] = {}  # by our connection ID: the hot-path lookup
        self.log = RateLimitedLog(logging.getLogger("kcp.secure"), burst=LOG_BURST, interval=LOG_INTERVAL)
        self.server = SecureServer(
            config, rng, authorize=self._authorize_hook(authorize), now=listener._ep.timers.now_ms()
        )
        _live_demux.add(self)

    def dispatch(self, data: bytes, addr: Address, now: int) -> None:
        """One datagram on the listener's socket."""
        if data and data[0] in TRANSPORT_TYPES:
            link = self.links.get(bytes(data[1:_CID_END]))
            if link is not None:
                if not link.input(data, addr, now):
                    self.server.counters.transport_rejected += 1
                return
        server = self.server
        lis = self.listener
        r = server.receive(data, addr, now)
        if r.replies:
            lis._ep.tx.extend(r.replies)
            timer = server.get_timer()
            if timer is not None:
                lis._ep.timers.schedule(self, timer)
        if r.refusal is not None:
            self._log_refusal(r.refusal.code, r.refusal.message, addr)
        elif r.clamped is not None:
            self.log.info("clamped", "secure handshake from %s: %s (the server's policy)", addr, r.clamped)
        if r.accepted and r.connection is not None:
            self._accept(r.connection, r.payload, addr, now)

    def _log_refusal(self, code: int, message: str, addr: Address) -> None:
        if code in _WARN_REFUSALS and not self.draining:
            self.log.warning(
                "refused", "secure handshake from %s refused: %s", addr, reason_text(code, message)
            )
        else:  # cipher suite (the client retries at once), draining: routine
            self.log.info(
                "refused-routine", "secure handshake from %s refused: %s", addr, reason_text(code, message)
            )

    def _refuse(self, conn: SecureConnection, addr: Address, code: int, message: str, now: int) -> None:
        """A confirmed handshake gets no session: authenticated CLOSE with the reason, state freed."""
        if not conn.closed:
            pkt = conn.close(code, message, now)
            tx = self.listener._ep.tx
            for _ in range(_CLOSE_COPIES):
                tx.append((pkt, addr))
        self.server.remove(conn)
        fold_secure_counters(conn.counters)

    def _accept(self, conn: SecureConnection, payload: bytes | None, addr: Address, now: int) -> None:
        lis = self.listener
        if conn.closed:  # the client refused our answer: its CLOSE confirmed the keys and ended it
            self._refuse(conn, addr, Reason.NONE, "", now)
            self.log.info(
                "client refused",
                "secure client %s closed while confirming the handshake: %s",
                addr,
                reason_text(conn.close_code or 0, conn.close_message),
            )
            return
        refusal = lis._room_for_one()
        if refusal is not None or lis._closed:
            # the table is full (or we are closing): tell the client at once, authenticated
            self._refuse(conn, addr, Reason.SERVER_BUSY, refusal or "listener closed", now)
            return
        p = conn.params
        problem = outside_policy(self.server.config, p)  # negotiate() never allows it: a last check
        try:
            if problem is not None:
                raise KCPUsageError(problem)
            cfg = dataclasses.replace(lis.config, mtu=p.mtu, snd_wnd=p.rcv_wnd, rcv_wnd=p.snd_wnd)
            link = SecureLink(conn, now, self.server)
            s = KCPSession(
                lis._ep,
                conv_of(conn),
                conn.peer_addr,
                cfg,
                None,
                p.data_shards,
                p.parity_shards,
                listener=lis,
                rng=lis._rng,
                secure=link,
            )
        except Exception as exc:  # no session for these parameters: tell the client, keep nothing
            self.server.counters.accept_failed += 1
            if problem is not None:
                self._refuse(conn, addr, Reason.PARAMS_REFUSED, problem, now)
            else:
                self._refuse(conn, addr, Reason.INTERNAL, "server could not set up the session", now)
            self.log.warning(
                "accept failed",
                "secure session from %s not set up (%s: %s); sent CLOSE",
                addr,
                type(exc).__name__,
                str(exc),  # not the exception: a kept record must not hold its frames (and the connection)
            )
            return
        self.links[conn.local_cid] = link
        lis._register(conn.local_cid, s)
        if conn._outbox or conn._events:
            link.on_timer(now)
        if payload is not None:
            s._input(payload, now)
        self.update_load()

    def update_load(self) -> None:
        """Ask for address-proving cookies while the session table is nearly full.

        The core already switches to stateless retries when half-open handshakes reach
        ``retry_threshold`` or it did ``retry_rate`` handshakes this second; a listener with
        (nearly) no room for more sessions is under load as well.
        """
        lis = self.listener
        server = self.server
        busy = self.draining or len(lis._sessions) * 10 >= lis.max_sessions * 9
        if server.config.always_retry != busy:
            server.config = dataclasses.replace(server.config, always_retry=busy)

    def forget(self, cid: bytes) -> None:
        """A session ended: its connection ID no longer routes."""
        self.links.pop(cid, None)
        self.update_load()

    def close(self) -> None:
        """The listener closed: forget every half-open handshake and leave the timer heap."""
        self.links.clear()
        self.listener._ep.timers.cancel(self)
        server = self.server
        server.handle_timer(self.listener._ep.timers.now_ms() + server.config.half_open_timeout_ms + 1)
        if self in _live_demux:
            _live_demux.discard(self)
            fold_secure_counters(server.counters)

    def _on_timer(self, now: int) -> None:
        server = self.server
        server.handle_timer(now)
        timer = server.get_timer()
        if timer is not None:
            self.listener._ep.timers.schedule(self, timer)

    def _authorize_hook(
        self, user: Callable[[bytes, bytes | None, Any], str | None] | None
    ) -> Callable[[bytes, bytes | None, Any], str | None]:
        """The hook given to the core: refuses while draining, then asks the user's hook."""

        def authorize(token: bytes, client_static: bytes | None, addr: Any) -> str | None:
            if self.draining:
                return "server is going away (draining); try another server"
            return user(token, client_static, addr) if user is not None else None

        return authorize
