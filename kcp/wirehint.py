"""Wire hints: a small, unauthenticated answer that tells a dialling kcprpc client why it cannot
connect (wrong key, wrong wire mode), so that it fails at once with a reason instead of waiting
for its timeout.

Sans-I/O and standalone (no :mod:`kcp.secure`, no cryptography): compat listeners and compat
dials use it too. The format (docs/security.md, "Wire hints")::

    HINT: 0xC4 | hint version (1) | code (1) | detail (1) | echo (16)        20 bytes

``echo`` is the first 16 bytes of the datagram the hint answers. A client accepts a hint only if
the echo equals the start of a datagram it sent to that server recently: a secure initiation
starts with its random connection ID and ephemeral key, a kcp-go datagram with encryption with a
random nonce, so an off-path attacker cannot make one (a kcp-go datagram without encryption starts
with its random 32-bit conv: weaker, as everything in that mode). An on-path attacker can forge a
hint; all it gains is to make that dial fail early, which dropping the server's packets already
does. Hints are advice: they never change what an authenticated handshake or a session accepts.

A hint is never larger than the datagram it answers (no amplification), it never answers a hint
(two servers cannot loop), and :class:`HintLimiter` rate limits hints per source address and in
total.
"""

from __future__ import annotations

import enum
from collections import OrderedDict, deque
from collections.abc import Hashable
from dataclasses import dataclass

__all__ = [
    "ECHO_LEN",
    "HINT_LEN",
    "T_HINT",
    "HintCode",
    "HintLimiter",
    "SentLog",
    "WireMismatch",
    "answerable",
    "compat_conv",
    "encode_hint",
    "hint_message",
    "is_secure_initiation",
    "parse_hint",
]

T_HINT = 0xC4
HINT_VERSION = 1
ECHO_LEN = 16
HINT_LEN = 4 + ECHO_LEN
_MIN_KCP_DATAGRAM = 24  # a KCP segment header: hints stay shorter, so a kcp-go datagram is never one


class HintCode(enum.IntEnum):
    """What a hint says (the ``code`` byte)."""

    WRONG_KEY = 1
    """A secure server could not verify the initiation's mac1: the client's passphrase/PSK (NNpsk0)
    or its pinned server key (IKpsk2) is not the server's."""
    NO_PSK_MODE = 2
    """A secure server without a passphrase/PSK got a passphrase-only (NNpsk0) initiation: the
    client must pin the server's public key."""
    NO_KEY_MODE = 3
    """A secure server without a static key got a pinned-key (IKpsk2) initiation: the client must
    dial with the passphrase/PSK only."""
    WIRE_VERSION = 4
    """A secure server does not speak the initiation's wire version; ``detail`` is its own."""
    SECURE_WIRE = 5
    """A secure server got a datagram that is not the secure wire (a compat, kcp-go format, dial)."""
    COMPAT_WIRE = 6
    """A compat (kcp-go format) server got a secure initiation."""


_T_INITIATION = 0xC1  # kcp.secure.packet.T_INITIATION: a secure dial's first datagram
_INITIATION_SIZES = range(256, 1473)  # kcp.secure.SecureConfig.initiation_size's range
_PATTERNS = (1, 2)  # IKpsk2, NNpsk0
_T_TRANSPORT = (0xC8, 0xC9)  # kcp.secure.packet.TRANSPORT_TYPES: a secure transport packet's first byte


def compat_conv(random4: bytes) -> int:
    """A compat dial's conv from 4 random bytes (little-endian, as on the wire), with its first
    byte moved off a secure transport packet's type (0xC8, 0xC9; flipped to 0xD8, 0xD9). Without
    encryption a kcp-go datagram starts with its conv, and a secure server answers a datagram that
    looks like a transport packet for a lost connection with a stateless reset, not with a wire
    hint: such a dial to a secure server would end as "no answer" (2 in 256 of them) instead of
    at once with the hint's reason."""
    b = bytearray(random4[:4])
    if len(b) != 4:
        raise ValueError(f"compat_conv needs 4 random bytes, got {len(random4)}")
    if b[0] in _T_TRANSPORT:
        b[0] ^= 0x10
    return int.from_bytes(b, "little")


def is_secure_initiation(datagram: bytes) -> bool:
    """Whether ``datagram`` has the shape of a secure initiation (type, size, pattern): what a
    compat listener answers with a :attr:`HintCode.COMPAT_WIRE` hint."""
    return len(datagram) in _INITIATION_SIZES and datagram[0] == _T_INITIATION and datagram[3] in _PATTERNS


@dataclass(frozen=True, slots=True)
class WireMismatch:
    """The event a compat dial's session gets (``add_event_callback``) when the server answered
    with a bound hint that it speaks the secure wire; the session then ends with ``message``."""

    code: HintCode
    message: str


