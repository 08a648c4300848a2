"""The one-round-trip handshake: :class:`SecureClient` (initiator) and :class:`SecureServer` (responder).

Sans-I/O like the rest of secure mode: the caller passes datagrams, addresses and ``now`` (ms),
and sends what ``datagrams_to_send``/``Received.replies`` return. The Noise pattern is
``Noise_IKpsk2_25519_<cipher>_SHA256`` when the client pins the server's static key and
``Noise_NNpsk0_25519_<cipher>_SHA256`` when the two share only a PSK (or passphrase).
"""

from __future__ import annotations

import enum
import hmac
import os
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kcp.ratelimit import PrefixLimiter, address_keys
from kcp.wirehint import (
    HintCode,
    HintLimiter,
    SentLog,
    answerable,
    encode_hint,
    hint_message,
    parse_hint,
)

from .config import (
    Authorizer,
    ClientHello,
    HandshakeConfig,
    Refusal,
    SessionParams,
    check_accepted,
    features_of,
    fec_within,
    negotiate,
)
from .connection import SecureConnection, reason_text
from .cookie import SEALED_COOKIE_LEN, CookieJar, mac16, open_cookie, seal_cookie
from .errors import (
    DecodeError,
    HandshakeError,
    HandshakeKeyMismatch,
    HandshakeNoAnswer,
    HandshakePskMismatch,
    HandshakeRefused,
    HandshakeTimeout,
    HandshakeWireMismatch,
    SecureUsageError,
)
from .noise import (
    IKPSK2,
    NNPSK0,
    SUITE_BY_NAME,
    SUITES,
    HandshakeState,
    KeyPair,
    NoiseError,
    Pattern,
    sha256,
)
from .packet import (
    CID_LEN,
    MAX_RESET,
    MIN_RESET_TRIGGER,
    PATTERN_IKPSK2,
    PATTERN_NNPSK0,
    PROLOGUE_LABEL,
    RESET_TOKEN_LEN,
    RESP_HEADER,
    RETRY_HEADER,
    T_HINT,
    T_INITIATION,
    T_RESPONSE,
    T_RETRY,
    T_TRANSPORT,
    TAG_CID,
    TAG_FEATURES,
    TAG_FEC,
    TAG_MESSAGE,
    TAG_MTU,
    TAG_MUX,
    TAG_RESET,
    TAG_STATUS,
    TAG_SUITES,
    TAG_VERSIONS,
    TAG_WINDOWS,
    TRANSPORT_TYPES,
    WIRE_VERSION,
    Reason,
    decode_tlv,
    encode_tlv,
    tlv_u8,
    tlv_u16s,
)
from .stats import SecureCounters

Rng = Callable[[int], bytes]
ZERO_PSK = bytes(32)
_MIN_INITIATION = 256
_MAX_INITIATION = 1472
_MAX_REFUSALS_KEPT = 1024
HANDSHAKE_SOURCES = 4096
"""Addresses whose handshake budget (``SecureConfig.handshake_rate``) a server remembers at once
(the least recently used goes first)."""
_PATTERNS: dict[int, Pattern] = {PATTERN_IKPSK2: IKPSK2, PATTERN_NNPSK0: NNPSK0}

PSK_MISMATCH_MESSAGE = (
    "handshake failed: PSK mismatch: {who} holds the pinned key but its reply did not authenticate "
    "with our PSK (check the psk/passphrase)"
)
_WHAT_TO_CHECK: dict[int, str] = {
    Reason.VERSION_MISMATCH: "upgrade the older side",
    Reason.SUITE_REFUSED: "allow a common cipher suite: SecureConfig.suites",
    Reason.PARAMS_REFUSED: "make the client's transport settings fit the server's policy",
    Reason.BAD_TOKEN: "check the client's token",
    Reason.SERVER_BUSY: "try again later, or another server",
}


def _seconds(ms: int) -> str:
    return f"{ms / 1000:g} s"


def refusal_text(code: int, message: str, who: str) -> str:
    """The error text of an authenticated refusal by ``who``: the server's reason (naming the
    parameter and both sides' values where the server said them) and what to check."""
    text = f"handshake refused by {who}: {reason_text(code, message)}"
    hint = _WHAT_TO_CHECK.get(code)
    return f"{text} ({hint})" if hint else text


def generate_keypair(rng: Rng = os.urandom) -> tuple[bytes, bytes]:
    """A new static X25519 key pair for a server (or a client identity): (private, public), 32 bytes each."""
    kp = KeyPair.generate(rng)
    return kp.private_bytes_raw(), kp.public


def _mac1_key(pattern_id: int, material: bytes) -> bytes:
    return sha256(b"kcprpc mac1" + bytes((pattern_id,)) + material)


