"""Configuration of secure mode and the negotiation of session parameters."""

from __future__ import annotations

import functools
import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from kcp.fieldcheck import check_fields
from kcp.ratelimit import LOOPBACK, parse_networks
from kcp.rs import MAX_TOTAL_SHARDS

from .errors import SecureUsageError
from .noise import SUITE_BY_NAME, SUITES
from .packet import (
    FEATURE_ACK_REPEAT,
    FEATURE_DATA_PARTS,
    FEATURE_HELD_ACKS,
    INIT_FIXED,
    TAG_FEATURES,
    TAG_FEC,
    TAG_MTU,
    TAG_MUX,
    TAG_SUITES,
    TAG_TOKEN,
    TAG_VERSIONS,
    TAG_WINDOWS,
    Reason,
    decode_tlv,
    encode_tlv,
    tlv_u16s,
)

PSK_SALT = b"kcprpc secure psk v1"
SUPPORTED_VERSIONS = (1,)
MAX_TOKEN = 512


@functools.lru_cache(maxsize=16)
def derive_psk(passphrase: str) -> bytes:
    """The 32-byte PSK of a passphrase: scrypt (n=2**14, r=8, p=1) with a fixed salt.

    scrypt makes each offline guess cost ~16 MiB and tens of milliseconds; a weak passphrase is
    still guessable by whoever records a handshake (see docs/security.md).
    """
    return hashlib.scrypt(passphrase.encode("utf-8"), salt=PSK_SALT, n=1 << 14, r=8, p=1, dklen=32)


@dataclass(frozen=True, slots=True)
class SessionParams:
    """What both sides agreed on during the handshake (windows are the client's view: snd = client→server)."""

    version: int
    suite: str
    mtu: int
    snd_wnd: int
    rcv_wnd: int
    data_shards: int
    parity_shards: int
    mux_version: int
    features: int = 0
    """Optional protocol features both ends use (a bit set: ``FEATURE_DATA_PARTS``,
    ``FEATURE_HELD_ACKS``, ``FEATURE_ACK_REPEAT``)."""

    @property
    def data_parts(self) -> bool:
        """Both ends take DATA_PART frames: a payload larger than the path MTU goes in pieces."""
        return bool(self.features & FEATURE_DATA_PARTS)

    @property
    def held_acks(self) -> bool:
        """Both ends read a KCP ACK's ``frg`` as "its sender holds lone acks" (docs/wire-format/kcp.md,
        "Held acks"): either end may then hold them, as ``kcp.SessionConfig.ack_hold`` says."""
        return bool(self.features & FEATURE_HELD_ACKS)

    @property
    def ack_repeat(self) -> bool:
        """Both ends send and take KCP REACK segments: the ACK of a segment that came above a hole
        goes twice more (docs/wire-format/kcp.md, "Repeated acks")."""
        return bool(self.features & FEATURE_ACK_REPEAT)


KNOWN_FEATURES = FEATURE_DATA_PARTS | FEATURE_HELD_ACKS | FEATURE_ACK_REPEAT
"""The feature bits this version understands (others in a client's offer are ignored)."""

PMTUD_LIMIT = 2048
"""The largest ``pmtud_max``: the session layer's receive buffer (``kcp.batch.MAX_DATAGRAM``)
truncates larger datagrams."""


