"""kcp-go's lookup by remote address, with :mod:`kcp.admission`'s proof of address (see
:mod:`kcp.demux`)."""

from __future__ import annotations

from typing import Any, Literal

from kcp.admission import ALIVE, REPLACE, Admission, AdmissionConfig, Pending
from kcp.batch import Address
from kcp.config import CompatWire
from kcp.demux import DemuxHost
from kcp.endpoint import Endpoint
from kcp.engine import IKCP_CMD_PUSH, IKCP_WND_RCV, SEGMENT_HEADER, acks_segment, packet_conv
from kcp.path import CompatPath
from kcp.pipeline import KIND_KCP, Pipeline
from kcp.session import KCPSession
from kcp.wirehint import HintCode, HintLimiter, encode_hint, is_secure_initiation

__all__ = ["AddressDemux"]

_CHALLENGE_SN = 0xFFFFFFFF  # the sn of a pending peer's challenge: just below a fresh receive window


class AddressDemux:
    """kcp-go's lookup by remote address, with :mod:`kcp.admission`'s proof of address."""

    __slots__ = (
        "_evicted",
        "_lookup",
        "_timer_entry",
        "admission",
        "crypt",
        "ep",
        "fec",
        "hints",
        "host",
        "probe",
    )

    mode: Literal["compat", "secure"] = "compat"

    def __init__(self, host: DemuxHost, wire: CompatWire, admission: AdmissionConfig | None) -> None:
        self.host = host
        self.ep: Endpoint = host.endpoint
        self.crypt = wire.packet_crypt()
        self.fec = wire.fec
        # the probe only learns the conv of a first packet: crypt check, no FEC state kept
        self.probe = Pipeline(self.crypt, 0, 0, host.endpoint.counters, host.rng)
        self.admission = Admission(admission or AdmissionConfig())
        self._timer_entry = -1  # the pending table's expiry (TimerTarget; kcp.timers.NO_ENTRY)
        self._evicted: list[Address] = []  # evicted pending peers whose cached addresses go next tick
        self._lookup = host.table.get
        self.hints = HintLimiter()
        """Wire hints to secure dials (kcp.wirehint): at most 4 a second per address, 100 in all."""

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
                self.ep.forget(key)  # after its last datagrams have gone

    def sizes(self) -> dict[str, int]:
        return {**self.admission.sizes(), "datagram_budgets": 0}  # secure mode's (kcp.datagram_budget)

    def _new_peer(self, data: bytes, addr: Address, now: int) -> None:
        """A datagram from an address without a session: hold, promote or drop it (kcp.admission)."""
        if self.host.closed:
            return
        if is_secure_initiation(data):
            self._hint_secure_dial(data, addr, now)  # then as usual: a kcp-go peer is never refused
        p = self.admission.pending.get(addr)
        if p is None:
            self._first_datagram(data, addr, now, None, -1)
        else:
            self._pending_datagram(p, data, addr, now, None, None)

    def _hint_secure_dial(self, data: bytes, addr: Address, now: int) -> None:
        """A secure client dialled this compat listener: tell it (a 20-byte hint that echoes its
        initiation, which kcp-go peers never see: they send no initiations), rate-limited."""
        if not self.hints.allow(addr, now):
            self.host.count("wire_hints_rate_limited")
            return
        hint = encode_hint(HintCode.COMPAT_WIRE, data)
        if hint is not None:
            self.host.count("wire_hints_sent")
            self.ep.send(hint, addr)

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
            if host.room_for_one(addr=addr) is not None:
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
        if host.room_for_one(replacing=old is not None, addr=addr) is not None:
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