def _cookie_key(pattern_id: int, material: bytes) -> bytes:
    return sha256(b"kcprpc cookie" + bytes((pattern_id,)) + material)


def _encode_accept(server_cid: bytes, p: SessionParams, reset_token: bytes) -> bytes:
    return encode_tlv(
        [
            (TAG_STATUS, b"\x00"),
            (TAG_CID, server_cid),
            (TAG_VERSIONS, bytes((p.version,))),
            (TAG_SUITES, bytes((SUITE_BY_NAME[p.suite].suite_id,))),
            (TAG_MTU, struct.pack(">H", p.mtu)),
            (TAG_WINDOWS, struct.pack(">HH", p.snd_wnd, p.rcv_wnd)),
            (TAG_FEC, bytes((p.data_shards, p.parity_shards))),
            (TAG_MUX, bytes((p.mux_version,))),
            (TAG_RESET, reset_token),
            *([(TAG_FEATURES, bytes((p.features,)))] if p.features else []),
        ]
    )


def _encode_refusal(r: Refusal) -> bytes:
    items = [(TAG_STATUS, bytes((int(r.code),))), (TAG_MESSAGE, r.message.encode()[:512])]
    if r.allowed_suites:
        items.append((TAG_SUITES, bytes(r.allowed_suites)))
    return encode_tlv(items)


# ============================================================================================ client


class ClientState(str, enum.Enum):
    """A client handshake's state: idle -> initiating -> established | failed."""

    IDLE = "idle"
    INITIATING = "initiating"
    ESTABLISHED = "established"
    FAILED = "failed"


CLIENT_TRANSITIONS: dict[ClientState, frozenset[ClientState]] = {
    ClientState.IDLE: frozenset({ClientState.INITIATING}),
    ClientState.INITIATING: frozenset({ClientState.ESTABLISHED, ClientState.FAILED}),
    ClientState.ESTABLISHED: frozenset(),
    ClientState.FAILED: frozenset(),
}