_BOUNDS: dict[str, tuple[float, float | None, str]] = {
    # field: (least, most or None, what the edge means); a value past them refused by name
    "min_mtu": (576, 65000, ""),
    "max_window": (1, 65535, ""),
    "initiation_size": (256, 1472, ""),
    "handshake_timeout_ms": (1, None, ""),
    "handshake_retry_ms": (1, None, ""),
    "handshake_retry_max_ms": (1, None, ""),
    "max_half_open": (1, None, ""),
    "retry_threshold": (0, None, " (0: every initiation asks for a cookie)"),
    "retry_rate": (0, None, " (0: every initiation asks for a cookie)"),
    "handshake_rate": (0, None, " (0: no limit)"),
    "datagram_rate": (0, None, " (0: no limit)"),
    "half_open_timeout_ms": (1, None, ""),
    "cookie_rotate_ms": (1, None, ""),
    "replay_cache": (1, None, " (the initiations remembered against replays)"),
    "reset_rate": (0, None, " (0: no stateless resets)"),
    "hint_rate": (0, None, " (0: no hints)"),
    "hint_rate_per_source": (0, None, " (0: no hints)"),
    "replay_window": (64, None, " (default 2048)"),
    "rekey_after_packets": (1, None, ""),
    "rekey_after_ms": (1, None, ""),
    "key_grace_ms": (0, None, ""),
    "path_probe_interval_ms": (1, None, ""),
    "path_probe_attempts": (1, None, ""),
    "amplification_factor": (0, None, " (0: nothing but path probes to a path not yet validated)"),
    "pmtud_probe_timeout_ms": (1, None, ""),
    "pmtud_confirm_ms": (1, None, ""),
    "pmtud_raise_ms": (1, None, ""),
}
"""The range of each number of :class:`SecureConfig` (its type is checked first)."""


