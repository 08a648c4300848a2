"""An established secure connection: sealing, opening, key updates, path validation, CLOSE, GOAWAY.

Sans-I/O: every method takes ``now`` (ms) and returns bytes or queues events; the session layer
sends what :meth:`SecureConnection.datagrams_to_send` returns and calls
:meth:`SecureConnection.handle_timer` at :meth:`SecureConnection.get_timer`.
"""

from __future__ import annotations

import enum
import hmac
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from cryptography.exceptions import InvalidTag

from .config import PMTUD_LIMIT, HandshakeConfig, SessionParams
from .errors import SecureConnectionClosed, SecureUsageError
from .events import (
    ConnectionClosed,
    Event,
    GoAwayReceived,
    KeyUpdated,
    PathChanged,
    PathFailed,
    PathValidated,
)
from .keys import EpochKeys
from .noise import CipherSuite
from .packet import (
    CID_LEN,
    F_CLOSE,
    F_DATA,
    F_DATA_PART,
    F_GOAWAY,
    F_PATH_CHALLENGE,
    F_PATH_RESPONSE,
    F_PING,
    F_PING_ACK,
    MAX_PARTS,
    MIN_TRANSPORT,
    PART_HEADER,
    PART_OVERHEAD,
    PROBE_ID_LEN,
    RESET_TOKEN_LEN,
    T_TRANSPORT,
    TRANSPORT_HEADER,
    TRANSPORT_TYPES,
    Reason,
    decode_reason_frame,
    encode_reason_frame,
    reason_name,
)
from .replay import OK, TOO_OLD, ReplayWindow
from .stats import SecureCounters


class ConnectionState(str, enum.Enum):
    """A secure connection's state: ``OPEN`` until either end closes (or a stateless reset)."""

    OPEN = "open"
    CLOSED = "closed"


OPEN: Final[ConnectionState] = ConnectionState.OPEN
CLOSED: Final[ConnectionState] = ConnectionState.CLOSED
CONNECTION_TRANSITIONS: dict[ConnectionState, frozenset[ConnectionState]] = {
    OPEN: frozenset({CLOSED}),
    CLOSED: frozenset(),
}
_DATA: Final = bytes((F_DATA,))
MAX_PROBE_ACKS: Final = 64
MAX_PENDING_PARTS: Final = 8
"""Payloads being reassembled from DATA_PART frames at once; a new one evicts the oldest."""
PART_TIMEOUT_MS: Final = 2000
"""An incomplete payload older than this is dropped when the next piece arrives (its pieces are
sent back to back: the rest was lost, and KCP resends the whole payload in new pieces)."""


class _Partial:
    """A payload being reassembled: its pieces by index, their bytes, when the first came."""

    __slots__ = ("count", "got", "nbytes", "pieces", "started")

    def __init__(self, count: int, now: int) -> None:
        self.count = count
        self.got = 0
        self.nbytes = 0
        self.pieces: list[bytes | None] = [None] * count
        self.started = now