class SecureClient:
    """The initiator. ``initiate(now)`` gives the first datagram; feed replies to :meth:`receive`.

    On success :attr:`connection` holds the established :class:`SecureConnection` (its first
    datagram, a key-confirming PING, waits in ``connection.datagrams_to_send``). On failure
    :attr:`error` holds a :class:`HandshakeError` with a readable message.
    """

    def __init__(
        self,
        config: HandshakeConfig,
        rng: Rng = os.urandom,
        *,
        counters: SecureCounters | None = None,
        peer: str = "",
    ) -> None:
        self.config = config
        self._rng = rng
        self.counters = counters if counters is not None else SecureCounters()
        self.peer = peer
        """The server's ``HOST:PORT``, for error messages ("": "the server")."""
        self._who = f"the server at {peer}" if peer else "the server"
        self.heard = 0
        """Datagrams received from the server while the handshake ran (0: it never answered)."""
        self._sent = SentLog(8)  # our initiations' first bytes, which a wire hint must echo
        psk = config.effective_psk
        if config.server_public_key is not None:
            self._pattern_id = PATTERN_IKPSK2
            self._psk = psk if psk is not None else ZERO_PSK
            self._static: KeyPair | None = (
                KeyPair.from_private_bytes(config.static_key) if config.static_key else KeyPair.generate(rng)
            )
            material = config.server_public_key
        elif psk is not None:
            self._pattern_id = PATTERN_NNPSK0
            self._psk = psk
            self._static = None
            material = psk
        else:
            raise SecureUsageError("secure client needs server_public_key (pinned key) or psk/passphrase")
        self._mac1_key = _mac1_key(self._pattern_id, material)
        self._cookie_key = _cookie_key(self._pattern_id, material)
        self._suites_left = list(config.suite_ids())
        self._suite_id = self._suites_left.pop(0)
        self.local_cid = config.cid_prefix + rng(CID_LEN - len(config.cid_prefix))
        self.state: ClientState = ClientState.IDLE
        self.error: HandshakeError | None = None
        self.connection: SecureConnection | None = None
        self._hs: HandshakeState | None = None
        self._base = b""
        self._mac1 = b""
        self._cookie: bytes | None = None
        self._outbox: list[bytes] = []
        self._deadline = 0
        self._next_retx = 0
        self._interval = config.handshake_retry_ms
        self._sent_at = 0  # when the current initiation went out, and how many times:
        self._copies = 0  # the answer gives an RTT sample only to an initiation sent once (Karn)

    def _set_state(self, new: ClientState) -> None:
        assert new in CLIENT_TRANSITIONS[self.state], f"illegal transition {self.state} -> {new}"
        self.state = new

    @property
    def public_key(self) -> bytes | None:
        """The client's static public key (IK mode), which the server's hook sees."""
        return self._static.public if self._static else None

    @property
    def pattern_name(self) -> str:
        return "IKpsk2" if self._pattern_id == PATTERN_IKPSK2 else "NNpsk0"

    def initiate(self, now: int) -> bytes:
        """Start the handshake; returns the (padded, fixed-size) initiation datagram."""
        if self.state is not ClientState.IDLE:
            raise SecureUsageError("initiate() called twice")
        self._set_state(ClientState.INITIATING)
        self.counters.handshakes_initiated += 1
        self._deadline = now + self.config.handshake_timeout_ms
        return self._start(now)

    def _start(self, now: int) -> bytes:
        cfg = self.config
        suite = SUITES[self._suite_id]
        header = bytes((T_INITIATION, WIRE_VERSION, self._suite_id, self._pattern_id)) + self.local_cid
        pattern = _PATTERNS[self._pattern_id]
        self._hs = HandshakeState(
            pattern,
            suite,
            initiator=True,
            prologue=PROLOGUE_LABEL + header,
            rng=self._rng,
            s=self._static,
            rs=cfg.server_public_key,
            psk=self._psk,
        )
        msg1 = self._hs.write_message(self._hello().encode())
        body = header + struct.pack(">H", len(msg1)) + msg1
        room = cfg.initiation_size - 32 - len(body)
        if room < 0:
            raise SecureUsageError(
                f"the token does not fit: initiation needs {len(body) + 32} bytes, initiation_size is "
                f"{cfg.initiation_size}"
            )
        padded = body + bytes(room)
        self._mac1 = mac16(self._mac1_key, padded)
        self._base = padded + self._mac1
        self._sent.add(padded)
        self._cookie = None
        self._interval = cfg.handshake_retry_ms
        self._next_retx = now + self._interval
        self._sent_at = now
        self._copies = 1
        self.counters.initiations_sent += 1
        return self._current()

    def _hello(self) -> ClientHello:
        """The proposal sent in the initiation (``kcp.secure.testing`` overrides it to play a hostile client)."""
        return ClientHello.from_config(self.config)

    def _current(self) -> bytes:
        mac2 = mac16(self._cookie, self._base) if self._cookie is not None else bytes(16)
        return self._base + mac2

    def datagrams_to_send(self, now: int) -> list[bytes]:
        """Handshake datagrams (retransmissions, retries with a cookie) for the server address."""
        out, self._outbox = self._outbox, []
        return out

    def get_timer(self) -> int | None:
        """When :meth:`handle_timer` wants to run (ms), or None when the handshake is over."""
        return min(self._next_retx, self._deadline) if self.state is ClientState.INITIATING else None

    def handle_timer(self, now: int) -> None:
        """Retransmit the initiation (backing off), or fail once ``handshake_timeout_ms`` is over."""
        if self.state is not ClientState.INITIATING:
            return
        if now >= self._deadline:
            self._fail(self._timeout_error(self.config.handshake_timeout_ms))
        elif now >= self._next_retx:
            # doubling, capped: on a bursty link a lost initiation's copies must not all fall in
            # one burst, so several go out within the timeout (250, 500, 1000, 1000 ... ms)
            self._interval = min(self._interval * 2, max(self.config.handshake_retry_max_ms, self._interval))
            self._next_retx = now + self._interval
            self._copies += 1
            self.counters.initiations_sent += 1
            self._outbox.append(self._current())

    def abandon(self, now: int) -> HandshakeError:
        """Give up now (the session layer's own timeout); returns the error, also kept in :attr:`error`."""
        if self.state is ClientState.INITIATING:
            waited = self.config.handshake_timeout_ms - max(0, self._deadline - now)
            self._fail(self._timeout_error(waited))
        return self.error or HandshakeError("handshake not running")

    def _timeout_error(self, waited_ms: int) -> HandshakeTimeout:
        """No answer at all (:class:`HandshakeNoAnswer`), or answers that never authenticated."""
        if not self.heard:
            return HandshakeNoAnswer(
                f"handshake failed: no answer from {self._who} within {_seconds(waited_ms)}: is the "
                "server running and reachable over UDP (address, port, firewall)?"
            )
        return HandshakeTimeout(
            f"handshake failed: no authenticated answer from {self._who} within {_seconds(waited_ms)} "
            f"({self.heard} datagrams that did not authenticate): is it a kcprpc secure server, "
            "with this key?"
        )

    def _fail(self, err: HandshakeError) -> None:
        self._set_state(ClientState.FAILED)
        self.error = err
        self.counters.handshakes_failed += 1

    def receive(self, datagram: bytes, addr: Any, now: int) -> SecureConnection | None:
        """Handle one datagram from the server during the handshake. Returns the connection once it
        is established (then feed transport packets to ``connection.open``). Never raises on garbage."""
        c = self.counters
        if self.state is not ClientState.INITIATING or not datagram:
            if datagram and datagram[0] in TRANSPORT_TYPES and self.connection is not None:
                return None
            c.bad_type += 1
            return None
        self.heard += 1
        t = datagram[0]
        if t == T_HINT:
            self._on_hint(datagram)
            return None
        if t == T_RETRY:
            if (
                len(datagram) != RETRY_HEADER + SEALED_COOKIE_LEN
                or datagram[2 : 2 + CID_LEN] != self.local_cid
            ):
                c.unknown_cid += 1
                return None
            cookie = open_cookie(self._cookie_key, bytes(datagram[RETRY_HEADER:]), self._mac1)
            if cookie is None:
                c.decrypt_errors += 1
                return None
            self._cookie = cookie
            c.retries_received += 1
            c.initiations_sent += 1
            self._outbox.append(self._current())
            return None
        if t != T_RESPONSE:
            c.bad_type += 1
            return None
        if len(datagram) < RESP_HEADER + 48 or datagram[2 : 2 + CID_LEN] != self.local_cid:
            c.unknown_cid += 1
            return None
        assert self._hs is not None
        try:
            payload = self._hs.read_message(bytes(datagram[RESP_HEADER:]))
        except NoiseError:
            c.handshake_decrypt_errors += 1
            self._fail(
                HandshakePskMismatch(PSK_MISMATCH_MESSAGE.format(who=self._who), Reason.PROTOCOL_ERROR)
            )
            return None
        try:
            return self._on_answer(payload, addr, now)
        except DecodeError:
            c.frame_errors += 1
            self._fail(
                HandshakeError("handshake failed: the server's answer is malformed", Reason.PROTOCOL_ERROR)
            )
            return None

    def _on_hint(self, datagram: bytes) -> None:
        """A wire hint (kcp.wirehint): unauthenticated advice, taken only when it echoes one of our
        initiations; then the handshake fails at once with its reason."""
        c = self.counters
        hint = parse_hint(datagram)
        if hint is None or not self._sent.bound(hint[2]) or hint[0] is HintCode.SECURE_WIRE:
            c.hints_ignored += 1
            return
        code, detail, _ = hint
        c.hints_received += 1
        text = "handshake failed: " + hint_message(code, detail, self.peer, wire_version=WIRE_VERSION)
        if code in (HintCode.WRONG_KEY, HintCode.NO_PSK_MODE, HintCode.NO_KEY_MODE):
            self._fail(HandshakeKeyMismatch(text, Reason.NONE))
        elif code is HintCode.WIRE_VERSION:
            self._fail(HandshakeWireMismatch(text, Reason.VERSION_MISMATCH))
        else:
            self._fail(HandshakeWireMismatch(text, Reason.NONE))

    def _on_answer(self, payload: bytes, addr: Any, now: int) -> SecureConnection | None:
        assert self._hs is not None
        t = decode_tlv(payload)
        status = tlv_u8(t, TAG_STATUS)
        if status is None:
            raise DecodeError("no status")
        if status != 0:
            message = t.get(TAG_MESSAGE, b"").decode("utf-8", "replace")
            allowed = t.get(TAG_SUITES, b"")
            if status == Reason.SUITE_REFUSED:
                usable = [s for s in self._suites_left if s in allowed]
                if usable:
                    self._suites_left = [s for s in self._suites_left if s != usable[0]]
                    self._suite_id = usable[0]
                    self._outbox.append(self._start(now))
                    return None
            self._fail(HandshakeRefused(refusal_text(status, message, self._who), status))
            return None
        cid = t.get(TAG_CID)
        version = tlv_u8(t, TAG_VERSIONS)
        suite = tlv_u8(t, TAG_SUITES)
        (mtu,) = tlv_u16s(t, TAG_MTU, 1) or (0,)
        wnd = tlv_u16s(t, TAG_WINDOWS, 2)
        fec = t.get(TAG_FEC, b"")
        mux = tlv_u8(t, TAG_MUX)
        reset_token = t.get(TAG_RESET)
        if reset_token is not None and len(reset_token) != RESET_TOKEN_LEN:
            raise DecodeError("bad reset token")
        if (
            cid is None
            or len(cid) != CID_LEN
            or version is None
            or suite != self._suite_id
            or wnd is None
            or len(fec) != 2
            or mux is None
        ):
            raise DecodeError("incomplete accept")
        params = SessionParams(
            version,
            next(n for n, s in SUITE_BY_NAME.items() if s.suite_id == suite),
            mtu,
            wnd[0],
            wnd[1],
            fec[0],
            fec[1],
            mux,
            features_of(t),
        )
        k1, k2 = self._hs.split()
        conn = SecureConnection(
            config=self.config,
            suite=SUITES[self._suite_id],
            is_client=True,
            send_secret=k1,
            recv_secret=k2,
            local_cid=self.local_cid,
            remote_cid=cid,
            peer_addr=addr,
            params=params,
            rng=self._rng,
            now=now,
            peer_static=self.config.server_public_key,
            handshake_hash=self._hs.handshake_hash,
            reset_token=reset_token,
        )
        self._hs = None
        problem = check_accepted(self.config, params)
        if problem is not None:
            conn.close(Reason.PARAMS_REFUSED, problem, now)
            assert conn.close_packet is not None
            self._outbox.append(conn.close_packet)
            self._fail(
                HandshakeRefused(
                    f"handshake failed: {problem} (this client refused the answer of {self._who}: "
                    "check its transport settings against the server's)",
                    Reason.PARAMS_REFUSED,
                )
            )
            return None
        if self._copies == 1:
            conn.handshake_rtt_ms = max(1, now - self._sent_at)
        conn.queue_datagram(conn.ping(now), addr)
        self._set_state(ClientState.ESTABLISHED)
        self.connection = conn
        self.counters.handshakes_completed += 1
        return conn


