"""What a KCP endpoint runs, described once: the wire, the session's tuning, the socket options.

* :class:`CompatWire` is kcp-go's packet format (a kcptun cipher, FEC shards);
  :class:`SecureWire` is kcprpc's authenticated format (a Noise handshake, then AEAD).
  ``Wire`` is either. A wire is validated when it is built and passed down unchanged.
* :class:`SessionConfig` tunes one KCP session (MTU, windows, nodelay, buffers, timeouts).
* :class:`IOOptions` are the socket's options (local address, SO_REUSEPORT, batched I/O).

``kcp.dial(host, port, wire, session=..., io=...)`` and ``kcp.listen(...)`` take these.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from kcp.crypt import PacketCrypt, cipher_known, derive_key, new_crypt
from kcp.engine import ACK_HOLD_MAX
from kcp.errors import KCPUsageError
from kcp.fec import fec_enabled
from kcp.fieldcheck import check_fields
from kcp.ratelimit import LOOPBACK

if TYPE_CHECKING:
    from kcp.secure.config import SecureConfig

__all__ = [
    "Authorize",
    "CompatWire",
    "IOOptions",
    "SecureWire",
    "SessionConfig",
    "Wire",
    "check_fec",
    "exempt_networks",
]

Authorize = Callable[[bytes, "bytes | None", Any], "str | None"]
"""A secure server's hook: ``authorize(token, client_static_public_key, address)`` returns None to
accept the client, or the refusal message the client sees."""


def check_fec(fec: tuple[int, int]) -> tuple[int, int]:
    """``(data, parity)`` shard counts, validated: ``(0, 0)`` is FEC off; otherwise both >= 1 and
    at most 256 shards per group (:func:`kcp.fec.fec_enabled`'s rules). Raises
    :class:`KCPUsageError` naming the problem."""
    try:
        data, parity = fec
    except (TypeError, ValueError):
        raise KCPUsageError(f"fec must be a (data_shards, parity_shards) pair, not {fec!r}") from None
    if (
        not isinstance(data, int)
        or not isinstance(parity, int)
        or isinstance(data, bool)
        or isinstance(parity, bool)
    ):
        raise KCPUsageError(f"fec shard counts must be integers, not {fec!r}")
    if (data, parity) == (0, 0):
        return (0, 0)
    if not fec_enabled(data, parity):  # (d, 0): kcp-go reads it as off; here off is spelled (0, 0)
        raise KCPUsageError(
            f"fec needs data >= 1 and parity >= 1 (or (0, 0) for off), got ({data}, {parity})"
        )
    return (data, parity)


@dataclass(frozen=True)
class SessionConfig:
    """Tuning of one session; defaults follow kcp-go/kcptun where a peer would notice.

    ``nodelay``/``interval``/``resend``/``nc`` are ikcp's ``nodelay()`` (the default is kcptun's
    ``fast3``); ``mtu`` is the UDP payload size, the engine gets ``mtu`` minus the packet-layer
    overhead, as in kcp-go. ``ack_nodelay`` flushes acks at the end of each receive batch;
    ``ack_delay`` (ms, 0 for none) lets an ack that has nothing to ride with wait that long for
    data going the same way (a reply, a PONG, the next call), so that one datagram carries both;
    ikcp's own acks wait up to ``interval``. ``ack_hold`` (ms, 0 for never: the default; at most
    250; 200 pairs the acks of a subscriber's pushes from 5 a second on): a session that only
    receives (a push subscriber: its delayed acks found nothing to ride with several times
    in a row) holds each lone ack up to that long, until a second segment comes (both go in one
    datagram, as TCP acks every second segment) or a segment comes out of order (a loss: acks go at
    once again until the session looks quiet once more). Only in secure mode, with a peer that
    agreed to held acks in the handshake (``kcp.secure.SecureConfig.held_acks``): it adds 250 ms to
    its RTOs while this end holds. Holding starts from the delayed acks, so it needs ``ack_delay``.
    docs/tuning.md, "Delayed acks".
    ``snd_wnd``/``rcv_wnd`` are the send and receive windows in segments (512: kcptun's server
    runs 1024). A bulk flow keeps up to ``snd_wnd`` segments past the oldest unacknowledged one, so
    the window bounds its throughput at about ``snd_wnd x mss / RTT`` (128 segments: 14 Mbit/s at
    100 ms), and under loss each hole holds it for a round trip or two more; the receiver buffers
    at most ``rcv_wnd`` segments out of order. Calls and events use a few. docs/tuning.md,
    "Congestion control".
    ``stream`` is KCP stream mode (kcptun's default). ``read_buffer`` bounds the bytes held for a
    slow reader (beyond it the engine's receive window closes); ``write_buffer`` is the number of
    queued plus in-flight segments above which :meth:`KCPSession.drain` waits (``0``: 256, or
    twice the congestion controller's window once a bulk flow has a larger one; with
    ``congestion="ikcp"``, twice the send window). ``idle_timeout`` (seconds, ``None`` for never)
    closes a session that received nothing for that long; ``close_linger`` bounds how long
    ``close()`` waits for unacked data.

    ``loss_recovery`` is how a small flight (a call, an event: at most 8 segments unacked) is
    retransmitted: ``"adaptive"`` (the default) sends each recovery round as up to ``max_copies``
    copies ``copy_gap`` ms apart (rounded up to ``interval``), as many as the loss seen on this
    session calls for (one more on a randomly lossy link, up to ``max_copies`` when losses come
    in bursts), with no backoff for the first four rounds and then one capped at 4 RTOs;
    ``"ikcp"`` is ikcp's one retransmission per RTO with its backoff. ``lead_copies`` sends that
    many spaced copies of every small flight right away (bandwidth for p99 under random loss;
    default 0); ``"auto"`` picks 0 to 2 from the loss this session sees (none on a clean link or
    under bursts, one from about 1 % random loss). ``"adaptive"`` also probes a closed receive
    window after 100 ms, backing off to 1 s, where ikcp waits 7 s (so a lost window update costs
    under a second, not 7). Sender-side only: any ikcp or kcp-go peer is unaffected.
    docs/tuning.md, "Loss recovery".

    ``congestion`` is the sender's congestion control: ``"bbr"`` (the default) is
    :mod:`kcp.congestion`'s BBR-like controller, which paces bulk data to the measured bottleneck
    rate and keeps the bottleneck's queue short (calls and events, app-limited, go out as with
    ikcp); ``"ikcp"`` is ikcp's own (with ``nc=1``, none: the send window is the only limit).
    Sender-side only: any ikcp or kcp-go peer is unaffected. docs/tuning.md, "Congestion control".
    """

    mtu: int = 1400
    snd_wnd: int = 512
    rcv_wnd: int = 512
    nodelay: int = 1
    interval: int = 10
    resend: int = 2
    nc: int = 1
    stream: bool = True
    ack_nodelay: bool = True
    ack_delay: int = 5
    ack_hold: int = 0
    dead_link: int = 20
    read_buffer: int = 1 << 20
    write_buffer: int = 0
    datagram_queue: int = 256
    idle_timeout: float | None = 60.0
    close_linger: float = 5.0
    loss_recovery: Literal["adaptive", "ikcp"] = "adaptive"
    max_copies: int = 6
    copy_gap: int = 10
    lead_copies: int | Literal["auto"] = 0
    congestion: Literal["ikcp", "bbr"] = "bbr"

    def __post_init__(self) -> None:
        check_fields(self, KCPUsageError)
        if self.loss_recovery not in ("adaptive", "ikcp"):
            raise KCPUsageError(f"loss_recovery must be 'adaptive' or 'ikcp', got {self.loss_recovery!r}")
        lead = self.lead_copies
        if lead != "auto" and (type(lead) is not int or not 0 <= lead <= 8):
            raise KCPUsageError(f"lead_copies must be 'auto' or in 0..8, got {lead!r}")
        if not 1 <= self.max_copies <= 16 or not 1 <= self.copy_gap <= 1000:
            raise KCPUsageError("max_copies must be in 1..16, copy_gap in 1..1000 ms")
        if self.congestion not in ("ikcp", "bbr"):
            raise KCPUsageError(f"congestion must be 'ikcp' or 'bbr', got {self.congestion!r}")
        if not 64 <= self.mtu <= 9000:
            raise KCPUsageError("mtu must be in 64..9000")
        if self.snd_wnd < 1 or self.rcv_wnd < 1:
            raise KCPUsageError("windows must be >= 1")
        if not 0 <= self.ack_delay <= 100:
            raise KCPUsageError(f"ack_delay must be in 0..100 ms, got {self.ack_delay!r}")
        if type(self.ack_hold) is not int or not 0 <= self.ack_hold <= ACK_HOLD_MAX:
            raise KCPUsageError(f"ack_hold must be in 0..{ACK_HOLD_MAX} ms, got {self.ack_hold!r}")
        if not 10 <= self.interval <= 5000:
            raise KCPUsageError("interval must be in 10..5000 ms")
        if self.read_buffer < 1 or self.write_buffer < 0 or self.datagram_queue < 1:
            raise KCPUsageError("buffer sizes must be positive")
        if self.idle_timeout is not None and self.idle_timeout <= 0:
            raise KCPUsageError("idle_timeout must be > 0 or None")
        if self.close_linger < 0 or self.dead_link < 1:
            raise KCPUsageError("close_linger must be >= 0 and dead_link >= 1")


@dataclass(frozen=True)
class IOOptions:
    """The UDP socket's options.

    ``local_address`` is where a dialing socket binds (default: any address, an ephemeral port);
    ``reuse_port`` sets ``SO_REUSEPORT`` on a listening socket so several processes can share the
    port; ``mmsg``/``gso`` force batched I/O (recvmmsg/sendmmsg, UDP GSO) on or off (``None``: use
    them where the kernel has them).

    ``read_coalesce_ms`` (a listening socket's; a dialling one ignores it; 0, the default: off):
    while datagrams arrive one by one faster than 1.25 per this many ms, the socket is read every
    this many ms instead of at each arrival, and what was read is answered in one batch
    (:mod:`kcp.coalesce`). A server of thousands of independent connections then spends less of
    its time waking up for each datagram (about 10 % less CPU at 3,000 to 5,000 connections
    making a call a second each), and each datagram waits up to that long before it is read (the
    calls' p50 grew by 0.6 to 1 ms): docs/tuning.md, "Many sessions".
    """

    local_address: tuple[str, int] | None = None
    reuse_port: bool = False
    mmsg: bool | None = None
    gso: bool | None = None
    read_coalesce_ms: int = 0

    def __post_init__(self) -> None:
        check_fields(self, KCPUsageError)
        if type(self.read_coalesce_ms) is not int or not 0 <= self.read_coalesce_ms <= 50:
            raise KCPUsageError(f"read_coalesce_ms must be an int in 0..50, got {self.read_coalesce_ms!r}")


@dataclass(frozen=True)
class CompatWire:
    """kcp-go's packet format, for kcp-go and kcptun peers (no handshake: both ends must agree).

    ``crypt`` is a kcptun cipher name (``None`` or ``"null"``: no crypt layer) or a cipher object
    (:func:`kcp.new_crypt`); ``key`` is a passphrase str (run through kcptun's PBKDF2,
    :func:`kcp.derive_key`) or the derived key bytes; ``fec`` is ``(data_shards, parity_shards)``,
    ``(0, 0)`` for off.
    """

    crypt: str | PacketCrypt | None = None
    key: bytes | str | None = field(default=None, repr=False)
    fec: tuple[int, int] = (0, 0)

    mode: ClassVar[Literal["compat"]] = "compat"

    def __post_init__(self) -> None:
        object.__setattr__(self, "fec", check_fec(self.fec))
        if isinstance(self.crypt, str) and self.crypt != "null":
            if not cipher_known(self.crypt):
                new_crypt(self.crypt, b"")  # raises KCPUsageError listing the known names
            if self.key is None:
                raise KCPUsageError(
                    f"cipher {self.crypt!r} needs a key (a passphrase str or derived key bytes)"
                )

    def packet_crypt(self) -> PacketCrypt | None:
        """The packet cipher (derives the key from a passphrase: about 10 ms, so call it once)."""
        if self.crypt is None or self.crypt == "null":
            return None
        if not isinstance(self.crypt, str):
            return self.crypt
        assert self.key is not None  # checked in __post_init__
        material = derive_key(self.key) if isinstance(self.key, str) else bytes(self.key)
        return new_crypt(self.crypt, material)


@dataclass(frozen=True)
class SecureWire:
    """kcprpc's secure format: a Noise handshake, then AEAD packets with connection IDs.

    ``key`` is a passphrase str or a 32-byte pre-shared key. ``static_private_key`` is this
    endpoint's X25519 identity (a server's is what clients pin; :func:`kcp.secure.generate_keypair`).
    A client pins the server with ``server_public_key`` and may present a ``token`` to the server's
    ``authorize`` hook. ``fec`` is ``(data_shards, parity_shards)``: a client's proposal, a server's
    policy (the most it accepts). ``config`` holds the other knobs (:class:`kcp.secure.SecureConfig`:
    suites, rekeying, handshake timers, DoS limits); ``None``: the defaults.

    A client needs ``server_public_key`` and/or ``key``; a server ``static_private_key`` and/or ``key``.
    """

    key: bytes | str | None = field(default=None, repr=False)
    static_private_key: bytes | None = field(default=None, repr=False)
    server_public_key: bytes | None = None
    token: bytes | str = field(default=b"", repr=False)
    authorize: Authorize | None = None
    fec: tuple[int, int] = (0, 0)
    config: SecureConfig | None = None

    mode: ClassVar[Literal["secure"]] = "secure"

    def __post_init__(self) -> None:
        object.__setattr__(self, "fec", check_fec(self.fec))
        if isinstance(self.key, str):
            if not self.key:
                raise KCPUsageError("the secure passphrase (key=) must not be empty")
        elif self.key is not None and (not isinstance(self.key, bytes | bytearray) or len(self.key) != 32):
            raise KCPUsageError("a secure-mode key must be a passphrase str or a 32-byte PSK")
        for name in ("static_private_key", "server_public_key"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, bytes | bytearray) or len(v) != 32):
                raise KCPUsageError(f"{name} must be 32 bytes (an X25519 key)")
        if isinstance(self.token, str):
            object.__setattr__(self, "token", self.token.encode())
        if self.authorize is not None and not callable(self.authorize):
            raise KCPUsageError(
                "authorize must be a callable (token, client_public_key, address) -> str | None"
            )

    def check_client(self) -> None:
        """Raise :class:`KCPUsageError` unless this wire can dial."""
        if self.authorize is not None:
            raise KCPUsageError("authorize= is a server option (a client presents token= instead)")
        if self.server_public_key is None and self.key is None:
            raise KCPUsageError(
                "secure mode needs server_public_key= (the server's pinned X25519 key) and/or "
                "key= (a passphrase str or a 32-byte PSK)"
            )

    def check_server(self) -> None:
        """Raise :class:`KCPUsageError` unless this wire can listen."""
        if self.server_public_key is not None or self.token:
            raise KCPUsageError("server_public_key= and token= are client options")
        if self.static_private_key is None and self.key is None:
            raise KCPUsageError(
                "secure mode needs static_private_key= (clients pin its public key) and/or "
                "key= (a passphrase str or a 32-byte PSK)"
            )

    def with_config(self, **fields: Any) -> SecureWire:
        """A copy whose :class:`~kcp.secure.SecureConfig` has some fields replaced."""
        from kcp.secure.config import SecureConfig

        return replace(self, config=replace(self.config or SecureConfig(), **fields))


Wire = CompatWire | SecureWire


def exempt_networks(wire: Wire, compat: tuple[str, ...] = LOOPBACK) -> tuple[str, ...]:
    """The networks the limits per address never limit (:mod:`kcp.ratelimit`): a secure wire's
    ``SecureConfig.exempt`` (loopback by default), else ``compat`` (a listener's
    ``AdmissionConfig.exempt``)."""
    if isinstance(wire, SecureWire):
        return wire.config.exempt if wire.config is not None else LOOPBACK
    return compat


"""The two wire formats; ``wire.mode`` is ``"compat"`` or ``"secure"``."""