class SecureConnection:
    """One side of an established secure connection (see docs/security.md for the protocol)."""

    __slots__ = (
        "_cfg",
        "_challenge",
        "_challenge_addr",
        "_challenge_attempts",
        "_challenge_due",
        "_confirmed",
        "_epoch_started",
        "_first_pn",
        "_next_part",
        "_next_pn",
        "_partials",
        "_path_in",
        "_path_out",
        "_prefix0",
        "_prefix1",
        "_prev_expiry",
        "_recv",
        "_recv_next",
        "_recv_prev",
        "_rekey_ms",
        "_rekey_packets",
        "_rng",
        "_send",
        "_sent_in_epoch",
        "_suite",
        "_validated_addr",
        "_window",
        "close_code",
        "close_message",
        "close_packet",
        "counters",
        "events",
        "goaway_received",
        "goaway_sent",
        "handshake_hash",
        "handshake_rtt_ms",
        "is_client",
        "last_authenticated",
        "local_cid",
        "outbox",
        "params",
        "path_validated",
        "peer_addr",
        "peer_static",
        "probe_acks",
        "remote_cid",
        "reset_token",
        "state",
    )

    def __init__(
        self,
        *,
        config: HandshakeConfig,
        suite: CipherSuite,
        is_client: bool,
        send_secret: bytes,
        recv_secret: bytes,
        local_cid: bytes,
        remote_cid: bytes,
        peer_addr: Any,
        params: SessionParams,
        rng: Callable[[int], bytes],
        now: int,
        counters: SecureCounters | None = None,
        peer_static: bytes | None = None,
        handshake_hash: bytes = b"",
        reset_token: bytes | None = None,
    ) -> None:
        self._cfg = config
        # read per sealed packet: native ints here, not the frozen dataclass's attributes
        self._rekey_packets = config.rekey_after_packets
        self._rekey_ms = config.rekey_after_ms
        self._suite = suite
        self._rng = rng
        self.is_client = is_client
        self.local_cid = local_cid
        self.remote_cid = remote_cid
        self._prefix0 = bytes((T_TRANSPORT,)) + remote_cid
        self._prefix1 = bytes((T_TRANSPORT | 1,)) + remote_cid
        self.peer_addr = peer_addr
        self.params = params
        self.peer_static = peer_static
        self.handshake_hash = handshake_hash
        self.handshake_rtt_ms = 0
        """The client's handshake round trip (initiation to answer, an initiation sent once), in
        ms; 0 on a server or when the initiation had to be resent."""
        self.reset_token = reset_token
        self.counters = counters if counters is not None else SecureCounters()
        self._send = EpochKeys(suite, send_secret, 0)
        self._recv = EpochKeys(suite, recv_secret, 0)
        self._recv_next: EpochKeys | None = None
        self._recv_prev: EpochKeys | None = None
        self._prev_expiry = 0
        self._epoch_started = now
        self._sent_in_epoch = 0
        self._confirmed = True
        self._first_pn: int | None = 0  # the peer's epoch-0 packets start at packet number 0
        self._next_pn = 0
        self._next_part = 0
        self._partials: dict[int, _Partial] = {}
        self._window = ReplayWindow(config.replay_window)
        self._validated_addr = peer_addr
        self.path_validated = True
        self._challenge: bytes | None = None
        self._challenge_addr: Any = None
        self._challenge_attempts = 0
        self._challenge_due = 0
        self._path_in = 0
        self._path_out = 0
        self.state: ConnectionState = OPEN
        self.close_code: int | None = None
        self.close_message = ""
        self.close_packet: bytes | None = None
        self.goaway_sent = False
        self.goaway_received: tuple[int, str] | None = None
        self.events: deque[Event] = deque()
        """Events not taken yet (take them with :meth:`next_event`; the glue checks it is non-empty)."""
        self.outbox: list[tuple[bytes, Any]] = []
        """Datagrams to send (take them with :meth:`datagrams_to_send`: path probes and answers)."""
        self.probe_acks: list[int] = []
        """Probe ids the peer answered (PING_ACK), not taken yet: the session's MTU search takes them."""
        self.last_authenticated = now
        """When (ms) the last packet that authenticated arrived (the handshake's time until one does).
        Only these prove the peer alive: forged, corrupted and replayed datagrams never move it."""

    # ------------------------------------------------------------------------------ properties

    @property
    def epoch(self) -> int:
        """The current key epoch (0 after the handshake; +1 per key update)."""
        return self._send.epoch

    @property
    def closed(self) -> bool:
        return self.state is CLOSED

    @property
    def is_open(self) -> bool:
        """True until either end closed the connection."""
        return self.state is OPEN

    @property
    def config(self) -> HandshakeConfig:
        """The configuration the connection runs with (rekey timers, path probing...)."""
        return self._cfg

    def queue_datagram(self, datagram: bytes, addr: Any) -> None:
        """Queue a datagram for :meth:`datagrams_to_send` (the handshake's confirmation PING)."""
        self.outbox.append((datagram, addr))

    def _set_state(self, new: ConnectionState) -> None:
        assert new in CONNECTION_TRANSITIONS[self.state], f"illegal transition {self.state} -> {new}"
        self.state = new

    @property
    def next_packet_number(self) -> int:
        return self._next_pn

    # ------------------------------------------------------------------------------ sending

    def seal(self, payload: bytes, now: int) -> bytes:
        """One transport datagram carrying ``payload`` (a KCP packet, FEC shard or OOB datagram)."""
        if self.state != OPEN:
            raise SecureConnectionClosed(
                f"secure connection is closed ({self.close_message or 'closed'})", self.close_code or 0
            )
        return self.seal_frame(_DATA + payload, now)

    def seal_parts(self, payload: bytes, max_datagram: int, now: int) -> list[bytes]:
        """``payload`` (as for :meth:`seal`) in DATA_PART datagrams of at most ``max_datagram``
        bytes each, for the peer to reassemble: a payload made for a larger path MTU than the
        path now carries (a KCP segment sent before the MTU fell). Both ends must have agreed on
        it in the handshake (``params.data_parts``); the pieces are of even size, 2 to
        ``MAX_PARTS`` of them."""
        if self.state != OPEN:
            raise SecureConnectionClosed(
                f"secure connection is closed ({self.close_message or 'closed'})", self.close_code or 0
            )
        if not self.params.data_parts:
            raise SecureUsageError("the peer did not agree to DATA_PART frames (params.data_parts)")
        room = max_datagram - PART_OVERHEAD
        n = len(payload)
        count = -(-n // room) if room > 0 else 0
        if not 2 <= count <= MAX_PARTS:
            raise SecureUsageError(
                f"a {n}-byte payload in datagrams of {max_datagram} bytes makes {count} pieces; "
                f"DATA_PART needs 2..{MAX_PARTS} (a datagram holds {PART_OVERHEAD} bytes besides its piece)"
            )
        size = -(-n // count)
        mid = self._next_part
        self._next_part = (mid + 1) & 0xFFFFFFFF
        head = bytes((F_DATA_PART,)) + mid.to_bytes(4, "big")
        c = self.counters
        c.payloads_split += 1
        c.parts_sent += count
        return [
            self.seal_frame(head + bytes((i, count)) + payload[i * size : (i + 1) * size], now)
            for i in range(count)
        ]

    def ping(self, now: int, pad_to: int = 0, probe_id: int | None = None) -> bytes:
        """An authenticated PING (keeps NAT bindings, confirms keys), zero-padded to a datagram of
        ``pad_to`` bytes. With ``probe_id`` (an MTU probe, at least ``kcp.secure.packet.MIN_PROBE`` bytes) it
        carries the id, and the peer answers with a PING_ACK (:attr:`probe_acks`)."""
        if self.state != OPEN:
            raise SecureConnectionClosed("secure connection is closed", self.close_code or 0)
        body = bytes((F_PING,))
        if probe_id is not None:
            body += (probe_id & 0xFFFFFFFFFFFFFFFF).to_bytes(PROBE_ID_LEN, "big")
        extra = pad_to - TRANSPORT_HEADER - 16 - len(body)
        return self.seal_frame(body + bytes(max(0, extra)), now)

    def close(self, code: int = Reason.NONE, message: str = "", now: int = 0) -> bytes:
        """Close now: returns an authenticated CLOSE datagram (kept in ``close_packet`` for resends)."""
        if self.state == CLOSED:
            if self.close_packet is not None:
                return self.close_packet
            raise SecureConnectionClosed("already closed by the peer", self.close_code or 0)
        pkt = self.seal_frame(encode_reason_frame(F_CLOSE, int(code), message), now)
        self._set_state(CLOSED)
        self.close_packet = pkt
        self.close_code = int(code)
        self.close_message = message
        self.events.append(ConnectionClosed(int(code), message, by_peer=False))
        self.counters.closes_sent += 1
        return pkt

    def goaway(self, code: int = Reason.GOING_AWAY, message: str = "", now: int = 0) -> bytes:
        """An authenticated GOAWAY datagram: the peer should open no new streams (the connection stays open)."""
        if self.state != OPEN:
            raise SecureConnectionClosed("secure connection is closed", self.close_code or 0)
        self.goaway_sent = True
        self.counters.goaways_sent += 1
        return self.seal_frame(encode_reason_frame(F_GOAWAY, int(code), message), now)

    def update_keys(self, now: int) -> bool:
        """Start a key update now; False if the previous one is not finished yet (try again later)."""
        self._expire_prev(now)
        if not self._confirmed or self._recv_prev is not None:
            return False
        self._local_update(now)
        return True

    def can_send(self, nbytes: int) -> bool:
        """False while an unvalidated new path has used its anti-amplification budget (3x received)."""
        return (
            self.path_validated or self._path_out + nbytes <= self._cfg.amplification_factor * self._path_in
        )

    def datagrams_to_send(self, now: int) -> list[tuple[bytes, Any]]:
        """Control datagrams (path probes and answers, key confirmation) and where to send them."""
        out, self.outbox = self.outbox, []
        return out

    def next_event(self) -> Event | None:
        """Pop the oldest pending event, or None."""
        return self.events.popleft() if self.events else None

    def get_timer(self) -> int | None:
        """When :meth:`handle_timer` wants to run next (ms), or None."""
        if self._challenge is not None:
            return self._challenge_due
        if self._recv_prev is not None:
            return self._prev_expiry
        return None

    def handle_timer(self, now: int) -> None:
        """Retransmit or give up a path probe; drop the previous epoch's key after its grace time."""
        self._expire_prev(now)
        if self._challenge is not None and now >= self._challenge_due and self.state == OPEN:
            if self._challenge_attempts >= self._cfg.path_probe_attempts:
                failed = self._challenge_addr
                self._challenge = None
                self.peer_addr = self._validated_addr
                self.path_validated = True
                self.counters.path_failed += 1
                self.events.append(PathFailed(failed, self._validated_addr))
            else:
                self._send_challenge(now)

    def seal_frame(self, plaintext: bytes, now: int) -> bytes:
        """A protected datagram carrying ``plaintext`` as it is: a frame type byte and its body
        (the frames of docs/security.md). :meth:`seal` is the one for data; this one also lets a
        test send what a hostile peer holding the keys could (malformed frames)."""
        if self._sent_in_epoch >= self._rekey_packets or now - self._epoch_started >= self._rekey_ms:
            self.update_keys(now)
        pn = self._next_pn
        self._next_pn = pn + 1
        k = self._send
        # header (prefix + pn) + AEAD(plaintext), the header as associated data, nonce iv ^ pn
        pkt = k.aead.seal_pn(self._prefix1 if k.epoch & 1 else self._prefix0, pn, k.iv, plaintext)
        self._sent_in_epoch += 1
        self.counters.packets_sealed += 1
        if not self.path_validated:
            self._path_out += len(pkt)
        return pkt

    # ------------------------------------------------------------------------------ receiving

    def open(self, datagram: bytes, addr: Any, now: int) -> bytes | None:
        """Authenticate and decrypt one datagram. Returns the data payload, or None (control frame or
        dropped; every drop is counted). Never raises on network input."""
        c = self.counters
        if len(datagram) < MIN_TRANSPORT:
            c.short_packets += 1
            return None
        t = datagram[0]
        if t not in TRANSPORT_TYPES:
            c.bad_type += 1
            return None
        if datagram[1 : 1 + CID_LEN] != self.local_cid:
            if not self._stateless_reset(datagram):
                c.unknown_cid += 1
            return None
        if self.state != OPEN:
            c.after_close += 1
            return None
        pn = int.from_bytes(datagram[1 + CID_LEN : TRANSPORT_HEADER], "big")
        verdict = self._window.check(pn)
        if verdict != OK:
            if verdict == TOO_OLD:
                c.replay_too_old += 1
            else:
                c.replay_duplicates += 1
            return None
        keys = None
        plaintext = None
        for cand in self._candidates(t & 1, pn, now):
            try:  # the body, with the header as associated data
                plaintext = cand.aead.open_pn(datagram, TRANSPORT_HEADER, pn, cand.iv)
            except InvalidTag:
                continue
            keys = cand
            break
        if keys is None or plaintext is None:
            if not self._stateless_reset(datagram):
                c.decrypt_errors += 1
            return None
        newest = pn > self._window.top
        self._window.update(pn)
        c.packets_opened += 1
        if now > self.last_authenticated:
            self.last_authenticated = now
        if keys is self._recv:
            self._confirmed = True
            if self._first_pn is None or pn < self._first_pn:
                self._first_pn = pn
        elif keys is self._recv_prev:
            c.prev_key_used += 1
        else:
            self._peer_update(keys, pn, now)
        if addr != self.peer_addr and newest:
            self._new_path(addr, now)
        if not self.path_validated and addr == self.peer_addr:
            self._path_in += len(datagram)
        if not plaintext:
            c.frame_errors += 1
            return None
        ft = plaintext[0]
        if ft == F_DATA:
            return plaintext[1:]
        if ft == F_DATA_PART:
            return self._part(plaintext, now)
        self._control(ft, plaintext, addr, now)
        return None

    def _part(self, frame: bytes, now: int) -> bytes | None:
        """One DATA_PART piece: the whole payload once its last piece came, else None. Bounded:
        at most ``MAX_PENDING_PARTS`` payloads of at most max(MTU, 2048) bytes each, none kept
        longer than ``PART_TIMEOUT_MS``; every piece that breaks a rule is dropped and counted
        (``part_errors``), as is every payload given up (``parts_dropped``)."""
        c = self.counters
        c.parts_received += 1
        if not self.params.data_parts or len(frame) <= 1 + PART_HEADER:
            c.part_errors += 1  # not agreed in the handshake, or no piece
            return None
        mid = int.from_bytes(frame[1:5], "big")
        index, count = frame[5], frame[6]
        piece = frame[1 + PART_HEADER :]
        if not 2 <= count <= MAX_PARTS or index >= count:
            c.part_errors += 1
            return None
        partials = self._partials
        p = partials.get(mid)
        if p is None:
            for key in [k for k, q in partials.items() if now - q.started > PART_TIMEOUT_MS]:
                del partials[key]
                c.parts_dropped += 1
            while len(partials) >= MAX_PENDING_PARTS:
                del partials[next(iter(partials))]  # the oldest
                c.parts_dropped += 1
            p = partials[mid] = _Partial(count, now)
        elif p.count != count or p.pieces[index] is not None:
            c.part_errors += 1  # a piece that contradicts the others, or a second copy of one
            return None
        p.nbytes += len(piece)
        if p.nbytes > max(self.params.mtu, PMTUD_LIMIT):
            del partials[mid]  # larger than any datagram the peer may send
            c.part_errors += 1
            return None
        p.pieces[index] = piece
        p.got += 1
        if p.got < count:
            return None
        del partials[mid]
        c.parts_reassembled += 1
        return b"".join(p.pieces)  # type: ignore[arg-type]  # every piece is there

    @property
    def parts_pending(self) -> tuple[int, int]:
        """Payloads being reassembled from DATA_PART pieces, and the bytes they hold."""
        return len(self._partials), sum(p.nbytes for p in self._partials.values())

    def _stateless_reset(self, datagram: bytes) -> bool:
        """A datagram that ends with our reset token: the server forgot this connection."""
        token = self.reset_token
        if (
            token is None
            or self.state != OPEN
            or not hmac.compare_digest(bytes(datagram[-RESET_TOKEN_LEN:]), token)
        ):
            return False
        message = "stateless reset: the server no longer knows this connection (restarted or closed)"
        self._set_state(CLOSED)
        self.close_code = Reason.STATELESS_RESET
        self.close_message = message
        self.counters.stateless_resets_received += 1
        self.events.append(ConnectionClosed(Reason.STATELESS_RESET, message, by_peer=True))
        return True

    def _control(self, ft: int, plaintext: bytes, addr: Any, now: int) -> None:
        c = self.counters
        if ft == F_PING:
            if len(plaintext) >= 1 + PROBE_ID_LEN:  # an MTU probe: say it arrived (a small answer)
                c.mtu_probes_answered += 1
                self.outbox.append((self.seal_frame(bytes((F_PING_ACK,)) + plaintext[1:9], now), addr))
            return None
        if ft == F_PING_ACK and len(plaintext) == 1 + PROBE_ID_LEN:
            c.mtu_probe_acks += 1
            if len(self.probe_acks) < MAX_PROBE_ACKS:  # bounded if nobody takes them
                self.probe_acks.append(int.from_bytes(plaintext[1:], "big"))
            return None
        if ft == F_PATH_CHALLENGE and len(plaintext) == 9:
            self.outbox.append((self.seal_frame(bytes((F_PATH_RESPONSE,)) + plaintext[1:], now), addr))
            return None
        if ft == F_PATH_RESPONSE and len(plaintext) == 9:
            if self._challenge is not None and plaintext[1:] == self._challenge:
                validated = self._challenge_addr
                self._challenge = None
                self._validated_addr = validated
                if self.peer_addr == validated:
                    self.path_validated = True
                c.path_validated += 1
                self.events.append(PathValidated(validated))
            return None
        if ft in (F_CLOSE, F_GOAWAY):
            try:
                code, message = decode_reason_frame(plaintext[1:])
            except Exception:
                c.frame_errors += 1
                return None
            if ft == F_CLOSE:
                self._set_state(CLOSED)
                self.close_code = code
                self.close_message = message
                c.closes_received += 1
                self.events.append(ConnectionClosed(code, message, by_peer=True))
            else:
                self.goaway_received = (code, message)
                c.goaways_received += 1
                self.events.append(GoAwayReceived(code, message))
            return None
        c.frame_errors += 1
        return None

    # ------------------------------------------------------------------------------ keys

    def _candidates(self, phase: int, pn: int, now: int) -> tuple[EpochKeys, ...]:
        cur = self._recv
        if phase == (cur.epoch & 1):
            return (cur,)
        self._expire_prev(now)
        if self._recv_next is None:
            self._recv_next = cur.next(self._suite)
        if self._first_pn is not None and pn >= self._first_pn:
            return (self._recv_next,)
        if self._recv_prev is not None:
            return (self._recv_prev, self._recv_next)
        return (self._recv_next,)

    def _expire_prev(self, now: int) -> None:
        if self._recv_prev is None:
            return
        if now >= self._prev_expiry or (
            self._first_pn is not None and self._window.top - self._first_pn >= self._window.size
        ):
            self._recv_prev = None

    def _local_update(self, now: int) -> None:
        self._recv_prev = self._recv
        self._prev_expiry = now + self._cfg.key_grace_ms
        self._recv = self._recv_next if self._recv_next is not None else self._recv.next(self._suite)
        self._recv_next = None
        self._send = self._send.next(self._suite)
        self._first_pn = None
        self._confirmed = False
        self._sent_in_epoch = 0
        self._epoch_started = now
        self.counters.key_updates += 1
        self.events.append(KeyUpdated(self._send.epoch, by_peer=False))

    def _peer_update(self, keys: EpochKeys, pn: int, now: int) -> None:
        self._recv_prev = self._recv
        self._prev_expiry = now + self._cfg.key_grace_ms
        self._recv = keys
        self._recv_next = None
        while self._send.epoch < keys.epoch:
            self._send = self._send.next(self._suite)
        self._first_pn = pn
        self._confirmed = True
        self._sent_in_epoch = 0
        self._epoch_started = now
        self.counters.key_updates_by_peer += 1
        self.events.append(KeyUpdated(keys.epoch, by_peer=True))

    # ------------------------------------------------------------------------------ paths

    def _new_path(self, addr: Any, now: int) -> None:
        old = self.peer_addr
        self.peer_addr = addr
        self.counters.path_changes += 1
        self.events.append(PathChanged(old, addr))
        if addr == self._validated_addr:
            self.path_validated = True
            self._challenge = None
            return
        self.path_validated = False
        self._path_in = 0
        self._path_out = 0
        self._challenge = self._rng(8)
        self._challenge_addr = addr
        self._challenge_attempts = 0
        self._send_challenge(now)

    def _send_challenge(self, now: int) -> None:
        assert self._challenge is not None
        self._challenge_attempts += 1
        self._challenge_due = now + self._cfg.path_probe_interval_ms
        self.counters.path_challenges_sent += 1
        pkt = self.seal_frame(bytes((F_PATH_CHALLENGE,)) + self._challenge, now)
        self.outbox.append((pkt, self._challenge_addr))


def reason_text(code: int, message: str) -> str:
    """``"<reason>: <message>"`` for logs and errors."""
    name = reason_name(code)
    if not message:
        return name
    return message if message.lower().startswith(name) else f"{name}: {message}"