# ============================================================================================ server


@dataclass(slots=True)
class Received:
    """What the server made of one datagram."""

    replies: list[tuple[bytes, Any]] = field(default_factory=list)
    connection: SecureConnection | None = None
    payload: bytes | None = None
    accepted: bool = False
    refusal: Refusal | None = None  # a new refusal was sent (for the caller's rate-limited log)
    clamped: str | None = None  # the proposal was above the server's policy and was lowered: what


@dataclass(slots=True)
class _HalfOpen:
    server_cid: bytes
    client_cid: bytes
    addr: Any
    send_secret: bytes
    recv_secret: bytes
    suite_id: int
    params: SessionParams
    client_static: bytes | None
    handshake_hash: bytes
    created: int
    msg1: bytes
    response: bytes
    conn: SecureConnection | None = None


class SecureServer:
    """The responder: answers initiations (or asks for a cookie under load), confirms connections,
    and finds established connections by connection ID.

    ``authorize(token, client_static_public, addr)`` returns None to accept or a refusal message.
    """

    def __init__(
        self,
        config: HandshakeConfig,
        rng: Rng = os.urandom,
        *,
        authorize: Authorizer | None = None,
        counters: SecureCounters | None = None,
        now: int = 0,
    ) -> None:
        self.config = config
        self._rng = rng
        self._authorize = authorize
        self.counters = counters if counters is not None else SecureCounters()
        self._static = KeyPair.from_private_bytes(config.static_key) if config.static_key else None
        psk = config.effective_psk
        self._psk = psk
        self._mac1_keys: dict[int, bytes] = {}
        self._cookie_keys: dict[int, bytes] = {}
        if self._static is not None:
            self._mac1_keys[PATTERN_IKPSK2] = _mac1_key(PATTERN_IKPSK2, self._static.public)
            self._cookie_keys[PATTERN_IKPSK2] = _cookie_key(PATTERN_IKPSK2, self._static.public)
        if psk is not None:
            self._mac1_keys[PATTERN_NNPSK0] = _mac1_key(PATTERN_NNPSK0, psk)
            self._cookie_keys[PATTERN_NNPSK0] = _cookie_key(PATTERN_NNPSK0, psk)
        if not self._mac1_keys:
            raise SecureUsageError("secure server needs static_key and/or psk/passphrase")
        self._jar = CookieJar(rng, config.cookie_rotate_ms, now)
        self._half_open: OrderedDict[bytes, _HalfOpen] = OrderedDict()
        self._by_ephemeral: dict[bytes, bytes] = {}
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._refusals: OrderedDict[bytes, tuple[bytes, bytes]] = OrderedDict()
        self.connections: dict[bytes, SecureConnection] = {}
        self.host_busy = False
        """Set by the listener while its session table is nearly full or it drains: cookies first,
        as ``config.always_retry`` asks for always (which the listener never changes)."""
        self._rate_start = now
        self._rate_count = 0
        if config.reset_key is not None:
            reset_material = config.reset_key
        elif self._static is not None:
            reset_material = self._static.private_bytes_raw()
        else:
            assert psk is not None
            reset_material = psk
        self._reset_key = hmac.new(reset_material, b"kcprpc stateless reset", "sha256").digest()
        self._reset_start = now
        self._reset_count = 0
        self.hints = HintLimiter(config.hint_rate_per_source, config.hint_rate)
        """Rate limits of wire hints (kcp.wirehint): per source address and in total, per second."""
        self.handshake_limiter = PrefixLimiter(
            config.handshake_rate,
            config.handshake_burst,
            address_keys(config.exempt, HANDSHAKE_SOURCES),
            max_prefixes=HANDSHAKE_SOURCES,
        )
        """Under load, the handshakes (DH work) one address may cost per second (kcp.ratelimit)."""

    @property
    def public_key(self) -> bytes | None:
        """The server's static public key (what clients pin), or None in PSK-only mode."""
        return self._static.public if self._static else None

    def reset_token(self, cid: bytes) -> bytes:
        """The stateless reset token of one of our connection IDs (same after a restart)."""
        return mac16(self._reset_key, cid)

    @property
    def half_open(self) -> int:
        """Handshakes answered and not yet confirmed (bounded by ``max_half_open``)."""
        return len(self._half_open)

    def state_sizes(self) -> dict[str, int]:
        """Sizes of every per-peer table (for memory-bound checks)."""
        return {
            "half_open": len(self._half_open),
            "by_ephemeral": len(self._by_ephemeral),
            "seen": len(self._seen),
            "refusals": len(self._refusals),
            "connections": len(self.connections),
            "hint_sources": self.hints.size(),
            "handshake_sources": len(self.handshake_limiter),
        }

    def connection_for(self, datagram: bytes) -> SecureConnection | None:
        """The established connection a transport datagram is addressed to (hot path), or None."""
        if len(datagram) > CID_LEN and datagram[0] in TRANSPORT_TYPES:
            return self.connections.get(bytes(datagram[1 : 1 + CID_LEN]))
        return None

    def remove(self, conn: SecureConnection) -> None:
        """Forget a connection (the session layer calls this when it ends)."""
        self.connections.pop(conn.local_cid, None)

    def get_timer(self) -> int | None:
        """When :meth:`handle_timer` wants to run next (ms)."""
        if self._half_open:
            first = next(iter(self._half_open.values()))
            return first.created + self.config.half_open_timeout_ms
        return None

    def handle_timer(self, now: int) -> None:
        """Expire half-open handshakes and rotate the cookie secret."""
        self._jar.rotate_if_due(now)
        self._expire(now)
        self.handshake_limiter.prune(now)

    def _expire(self, now: int) -> None:
        limit = now - self.config.half_open_timeout_ms
        while self._half_open:
            cid, h = next(iter(self._half_open.items()))
            if h.created > limit:
                break
            self._drop_half_open(cid)
            self.counters.half_open_expired += 1

    def _drop_half_open(self, cid: bytes) -> _HalfOpen | None:
        h = self._half_open.pop(cid, None)
        if h is not None:
            self._by_ephemeral.pop(h.msg1[:32], None)
            self.counters.half_open = len(self._half_open)
        return h

    # -------------------------------------------------------------------------------- receive

    def receive(self, datagram: bytes, addr: Any, now: int) -> Received:
        """Handle one datagram from ``addr``. Never raises on network input."""
        c = self.counters
        if not datagram:
            c.short_packets += 1
            return Received()
        t = datagram[0]
        if t in TRANSPORT_TYPES:
            return self._transport(datagram, addr, now)
        if t == T_INITIATION:
            try:
                return self._initiation(datagram, addr, now)
            except (DecodeError, ValueError, struct.error):
                c.frame_errors += 1
                return Received()
        c.bad_type += 1  # not the secure wire at all: most likely a compat (kcp-go) dial
        return self._hint(HintCode.SECURE_WIRE, datagram, addr, now)

    def _hint(self, code: HintCode, datagram: bytes, addr: Any, now: int, detail: int = 0) -> Received:
        """A wire hint answering ``datagram`` (kcp.wirehint): never larger than it, rate-limited."""
        hint = encode_hint(code, datagram, detail) if answerable(datagram) else None
        if hint is None:
            return Received()
        if not self.hints.allow(addr, now):
            self.counters.hints_rate_limited += 1
            return Received()
        self.counters.hints_sent += 1
        return Received(replies=[(hint, addr)])

    def _transport(self, datagram: bytes, addr: Any, now: int) -> Received:
        cid = bytes(datagram[1 : 1 + CID_LEN])
        conn = self.connections.get(cid)
        if conn is not None:
            return Received(connection=conn, payload=conn.open(datagram, addr, now))
        h = self._half_open.get(cid)
        if h is None:
            self.counters.unknown_cid += 1
            return self._stateless_reset(datagram, cid, addr, now)
        conn = h.conn
        if conn is None:  # built once per half-open handshake, on its first transport packet
            conn = h.conn = SecureConnection(
                config=self.config,
                suite=SUITES[h.suite_id],
                is_client=False,
                send_secret=h.send_secret,
                recv_secret=h.recv_secret,
                local_cid=h.server_cid,
                remote_cid=h.client_cid,
                peer_addr=h.addr,
                params=h.params,
                rng=self._rng,
                now=now,
                peer_static=h.client_static,
                handshake_hash=h.handshake_hash,
            )
        payload = conn.open(datagram, addr, now)
        if conn.counters.packets_opened == 0:
            self.counters.decrypt_errors += 1
            return Received()
        self._drop_half_open(cid)
        self.connections[cid] = conn
        self.counters.accepted += 1
        return Received(connection=conn, payload=payload, accepted=True)

    def _initiation(self, d: bytes, addr: Any, now: int) -> Received:
        c = self.counters
        cfg = self.config
        c.initiations_received += 1
        n = len(d)
        if n < _MIN_INITIATION or n > _MAX_INITIATION:
            c.short_packets += 1  # not a secure initiation: a compat datagram whose conv starts 0xC1?
            return self._hint(HintCode.SECURE_WIRE, d, addr, now)
        if d[1] != WIRE_VERSION:
            c.bad_type += 1
            return self._hint(HintCode.WIRE_VERSION, d, addr, now, WIRE_VERSION)
        suite_id, pattern_id = d[2], d[3]
        mac1_key = self._mac1_keys.get(pattern_id)
        if mac1_key is None or suite_id not in SUITES:
            c.bad_mac1 += 1
            if suite_id in SUITES and pattern_id in _PATTERNS:  # a mode this server's keys cannot run
                mode = HintCode.NO_PSK_MODE if pattern_id == PATTERN_NNPSK0 else HintCode.NO_KEY_MODE
                return self._hint(mode, d, addr, now)
            return self._hint(HintCode.SECURE_WIRE, d, addr, now)  # not an initiation we know
        mac1 = d[n - 32 : n - 16]
        if not hmac.compare_digest(mac16(mac1_key, d[: n - 32]), mac1):
            c.bad_mac1 += 1  # another key: say so (unauthenticated advice, bound to this initiation)
            return self._hint(HintCode.WRONG_KEY, d, addr, now)
        self._jar.rotate_if_due(now)
        self._expire(now)
        if now - self._rate_start >= 1000:
            self._rate_start = now
            self._rate_count = 0
        client_cid = bytes(d[4:12])
        under_load = (
            cfg.always_retry
            or self.host_busy
            or len(self._half_open) >= cfg.retry_threshold
            or self._rate_count >= cfg.retry_rate
        )
        if under_load and not self._jar.check_mac2(addr, d[: n - 16], d[n - 16 :]):
            if any(d[n - 16 :]):
                c.bad_mac2 += 1
            sealed = seal_cookie(
                self._cookie_keys[pattern_id], self._rng(12), self._jar.cookie(addr), bytes(mac1)
            )
            reply = bytes((T_RETRY, 0)) + client_cid + sealed
            c.retries_sent += 1
            return self._reply(reply, n, addr)
        (noise_len,) = struct.unpack_from(">H", d, 12)
        if 14 + noise_len > n - 32 or noise_len < 48:
            c.short_packets += 1
            return Received()
        msg1 = bytes(d[14 : 14 + noise_len])
        e_pub = msg1[:32]
        known = self._by_ephemeral.get(e_pub)
        if known is not None:
            h = self._half_open.get(known)
            if h is not None and h.msg1 == msg1 and h.client_cid == client_cid:
                c.initiation_retransmits += 1
                return self._reply(h.response, n, addr)
        refused = self._refusals.get(e_pub)
        if refused is not None and refused[0] == sha256(msg1):
            c.initiation_retransmits += 1  # the refusal was lost: say it again
            return self._reply(refused[1], n, addr)
        if known is not None or e_pub in self._seen:
            c.initiation_replays += 1
            return Received()
        # the address is proven (mac2) when under load: what it may cost is then its own budget, so
        # that one client holding the key cannot take the DH work (and the half-open table) for itself
        if under_load and not self.handshake_limiter.allow(addr, now):
            c.handshakes_rate_limited += 1
            return Received()
        self._rate_count += 1
        pattern = _PATTERNS[pattern_id]
        hs = HandshakeState(
            pattern,
            SUITES[suite_id],
            initiator=False,
            prologue=PROLOGUE_LABEL + bytes(d[:12]),
            rng=self._rng,
            s=self._static if pattern is IKPSK2 else None,
            psk=(self._psk or ZERO_PSK) if pattern is IKPSK2 else self._psk,
        )
        try:
            payload = hs.read_message(msg1)
        except NoiseError:
            c.handshake_decrypt_errors += 1
            return Received()
        hello = ClientHello.decode(payload)
        self._remember(e_pub)
        client_static = hs.rs if pattern is IKPSK2 else None
        decision: SessionParams | Refusal = negotiate(cfg, hello, suite_id)
        if isinstance(decision, SessionParams) and self._authorize is not None:
            try:
                verdict = self._authorize(hello.token, client_static, addr)
            except Exception as exc:  # the hook is user code: refuse rather than crash the loop
                verdict = f"authorization hook raised {type(exc).__name__}"
            if isinstance(verdict, Refusal):  # the glue's own refusals (draining: GOING_AWAY)
                decision = verdict
            elif verdict is not None:
                decision = Refusal(Reason.BAD_TOKEN, verdict)
        if isinstance(decision, Refusal):
            c.refused += 1
            if decision.code == Reason.PARAMS_REFUSED:
                c.params_refused += 1
            reply = bytes((T_RESPONSE, 0)) + client_cid + hs.write_message(_encode_refusal(decision))
            self._refusals[e_pub] = (sha256(msg1), reply)
            while len(self._refusals) > _MAX_REFUSALS_KEPT:
                self._refusals.popitem(last=False)
            r = self._reply(reply, n, addr)
            r.refusal = decision
            return r
        clamped = None
        if not fec_within(cfg.fec, hello.fec) and (decision.data_shards, decision.parity_shards) != hello.fec:
            clamped = f"FEC {hello.fec[0]}/{hello.fec[1]} lowered to {decision.data_shards}/{decision.parity_shards}"
        prefix = cfg.cid_prefix  # a worker's index (kcp.reuseport), the rest random
        server_cid = prefix + self._rng(CID_LEN - len(prefix))
        while server_cid in self.connections or server_cid in self._half_open:
            server_cid = prefix + self._rng(CID_LEN - len(prefix))
        response = (
            bytes((T_RESPONSE, 0))
            + client_cid
            + hs.write_message(_encode_accept(server_cid, decision, self.reset_token(server_cid)))
        )
        if len(response) > n:
            c.amplification_refused += 1
            return Received()
        if clamped is not None:
            c.fec_clamped += 1
        k1, k2 = hs.split()
        while len(self._half_open) >= cfg.max_half_open:
            oldest = next(iter(self._half_open))
            self._drop_half_open(oldest)
            c.half_open_evicted += 1
        self._half_open[server_cid] = _HalfOpen(
            server_cid,
            client_cid,
            addr,
            send_secret=k2,
            recv_secret=k1,
            suite_id=suite_id,
            params=decision,
            client_static=client_static,
            handshake_hash=hs.handshake_hash,
            created=now,
            msg1=msg1,
            response=response,
        )
        self._by_ephemeral[e_pub] = server_cid
        c.half_open = len(self._half_open)
        c.half_open_max = max(c.half_open_max, c.half_open)
        return Received(replies=[(response, addr)], clamped=clamped)

    def _stateless_reset(self, datagram: bytes, cid: bytes, addr: Any, now: int) -> Received:
        """Tell a client that we lost its connection: random bytes ending with the CID's reset token,
        always shorter than the packet that caused it (two servers cannot loop), and rate-limited."""
        n = len(datagram)
        if n < MIN_RESET_TRIGGER or self.config.reset_rate <= 0:
            return Received()
        if now - self._reset_start >= 1000:
            self._reset_start = now
            self._reset_count = 0
        if self._reset_count >= self.config.reset_rate:
            return Received()
        self._reset_count += 1
        size = min(n - 1, MAX_RESET)
        filler = self._rng(size - RESET_TOKEN_LEN)
        reset = bytes((T_TRANSPORT | (filler[0] & 1),)) + filler[1:] + self.reset_token(cid)
        self.counters.stateless_resets_sent += 1
        return Received(replies=[(reset, addr)])

    def _reply(self, reply: bytes, request_len: int, addr: Any) -> Received:
        if len(reply) > request_len:
            self.counters.amplification_refused += 1
            return Received()
        return Received(replies=[(reply, addr)])

    def _remember(self, e_pub: bytes) -> None:
        self._seen[e_pub] = None
        while len(self._seen) > self.config.replay_cache:
            self._seen.popitem(last=False)
