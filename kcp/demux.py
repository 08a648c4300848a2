"""Which session a listener's datagram belongs to: by address (compat) or by connection ID (secure).

A listener serves one wire mode and holds one demux (docs/security.md explains why):

* :class:`AddressDemux`, kcp-go's rules. A datagram from a known address goes to that address's
  session. A datagram from an unknown address that, once through the packet layer (decrypt,
  crc32, FEC framing), holds a well-formed KCP packet starts a conversation with that packet's
  conversation id (kcp-go's ``Listener.packetInput``), but not at once: it first becomes a small
  *pending* entry, answered with a challenge (a data-less PUSH below the peer's receive window,
  with a random ``ts``), and turns into a session when the address acknowledges it, which every
  ikcp-based engine does by itself. A spoofed or replayed datagram therefore costs no session, and
  copies of one datagram from other addresses are dropped (:mod:`kcp.admission`). On a known
  address, a KCP packet with another conv is dropped, unless its ``sn`` is 0: then the peer may have
  restarted (kcp-go's rule), and the new conversation replaces the old session once it answered
  its challenge and the old peer has not answered liveness probes for
  ``AdmissionConfig.restart_quiet``. FEC parity shards and OOB packets never start a conversation.
* :class:`SecureDemux`: transport packets are found by connection ID, everything else goes to the
  :class:`kcp.secure.SecureServer` core (initiations, cookies, confirmations); a confirmed
  handshake becomes a session with the negotiated parameters.

Both talk to their listener through :class:`DemuxHost` only.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol

from kcp.admission import ALIVE, REPLACE, Admission, AdmissionConfig, Pending
from kcp.batch import Address
from kcp.config import CompatWire, SecureWire, SessionConfig
from kcp.endpoint import Endpoint
from kcp.engine import IKCP_CMD_PUSH, IKCP_WND_RCV, SEGMENT_HEADER, acks_segment, packet_conv
from kcp.errors import KCPUsageError
from kcp.logutil import RateLimitedLog
from kcp.path import CompatPath
from kcp.pipeline import KIND_KCP, Pipeline
from kcp.secure import Reason, SecureConnection, SecureServer
from kcp.secure.config import outside_policy
from kcp.secure.connection import reason_text
from kcp.secure.packet import CID_LEN, TRANSPORT_TYPES
from kcp.secure_path import CLOSE_COPIES, SecurePath, conv_of, secure_config
from kcp.session import KCPSession, SessionHost
from kcp.snmp import track_secure_source, untrack_secure_source
from kcp.stats import fold_secure

__all__ = ["LOG_BURST", "LOG_INTERVAL", "AddressDemux", "Demux", "DemuxHost", "SecureDemux"]

_CHALLENGE_SN = 0xFFFFFFFF  # the sn of a pending peer's challenge: just below a fresh receive window
_CID_END = 1 + CID_LEN
_WARN_REFUSALS = (Reason.PARAMS_REFUSED, Reason.VERSION_MISMATCH, Reason.BAD_TOKEN)
LOG_BURST = 10
"""Records per kind and listener that :class:`SecureDemux` logs per ``LOG_INTERVAL`` seconds."""
LOG_INTERVAL = 60.0


class DemuxHost(SessionHost, Protocol):
    """What a demux needs from its listener (which is also its sessions' host)."""

    @property
    def config(self) -> SessionConfig: ...

    @property
    def max_sessions(self) -> int: ...

    @property
    def closed(self) -> bool: ...

    @property
    def rng(self) -> Callable[[int], bytes]: ...

    def session_at(self, key: Any) -> KCPSession | None: ...

    @property
    def table(self) -> Mapping[Any, KCPSession]:
        """The session table, read-only (the hot path looks sessions up in it directly)."""

    def session_count(self) -> int: ...

    def room_for_one(self, replacing: bool = False) -> str | None:
        """None if one more session fits; else the drop is counted and the reason returned."""

    def register(self, key: Any, session: KCPSession) -> None:
        """Put a new session in the table and hand it out."""

    def count(self, name: str) -> None:
        """Add one to a counter of the listener (and :data:`kcp.stats.SNMP`)."""


class Demux(Protocol):
    """A listener's lookup (see the module docstring)."""

    mode: Literal["compat", "secure"]

    def dispatch(self, data: bytes, addr: Address, now: int) -> None: ...

    def conv_mismatch(self, s: KCPSession, datagram: bytes, packet: bytes, now: int) -> bool: ...

    def key_of(self, s: KCPSession) -> Any: ...

    def session_gone(self, key: Any, removed: bool) -> None: ...

    def sizes(self) -> dict[str, int]: ...

    def close(self) -> None: ...


# ------------------------------------------------------------------------------------- compat mode


class AddressDemux:
    """kcp-go's lookup by remote address, with :mod:`kcp.admission`'s proof of address."""

    __slots__ = ("_evicted", "_lookup", "_timer_entry", "admission", "crypt", "ep", "fec", "host", "probe")

    mode: Literal["compat", "secure"] = "compat"

    def __init__(self, host: DemuxHost, wire: CompatWire, admission: AdmissionConfig | None) -> None:
        self.host = host
        self.ep: Endpoint = host.endpoint
        self.crypt = wire.packet_crypt()
        self.fec = wire.fec
        # the probe only learns the conv of a first packet: crypt check, no FEC state kept
        self.probe = Pipeline(self.crypt, 0, 0, host.endpoint.counters, host.rng)
        self.admission = Admission(admission or AdmissionConfig())
        self._timer_entry: tuple[int, int] | None = None  # the pending table's expiry (TimerTarget)
        self._evicted: list[Address] = []  # evicted pending peers whose cached addresses go next tick
        self._lookup = host.table.get

    def dispatch(self, data: bytes, addr: Address, now: int) -> None:
        s = self._lookup(addr)
        if s is not None:
            s.feed(data, now)
        else:
            self._new_peer(data, addr, now)

    def key_of(self, s: KCPSession) -> Any:
        return s.remote_address

    def session_gone(self, key: Any, removed: bool) -> None:
        if removed:
            self.admission.session_closed(key)
            if not self.ep.closed:
                self.ep.io.forget(key)

    def sizes(self) -> dict[str, int]:
        return self.admission.sizes()

    def _new_peer(self, data: bytes, addr: Address, now: int) -> None:
        """A datagram from an address without a session: hold, promote or drop it (kcp.admission)."""
        if self.host.closed:
            return
        p = self.admission.pending.get(addr)
        if p is None:
            self._first_datagram(data, addr, now, None, -1)
        else:
            self._pending_datagram(p, data, addr, now, None, None)

    def _probe_packet(self, data: bytes, now: int) -> tuple[int, bytes]:
        """The conv and the plaintext of the datagram's own KCP packet (decrypted, crc checked), or
        ``(-1, b"")`` (OOB packets, FEC parity shards, garbage). Only a KCP packet starts a
        conversation."""
        for kind, payload in self.probe.open(data, now):
            if kind == KIND_KCP:
                return packet_conv(payload), payload
            break
        return -1, b""

    def _first_datagram(
        self, data: bytes, addr: Address, now: int, old: KCPSession | None, conv: int
    ) -> None:
        """The first datagram of a conversation from ``addr``: a pending entry, not a session.

        ``old`` is the live session at ``addr`` when this is a restart (``conv`` is then its new
        conv; otherwise -1: not known yet).
        """
        adm = self.admission
        host = self.host
        digest = hash(data)
        if adm.is_replay(digest, addr):
            host.count("dropped_replay")
            if old is None:
                self.ep.io.forget(addr)
            return
        if old is None:
            if host.room_for_one() is not None:
                self.ep.io.forget(addr)
                return
            conv = self._probe_packet(data, now)[0]
            if conv < 0:
                host.count("dropped_no_session")
                self.ep.io.forget(addr)
                return
        self._expire(now)
        # the ts the peer must echo: random, and 2**30..2**30+2**29 ms ahead of our clock, so that
        # its ack, fed to the new session's engine, is never taken for an RTT sample (ikcp only
        # samples acks whose ts is not in the future)
        challenge = (now + (1 << 30) + (int.from_bytes(host.rng(4), "little") >> 3)) & 0xFFFFFFFF
        for gone in adm.add(addr, conv, data, digest, now, old is not None, challenge):
            host.count("pending_evicted")
            self._evicted.append(gone)  # forgotten by the timer, after its challenge went out
        host.count("pending_created")
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
        adm = self.admission
        host = self.host
        if data == p.first:
            host.count("dropped_replay")
            return False
        digest = hash(data)
        if adm.is_replay(digest, addr):
            host.count("dropped_replay")
            return False
        conv, packet = self._probe_packet(data, now) if probed is None else probed
        if conv >= 0 and conv != p.conv:
            host.count("dropped_bad_conv")
            return False
        if conv < 0 or not acks_segment(packet, _CHALLENGE_SN, p.challenge):
            # the peer's own traffic before its answer (its next segments, a retransmission, OOB
            # packets, FEC parity): kept for its session, bounded (its pipeline sorts it out); and
            # the challenge goes again in case it or its answer was lost
            if not adm.hold(p, data):
                host.count("pending_overflow")
            if conv >= 0:
                self._send_challenge(p, addr, now)
            return False
        # proven: the peer at this address received our challenge and acknowledged it
        if old is not None:
            verdict = adm.restart_verdict(p, old.last_valid, old.is_closing(), now)
            if verdict != REPLACE:
                host.count("restart_deferred")
                if verdict == ALIVE:  # the old peer answered: this is not its restart
                    adm.drop(addr)
                    self._arm_expiry()
                return False
        if not adm.allow(addr, now):
            host.count("dropped_rate_limited")
            return False
        if host.room_for_one(replacing=old is not None) is not None:
            return False
        if old is not None:
            old.end(now, "replaced by a new conversation")
            host.count("sessions_replaced")
        p = adm.take(addr, digest)
        host.count("pending_promoted")
        s = KCPSession(
            host, p.conv, addr, host.config, CompatPath(self.ep), crypt=self.crypt, fec=self.fec, rng=host.rng
        )
        host.register(addr, s)
        # what the peer sent before its answer, then the answer (its ack of the challenge matches
        # nothing in the engine; the rest of that datagram, such as new data, is the peer's)
        for held in (*p.datagrams(), data):
            if s.closed:
                break
            s.feed(held, now)
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
        wnd = min(max(self.host.config.rcv_wnd, IKCP_WND_RCV), 0xFFFF)
        pkt = SEGMENT_HEADER.pack(p.conv, IKCP_CMD_PUSH, 0, wnd, p.challenge, _CHALLENGE_SN, 0, 0)
        for datagram in self.probe.seal(pkt, now):
            self.ep.tx.append((datagram, addr))
        self.ep.kick()

    def _expire(self, now: int) -> None:
        for addr, _p in self.admission.expire(now):
            self.host.count("pending_expired")
            if self.host.session_at(addr) is None:
                self.ep.io.forget(addr)

    def _poke(self, now: int) -> None:
        """Send the liveness probes that restart candidates ask of the live sessions at their address."""
        for addr in self.admission.due_pokes(now):
            s = self.host.session_at(addr)
            if s is not None:
                s.probe_peer()

    def _arm_expiry(self) -> None:
        due = self.admission.next_due()
        if self._evicted:
            soon = self.ep.timers.now_ms() + 1
            due = soon if due is None or soon < due else due
        if due is not None:
            self.ep.timers.schedule(self, due)
        else:
            self.ep.timers.cancel(self)

    def _on_timer(self, now: int) -> None:
        """The timer heap's call: expire pending peers (so memory is released when a flood stops)
        and send the liveness probes of restart candidates."""
        if self.host.closed:
            return
        if self._evicted:
            evicted, self._evicted = self._evicted, []
            pending = self.admission.pending
            for addr in evicted:
                if self.host.session_at(addr) is None and addr not in pending:
                    self.ep.io.forget(addr)
        self._expire(now)
        self._poke(now)
        self._arm_expiry()

    def conv_mismatch(self, s: KCPSession, datagram: bytes, packet: bytes, now: int) -> bool:
        """A KCP packet with a foreign conv reached ``s``; True if ``s`` was replaced.

        kcp-go's restart rule (another conv with ``sn == 0`` from a known address: the peer
        restarted) no longer acts on one packet: the new conversation becomes a pending restart
        candidate, which replaces ``s`` only once it answered its challenge and ``s`` has
        accepted nothing from its own peer (which it probes) for ``restart_quiet``
        (kcp.admission). Until then ``s`` stays.
        """
        conv, _cmd, _frg, _wnd, _ts, sn, _una, _ln = SEGMENT_HEADER.unpack_from(packet, 0)
        if conv != s.conv and not self.host.closed:
            addr = s.remote_address
            p = self.admission.pending.get(addr)
            if p is not None:
                if p.conv == conv:
                    return self._pending_datagram(p, datagram, addr, now, s, (conv, packet))
            elif sn == 0 and packet_conv(packet) >= 0:
                self._first_datagram(datagram, addr, now, s, conv)
                return False
        self.host.count("dropped_bad_conv")
        return False

    def close(self) -> None:
        self.ep.timers.cancel(self)
        self.admission.clear()
        self._evicted.clear()


# ------------------------------------------------------------------------------------- secure mode


class SecureDemux:
    """The listener's lookup in secure mode: sessions by connection ID, handshakes by the core."""

    __slots__ = ("__weakref__", "_timer_entry", "draining", "ep", "host", "log", "paths", "server")

    mode: Literal["compat", "secure"] = "secure"

    def __init__(self, host: DemuxHost, wire: SecureWire) -> None:
        self.host = host
        self.ep: Endpoint = host.endpoint
        self.draining = False
        self._timer_entry: tuple[int, int] | None = None
        self.paths: dict[bytes, SecurePath] = {}  # by our connection ID: the hot-path lookup
        self.log = RateLimitedLog(logging.getLogger("kcp.secure"), burst=LOG_BURST, interval=LOG_INTERVAL)
        config = secure_config(wire, host.config, server=True)
        self.server = SecureServer(
            config, host.rng, authorize=self._authorize_hook(wire.authorize), now=self.ep.timers.now_ms()
        )
        track_secure_source(self.server)

    def dispatch(self, data: bytes, addr: Address, now: int) -> None:
        """One datagram on the listener's socket."""
        if data and data[0] in TRANSPORT_TYPES:
            path = self.paths.get(bytes(data[1:_CID_END]))
            if path is not None:
                if not path.input(data, addr, now):
                    self.server.counters.transport_rejected += 1
                return
        server = self.server
        r = server.receive(data, addr, now)
        if r.replies:
            self.ep.tx.extend(r.replies)
            timer = server.get_timer()
            if timer is not None:
                self.ep.timers.schedule(self, timer)
        if r.refusal is not None:
            self._log_refusal(r.refusal.code, r.refusal.message, addr)
        elif r.clamped is not None:
            self.log.info("clamped", "secure handshake from %s: %s (the server's policy)", addr, r.clamped)
        if r.accepted and r.connection is not None:
            self._accept(r.connection, r.payload, addr, now)

    def conv_mismatch(self, s: KCPSession, datagram: bytes, packet: bytes, now: int) -> bool:
        self.host.count("dropped_bad_conv")
        return False

    def key_of(self, s: KCPSession) -> Any:
        conn = s.secure
        assert conn is not None
        return conn.local_cid

    def session_gone(self, key: Any, removed: bool) -> None:
        """A session ended: its connection ID no longer routes."""
        self.paths.pop(key, None)
        self.update_load()

    def sizes(self) -> dict[str, int]:
        return dict.fromkeys(Admission(AdmissionConfig()).sizes(), 0)

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
            for _ in range(CLOSE_COPIES):
                self.ep.tx.append((pkt, addr))
        self.server.remove(conn)
        fold_secure(conn.counters)

    def _accept(self, conn: SecureConnection, payload: bytes | None, addr: Address, now: int) -> None:
        host = self.host
        if conn.closed:  # the client refused our answer: its CLOSE confirmed the keys and ended it
            self._refuse(conn, addr, Reason.NONE, "", now)
            self.log.info(
                "client refused",
                "secure client %s closed while confirming the handshake: %s",
                addr,
                reason_text(conn.close_code or 0, conn.close_message),
            )
            return
        refusal = host.room_for_one()
        if refusal is not None or host.closed:
            # the table is full (or we are closing): tell the client at once, authenticated
            self._refuse(conn, addr, Reason.SERVER_BUSY, refusal or "listener closed", now)
            return
        p = conn.params
        problem = outside_policy(self.server.config, p)  # negotiate() never allows it: a last check
        try:
            if problem is not None:
                raise KCPUsageError(problem)
            cfg = dataclasses.replace(host.config, mtu=p.mtu, snd_wnd=p.rcv_wnd, rcv_wnd=p.snd_wnd)
            path = SecurePath(self.ep, conn, now, self.server.remove)
            s = KCPSession(
                host,
                conv_of(conn),
                conn.peer_addr,
                cfg,
                path,
                fec=(p.data_shards, p.parity_shards),
                rng=host.rng,
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
        self.paths[conn.local_cid] = path
        host.register(conn.local_cid, s)
        if conn.has_datagrams or conn.has_events:
            path.on_timer(now)
        if payload is not None:
            s.feed(payload, now)
        self.update_load()

    def update_load(self) -> None:
        """Ask for address-proving cookies while the session table is nearly full.

        The core already switches to stateless retries when half-open handshakes reach
        ``retry_threshold`` or it did ``retry_rate`` handshakes this second; a listener with
        (nearly) no room for more sessions is under load as well.
        """
        host = self.host
        server = self.server
        busy = self.draining or host.session_count() * 10 >= host.max_sessions * 9
        if server.config.always_retry != busy:
            server.config = dataclasses.replace(server.config, always_retry=busy)

    def close(self) -> None:
        """The listener closed: forget every half-open handshake and leave the timer heap."""
        self.paths.clear()
        self.ep.timers.cancel(self)
        server = self.server
        server.handle_timer(self.ep.timers.now_ms() + server.config.half_open_timeout_ms + 1)
        if self.server is not None:
            untrack_secure_source(self.server)
            fold_secure(server.counters)

    def _on_timer(self, now: int) -> None:
        server = self.server
        server.handle_timer(now)
        timer = server.get_timer()
        if timer is not None:
            self.ep.timers.schedule(self, timer)

    def _authorize_hook(
        self, user: Callable[[bytes, bytes | None, Any], str | None] | None
    ) -> Callable[[bytes, bytes | None, Any], str | None]:
        """The hook given to the core: refuses while draining, then asks the user's hook."""

        def authorize(token: bytes, client_static: bytes | None, addr: Any) -> str | None:
            if self.draining:
                return "server is going away (draining); try another server"
            return user(token, client_static, addr) if user is not None else None

        return authorize