@dataclass(frozen=True)
class SecureConfig:
    """Secure mode's knobs (frozen, validated): versions, suites and limits of the handshake,
    DoS limits, rekeying, path probing and path MTU discovery (``pmtud*``: on by default, the
    search goes up to ``pmtud_max`` bytes of UDP payload and falls back to ``pmtud_base`` after a
    black hole; the probe timeout follows the path's RTT up to ``pmtud_probe_timeout_ms``;
    docs/tuning.md "Path MTU"). ``data_parts`` offers DATA_PART frames in the handshake: when both
    ends do, a datagram that no longer fits the path MTU (a KCP segment sent before the MTU fell)
    is sent in pieces and reassembled by the peer (docs/security.md). ``held_acks`` offers held
    acks: when both ends do, a KCP ACK's ``frg`` tells whether its sender holds lone acks, and a
    session may hold its own (``kcp.SessionConfig.ack_hold``; docs/tuning.md "Delayed acks").
    ``ack_repeat`` offers repeated acks: when both ends do, the ACK of a segment that came above a
    hole goes again with the next two flushes that send ACKs, so a lost ACK no longer costs a
    resend of a segment that arrived (docs/tuning.md "Repeated acks").
    A :class:`kcp.SecureWire` carries one (``config=``).

    What is declared elsewhere, once: the identity (keys, PSK/passphrase, token) and FEC on the
    :class:`kcp.SecureWire`, the MTU and windows on :class:`kcp.SessionConfig`; the handshake core
    gets all of it in one :class:`HandshakeConfig`.

    Negotiated parameters: on a client they are the proposal; on a server they are the policy
    (see :func:`negotiate`): ``versions``, ``suites``, ``mux_versions``, the smallest MTU a server
    accepts (``min_mtu``), the largest window (``max_window``), and ``fec_strict`` (FEC shards must
    match exactly).
    """

    # negotiated parameters (the client proposes, the server decides)
    versions: tuple[int, ...] = SUPPORTED_VERSIONS
    suites: tuple[str, ...] = ("aesgcm", "chachapoly")
    min_mtu: int = 576
    max_window: int = 8192
    fec_strict: bool = False
    mux_versions: tuple[int, ...] = (1, 2)
    # handshake and DoS
    initiation_size: int = 1200
    handshake_timeout_ms: int = 5000
    handshake_retry_ms: int = 250  # the first retransmission; doubling up to handshake_retry_max_ms
    handshake_retry_max_ms: int = 1000
    max_half_open: int = 1024
    retry_threshold: int = 64
    retry_rate: int = 500
    always_retry: bool = False
    handshake_rate: float = 50.0
    """Under load, initiations that cost the server a handshake (Diffie-Hellman work) per second
    from one IPv4 address or IPv6 /64, once a cookie proved the address (0: no limit)."""
    handshake_burst: int = 100
    """How many of those one address may make at once (the bucket's depth)."""
    datagram_rate: float = 10_000.0
    """Under load (the listener's reads find more datagrams waiting than they take at once, within
    the last 2 s), the datagrams per second that the connections admitted from one IPv4 address or
    IPv6 /64 may have the server open and process, together; the rest are dropped before they are
    decrypted and counted (``secure_datagrams_rate_limited``), so that one client flooding
    authenticated datagrams cannot take the core from everyone else (0: no limit)."""
    datagram_burst: int = 10_000
    """How many of those one address may have processed at once (the bucket's depth)."""
    exempt: tuple[str, ...] = LOOPBACK
    """Networks (CIDR strings) that the limits per address never limit: ``handshake_rate``,
    ``datagram_rate`` and a listener's ``max_sessions_per_address``. Loopback by default (a local relay or proxy puts all
    of its clients behind one loopback address)."""
    half_open_timeout_ms: int = 10_000
    cookie_rotate_ms: int = 120_000
    replay_cache: int = 8192
    reset_key: bytes | None = None
    reset_rate: int = 100
    cid_prefix: bytes = b""
    """The connection IDs this endpoint hands out start with these bytes (at most 1; the rest stay
    random). A server worker's: its index, which the reuseport router reads from every transport
    packet (:mod:`kcp.reuseport`, ``kcprpc.workers``). A client's (its initiation's sender ID): the
    worker it asks for, which the router reads from the initiation (a reconnecting kcprpc client
    asks for the worker of its last connection, where its session waits to be resumed)."""
    hint_rate: int = 100
    hint_rate_per_source: int = 4
    # transport
    replay_window: int = 2048
    rekey_after_packets: int = 1 << 22
    rekey_after_ms: int = 120_000
    key_grace_ms: int = 5000
    path_probe_interval_ms: int = 500
    path_probe_attempts: int = 4
    amplification_factor: int = 3
    # path MTU discovery (kcp.pmtud, docs/tuning.md "Path MTU")
    pmtud: bool = True
    pmtud_max: int = 1472
    pmtud_base: int = 1200
    pmtud_probe_timeout_ms: int = 1000
    pmtud_confirm_ms: int = 15_000
    pmtud_raise_ms: int = 600_000
    data_parts: bool = True
    held_acks: bool = True
    ack_repeat: bool = True

    def __post_init__(self) -> None:
        check_fields(self, SecureUsageError)
        need = _need(type(self).__name__)
        need(
            self.reset_key is None or (isinstance(self.reset_key, bytes) and len(self.reset_key) == 32),
            "reset_key must be 32 bytes",
        )
        need(
            isinstance(self.cid_prefix, bytes) and len(self.cid_prefix) <= 1,
            "cid_prefix must be bytes, at most 1 (a worker's index)",
        )
        need(len(self.versions) > 0 and all(0 < v < 256 for v in self.versions), "versions must be 1..255")
        need(
            len(self.suites) > 0 and all(s in SUITE_BY_NAME for s in self.suites),
            f"suites must be among {sorted(SUITE_BY_NAME)}",
        )
        need(
            len(self.mux_versions) > 0 and all(0 < v < 256 for v in self.mux_versions),
            "mux_versions must be 1..255",
        )
        for name, (least, most, note) in _BOUNDS.items():
            value = getattr(self, name)
            if value < least or (most is not None and value > most):
                bound = f"{least}..{most}" if most is not None else f">= {least}"
                raise SecureUsageError(f"{type(self).__name__}.{name} must be {bound}{note}, not {value!r}")
        need(
            self.handshake_rate == 0 or self.handshake_burst >= 1,
            "handshake_rate must be >= 0 (0: no limit) and handshake_burst >= 1",
        )
        need(
            self.datagram_rate == 0 or self.datagram_burst >= 1,
            "datagram_rate must be >= 0 (0: no limit) and datagram_burst >= 1",
        )
        try:
            parse_networks(self.exempt)
        except (TypeError, ValueError) as exc:
            need(False, f"bad exempt network: {exc}")
        need(
            576 <= self.pmtud_base <= self.pmtud_max <= PMTUD_LIMIT,
            f"need 576 <= pmtud_base <= pmtud_max <= {PMTUD_LIMIT} (UDP payload sizes; "
            "1472 is a 1500-byte IPv4 path)",
        )

    def suite_ids(self) -> list[int]:
        return [SUITE_BY_NAME[s].suite_id for s in self.suites]