def answerable(datagram: bytes) -> bool:
    """Whether a hint may answer ``datagram``: at least as large as a hint, and not a hint itself
    (a datagram of type 0xC4 shorter than the smallest KCP datagram, 24 bytes): servers answer
    each other's other packets at most with a hint, which is never answered, so two servers
    cannot loop; a kcp-go datagram whose conv starts with 0xC4 is still answered."""
    n = len(datagram)
    return n >= HINT_LEN and not (datagram[0] == T_HINT and n < _MIN_KCP_DATAGRAM)


def encode_hint(code: HintCode, answered: bytes, detail: int = 0) -> bytes | None:
    """The hint answering ``answered`` (its first 16 bytes echoed), or None when a hint would be
    larger than ``answered``."""
    if len(answered) < HINT_LEN:
        return None
    return bytes((T_HINT, HINT_VERSION, int(code), detail & 0xFF)) + bytes(answered[:ECHO_LEN])


def parse_hint(datagram: bytes) -> tuple[HintCode, int, bytes] | None:
    """``(code, detail, echo)`` of a well-formed hint, else None (never raises)."""
    if len(datagram) != HINT_LEN or datagram[0] != T_HINT or datagram[1] != HINT_VERSION:
        return None
    try:
        code = HintCode(datagram[2])
    except ValueError:
        return None
    return code, datagram[3], bytes(datagram[4:])


def hint_message(code: HintCode, detail: int, peer: str = "", *, wire_version: int = 1) -> str:
    """What a dialling client tells its user when a bound hint arrives from ``peer`` (HOST:PORT)."""
    server = f"the server at {peer}" if peer else "the server"
    if code is HintCode.WRONG_KEY:
        return (
            f"wrong key: {server} could not verify our handshake "
            "(check the passphrase/PSK, or the pinned server public key)"
        )
    if code is HintCode.NO_PSK_MODE:
        return (
            f"wrong key: {server} accepts no passphrase/PSK-only handshakes: "
            "pin its public key (SecureWire(server_public_key=...))"
        )
    if code is HintCode.NO_KEY_MODE:
        return (
            f"wrong key: {server} has no static key to pin: "
            "dial it with its passphrase/PSK, without server_public_key"
        )
    if code is HintCode.WIRE_VERSION:
        return (
            f"wire version mismatch: {server} speaks secure wire version {detail}, "
            f"this client speaks {wire_version} (upgrade the older side)"
        )
    if code is HintCode.SECURE_WIRE:
        return (
            f"wrong wire mode: {server} speaks the secure wire, not kcp-go's: "
            "dial it with kcp.SecureWire (kcprpc: the default wire; CLI: --wire secure)"
        )
    return (
        f"wrong wire mode: {server} speaks kcp-go's wire (compat), not the secure wire: "
        "dial it with kcp.CompatWire (kcprpc: Transport(CompatWire(...)); CLI: --wire compat)"
    )


class HintLimiter:
    """Hints per second: at most ``per_source`` to one address and ``total`` in all. The per-address
    table keeps at most ``max_sources`` entries (the oldest goes first), so a spoofed flood costs a
    bounded table and at most ``total`` small datagrams a second."""

    __slots__ = ("_sources", "_start", "_used", "max_sources", "per_source", "total")

    def __init__(self, per_source: int = 4, total: int = 100, max_sources: int = 1024) -> None:
        self.per_source = per_source
        self.total = total
        self.max_sources = max_sources
        self._start = -1_000_000
        self._used = 0
        self._sources: OrderedDict[Hashable, int] = OrderedDict()

    def allow(self, addr: Hashable, now: int) -> bool:
        """True (and counted against both limits) if one more hint to ``addr`` fits this second."""
        if self.total <= 0 or self.per_source <= 0:
            return False
        if now - self._start >= 1000:
            self._start = now
            self._used = 0
            self._sources.clear()
        if self._used >= self.total:
            return False
        n = self._sources.get(addr, 0)
        if n >= self.per_source:
            return False
        self._used += 1
        self._sources[addr] = n + 1
        self._sources.move_to_end(addr)
        while len(self._sources) > self.max_sources:
            self._sources.popitem(last=False)
        return True

    def size(self) -> int:
        """Entries in the per-address table (bounded by ``max_sources``)."""
        return len(self._sources)


class SentLog:
    """A client's record of the echo prefixes of the last ``keep`` datagrams it sent, to recognise
    a hint bound to one of them."""

    __slots__ = ("_echoes",)

    def __init__(self, keep: int = 32) -> None:
        self._echoes: deque[bytes] = deque(maxlen=keep)

    def add(self, datagram: bytes) -> None:
        self._echoes.append(bytes(datagram[:ECHO_LEN]))

    def bound(self, echo: bytes) -> bool:
        """True if ``echo`` is the start of a datagram we sent (and long enough to mean it)."""
        return len(echo) == ECHO_LEN and echo in self._echoes