def _need(owner: str) -> Callable[[bool, str], None]:
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise SecureUsageError(f"{owner}: {msg}")

    return need


_KNOBS = tuple(f.name for f in fields(SecureConfig))


@dataclass(frozen=True)
class HandshakeConfig(SecureConfig):
    """What the sans-I/O handshake core runs with: the :class:`SecureConfig` knobs plus this
    endpoint's identity and its MTU/window/FEC proposal (a client's) or policy (a server's: the
    upper bound of what any client gets, see :func:`negotiate`). Built by :meth:`compose` from
    what the user declared once (the wire, the session's tuning).

    Authentication: a client that sets ``server_public_key`` runs ``Noise_IKpsk2`` (its own
    static key is ``static_key`` or a fresh one); a client with only ``psk``/``passphrase`` runs
    ``Noise_NNpsk0``. A server with ``static_key`` accepts IKpsk2, with a PSK it accepts NNpsk0.
    ``snd_wnd`` is the endpoint's send window, ``rcv_wnd`` its receive window (a server's are also
    capped by ``max_window``); ``fec`` is a server's most parity per data shard and largest group.
    """

    static_key: bytes | None = None
    server_public_key: bytes | None = None
    psk: bytes | None = None
    passphrase: str | None = None
    token: bytes = b""
    mtu: int = 1400
    snd_wnd: int = 32
    rcv_wnd: int = 32
    fec: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        super().__post_init__()
        need = _need("HandshakeConfig")
        for name in ("static_key", "server_public_key", "psk"):
            v = getattr(self, name)
            need(v is None or (isinstance(v, bytes) and len(v) == 32), f"{name} must be 32 bytes")
        need(self.psk is None or self.passphrase is None, "give psk or passphrase, not both")
        need(self.passphrase is None or len(self.passphrase) > 0, "passphrase must not be empty")
        need(len(self.token) <= MAX_TOKEN, f"token longer than {MAX_TOKEN} bytes")
        need(self.min_mtu <= self.mtu <= 65000, "need 576 <= min_mtu <= mtu <= 65000")
        need(0 < self.snd_wnd <= 65535 and 0 < self.rcv_wnd <= 65535, "windows must be 1..65535")
        d, p = self.fec
        need(0 <= d < 256 and 0 <= p < 256 and (d > 0 or p == 0), "fec must be (data, parity) in 0..255")
        need(
            d + p <= MAX_TOTAL_SHARDS,
            f"fec {d}/{p} has {d + p} shards per group; Reed-Solomon over GF(2^8) allows at most "
            f"{MAX_TOTAL_SHARDS}",
        )

    @classmethod
    def compose(cls, knobs: SecureConfig | None = None, **endpoint: Any) -> HandshakeConfig:
        """``knobs`` (default: :class:`SecureConfig`'s) with the identity and MTU/window/FEC fields
        (``endpoint`` may also adjust a knob, as the session layer does with ``min_mtu``)."""
        base = knobs or SecureConfig()
        return cls(**({name: getattr(base, name) for name in _KNOBS} | endpoint))

    def knobs(self) -> SecureConfig:
        """The :class:`SecureConfig` part."""
        return SecureConfig(**{name: getattr(self, name) for name in _KNOBS})

    # ---- derived values

    @property
    def effective_psk(self) -> bytes | None:
        """The PSK in use: ``psk``, or scrypt(``passphrase``), or None."""
        if self.psk is not None:
            return self.psk
        if self.passphrase is not None:
            return derive_psk(self.passphrase)
        return None


# ------------------------------------------------------------------------------------------ hello


@dataclass(frozen=True, slots=True)
class ClientHello:
    """The client's proposal, carried encrypted in the first handshake message."""

    versions: tuple[int, ...]
    suites: tuple[int, ...]
    mtu: int
    snd_wnd: int
    rcv_wnd: int
    fec: tuple[int, int]
    fec_strict: bool
    mux_versions: tuple[int, ...]
    token: bytes
    features: int = 0

    @classmethod
    def from_config(cls, cfg: HandshakeConfig) -> ClientHello:
        return cls(
            tuple(cfg.versions),
            tuple(cfg.suite_ids()),
            cfg.mtu,
            cfg.snd_wnd,
            cfg.rcv_wnd,
            cfg.fec,
            cfg.fec_strict,
            tuple(cfg.mux_versions),
            cfg.token,
            config_features(cfg),
        )

    def encode(self) -> bytes:
        items = [
            (TAG_VERSIONS, bytes(self.versions)),
            (TAG_SUITES, bytes(self.suites)),
            (TAG_MTU, struct.pack(">H", self.mtu)),
            (TAG_WINDOWS, struct.pack(">HH", self.snd_wnd, self.rcv_wnd)),
            (TAG_FEC, bytes((self.fec[0], self.fec[1], int(self.fec_strict)))),
            (TAG_MUX, bytes(self.mux_versions)),
            (TAG_TOKEN, self.token),
        ]
        if self.features:  # none offered: the hello of a client before features existed
            items.append((TAG_FEATURES, bytes((self.features & 0xFF,))))
        return encode_tlv(items)

    @classmethod
    def decode(cls, data: bytes) -> ClientHello:
        """Parse; raises DecodeError on malformed input (missing fields included)."""
        from .errors import DecodeError

        t = decode_tlv(data)
        try:
            (mtu,) = tlv_u16s(t, TAG_MTU, 1) or (None,)
            wnd = tlv_u16s(t, TAG_WINDOWS, 2)
            fec = t[TAG_FEC]
            versions, suites, mux = t[TAG_VERSIONS], t[TAG_SUITES], t[TAG_MUX]
        except KeyError as exc:
            raise DecodeError("client hello misses a field") from exc
        if mtu is None or wnd is None or len(fec) != 3 or not versions or not suites or not mux:
            raise DecodeError("client hello malformed")
        return cls(
            tuple(versions),
            tuple(suites),
            mtu,
            wnd[0],
            wnd[1],
            (fec[0], fec[1]),
            bool(fec[2]),
            tuple(mux),
            t.get(TAG_TOKEN, b""),
            features_of(t),
        )


def features_of(items: dict[int, bytes]) -> int:
    """The feature bits of a hello or an answer (none when the tag is absent: an older peer).
    The first byte holds bits 0-7; a longer value (a later version's) is read by its first byte."""
    v = items.get(TAG_FEATURES)
    return v[0] if v else 0


@dataclass(frozen=True, slots=True)
class Refusal:
    """A negotiation failure: reason code and a human message (sent authenticated to the client)."""

    code: int
    message: str
    allowed_suites: tuple[int, ...] = ()


def fec_within(policy: tuple[int, int], proposal: tuple[int, int]) -> bool:
    """True if FEC ``proposal`` costs the server no more than its ``policy``.

    FEC off (no parity) is always within. Otherwise the server must allow FEC at all, the group
    (data + parity) must not be larger than the policy's (shards buffered per group), and the
    parity per data shard must not be higher (extra datagrams and Reed-Solomon work per byte
    sent); together these also keep the parity count at or below the policy's.
    """
    d, p = proposal
    if p == 0:
        return True
    pd, pp = policy
    if pp == 0 or d == 0:
        return False
    return d + p <= pd + pp and p * pd <= pp * d


def _fec_on_off(fec: tuple[int, int]) -> tuple[int, int]:
    """FEC shards as they run: no parity shards means FEC off, (0, 0)."""
    return fec if fec[1] else (0, 0)


def _malformed(hello: ClientHello) -> str | None:
    d, p = hello.fec
    if min(hello.snd_wnd, hello.rcv_wnd) == 0 or (d == 0 and p > 0):
        return "malformed proposal: zero window or parity without data shards"
    if d + p > MAX_TOTAL_SHARDS:
        return f"malformed proposal: FEC {d}/{p} has {d + p} shards per group, at most {MAX_TOTAL_SHARDS}"
    return None


def negotiate(server: HandshakeConfig, hello: ClientHello, suite_id: int) -> SessionParams | Refusal:
    """The server's decision on a client's proposal: agreed parameters or a refusal with a reason.

    The server's config is the upper bound of every parameter. A malformed proposal (a zero
    window, parity without data, more than 256 FEC shards) is refused. Above the policy, MTU and
    windows are lowered to it; FEC above it (:func:`fec_within`) becomes the server's own FEC
    for a flexible client and is refused for a strict one. So a client can never make the server
    send more datagrams, bigger ones, or keep more in flight than the server was configured for.
    """
    common = set(hello.versions) & set(server.versions)
    if not common:
        return Refusal(
            Reason.VERSION_MISMATCH,
            f"version mismatch: client speaks {sorted(hello.versions)}, "
            f"server speaks {sorted(server.versions)}",
        )
    allowed = tuple(server.suite_ids())
    if suite_id not in allowed:
        name = SUITES[suite_id].noise_name if suite_id in SUITES else str(suite_id)
        return Refusal(
            Reason.SUITE_REFUSED,
            f"cipher suite {name} refused; server allows {[SUITES[s].noise_name for s in allowed]}",
            allowed,
        )
    malformed = _malformed(hello)
    if malformed is not None:
        return Refusal(Reason.PARAMS_REFUSED, malformed)
    if hello.mtu < server.min_mtu:
        return Refusal(
            Reason.PARAMS_REFUSED, f"MTU {hello.mtu} is below the server's minimum {server.min_mtu}"
        )
    mtu = min(hello.mtu, server.mtu)
    mux = set(hello.mux_versions) & set(server.mux_versions)
    if not mux:
        return Refusal(
            Reason.PARAMS_REFUSED,
            f"mux version mismatch: client speaks {sorted(hello.mux_versions)}, "
            f"server speaks {sorted(server.mux_versions)}",
        )
    proposed = _fec_on_off(hello.fec)
    if proposed == server.fec:
        fec = proposed
    elif server.fec_strict and hello.fec_strict:
        return Refusal(
            Reason.PARAMS_REFUSED,
            f"FEC mismatch: client requires {hello.fec[0]}/{hello.fec[1]} shards, "
            f"server requires {server.fec[0]}/{server.fec[1]}",
        )
    elif server.fec_strict or not fec_within(server.fec, proposed):
        if hello.fec_strict:  # only the client's own value will do, and it is above the policy
            d, p = proposed
            limit = (
                f"the server allows at most {server.fec[0]}/{server.fec[1]} "
                f"({server.fec[0] + server.fec[1]} shards per group, the same parity per data shard)"
                if server.fec[1]
                else "the server does not run FEC"
            )
            return Refusal(Reason.PARAMS_REFUSED, f"FEC {d}/{p} refused: {limit}")
        fec = server.fec  # lowered to what the server runs itself
    else:
        fec = proposed
    cap = server.max_window
    return SessionParams(
        version=max(common),
        suite=next(n for n, s in SUITE_BY_NAME.items() if s.suite_id == suite_id),
        mtu=mtu,
        snd_wnd=min(hello.snd_wnd, server.rcv_wnd, cap),  # client -> server: the server receives
        rcv_wnd=min(hello.rcv_wnd, server.snd_wnd, cap),  # server -> client: the server sends
        data_shards=fec[0],
        parity_shards=fec[1],
        mux_version=max(mux),
        features=hello.features & config_features(server),
    )


def config_features(cfg: SecureConfig) -> int:
    """The feature bits an endpoint with ``cfg`` offers (a client) or accepts (a server)."""
    return (
        (FEATURE_DATA_PARTS if cfg.data_parts else 0)
        | (FEATURE_HELD_ACKS if cfg.held_acks else 0)
        | (FEATURE_ACK_REPEAT if cfg.ack_repeat else 0)
    )


def outside_policy(server: HandshakeConfig, p: SessionParams) -> str | None:
    """Why agreed parameters ``p`` exceed the server's policy, or None (a last check before a
    session is built with them: :func:`negotiate` never produces such parameters)."""
    fec = (p.data_shards, p.parity_shards)
    problems = []
    if p.version not in server.versions or p.mux_version not in server.mux_versions:
        problems.append(f"version {p.version}/mux {p.mux_version}")
    if not server.min_mtu <= p.mtu <= server.mtu:
        problems.append(f"MTU {p.mtu}")
    cap = server.max_window
    if not (0 < p.snd_wnd <= min(server.rcv_wnd, cap) and 0 < p.rcv_wnd <= min(server.snd_wnd, cap)):
        problems.append(f"windows {p.snd_wnd}/{p.rcv_wnd}")
    if fec != server.fec and not fec_within(server.fec, fec):
        problems.append(f"FEC {fec[0]}/{fec[1]}")
    if p.features & ~config_features(server):
        problems.append(f"features {p.features:#x}")
    return f"parameters above the server's policy: {', '.join(problems)}" if problems else None


def check_accepted(client: HandshakeConfig, p: SessionParams) -> str | None:
    """The client's check of the server's answer; a reason string if it cannot accept it."""
    if p.version not in client.versions:
        return f"server chose version {p.version}, client speaks {sorted(client.versions)}"
    if p.mux_version not in client.mux_versions:
        return f"server chose mux version {p.mux_version}, client speaks {sorted(client.mux_versions)}"
    if not client.min_mtu <= p.mtu <= client.mtu:
        return f"server chose MTU {p.mtu}, client accepts {client.min_mtu}..{client.mtu}"
    if p.snd_wnd == 0 or p.rcv_wnd == 0 or p.snd_wnd > client.snd_wnd or p.rcv_wnd > client.rcv_wnd:
        return (
            f"server chose windows {p.snd_wnd}/{p.rcv_wnd}, client proposed {client.snd_wnd}/{client.rcv_wnd}"
        )
    if p.features & ~config_features(client):
        return f"server chose features {p.features:#x}, client offered {config_features(client):#x}"
    if p.data_shards == 0 and p.parity_shards > 0:
        return f"server chose FEC {p.data_shards}/{p.parity_shards}, which has parity without data shards"
    if p.data_shards + p.parity_shards > MAX_TOTAL_SHARDS:
        return f"server chose FEC {p.data_shards}/{p.parity_shards}, more than {MAX_TOTAL_SHARDS} shards per group"
    if _fec_on_off((p.data_shards, p.parity_shards)) != _fec_on_off(client.fec) and client.fec_strict:
        return (
            f"FEC mismatch: server chose {p.data_shards}/{p.parity_shards} shards, "
            f"client requires {client.fec[0]}/{client.fec[1]}"
        )
    return None


def max_token_for(cfg: HandshakeConfig, pattern_overhead: int) -> int:
    """How many token bytes fit into the padded initiation."""
    return cfg.initiation_size - INIT_FIXED - pattern_overhead - 64


Authorizer = Callable[[bytes, "bytes | None", Any], "str | Refusal | None"]
"""Server hook ``(token, client_static_public_or_None, addr) -> None to accept, or a refusal message``
(refused with ``BAD_TOKEN``); the glue's own hook may return a :class:`Refusal` with another code."""
