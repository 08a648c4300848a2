"""How a session's datagrams travel: the packet-path strategy (compat or secure).

A :class:`kcp.session.KCPSession` runs the KCP engine and the packet pipeline (crypt, FEC, OOB)
the same way in both wire modes; what differs is held by its :class:`PacketPath`:

* :class:`CompatPath` (kcp-go's format): pipeline datagrams go to the peer's address as they are;
  any datagram that reaches the session counts as liveness; there is no close on the wire.
* :class:`kcp.secure_path.SecurePath`: every pipeline datagram is sealed by a
  :class:`kcp.secure.SecureConnection` and goes to its current (validated) path; only
  authenticated datagrams count as liveness; the connection's events, timers, key updates and
  authenticated CLOSE/GOAWAY live there.

A path talks back to its session through :class:`PathOwner` only.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, Protocol

from kcp.batch import Address
from kcp.endpoint import Endpoint
from kcp.errors import KCPUsageError
from kcp.pipeline import Pipeline
from kcp.stats import Counters

if TYPE_CHECKING:
    from kcp.secure import Event, SecureConnection

__all__ = ["CompatPath", "EventCallback", "PacketPath", "PathEndpoint", "PathOwner"]

EventCallback = Callable[["Event"], object]
Output = Callable[[bytes], None]


class Clock(Protocol):
    """The time a path reads (:class:`kcp.timers.TimerHeap`'s)."""

    def now_ms(self) -> int:
        """Milliseconds on the path's clock."""


class PathEndpoint(Protocol):
    """What a :class:`kcp.secure_path.SecurePath` uses of its socket: a :class:`kcp.endpoint.Endpoint`,
    or a stand-in in virtual time (tests/sim). A protocol, not the class: the compiled build would
    refuse a stand-in for its native ``Endpoint``."""

    tx: list[tuple[bytes, Address]]

    @property
    def timers(self) -> Clock: ...

    @property
    def sock(self) -> socket.socket: ...

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    def kick(self) -> None:
        """Flush :attr:`tx` soon."""

    def send(self, datagram: bytes, addr: Address) -> None:
        """Send one datagram now."""

    def forget(self, addr: Address) -> None:
        """``addr`` is no longer a peer's (the peer moved): drop it from the socket's caches."""


class PathOwner(Protocol):
    """What a packet path may do to its session."""

    remote_address: Address
    goaway_received: tuple[int, str] | None

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    @property
    def ended(self) -> bool:
        """True once the session has fully ended."""

    def feed(self, datagram: bytes, now: int) -> None:
        """One datagram (already opened by the path) for the session's pipeline and engine."""

    def touch(self, now: int) -> None:
        """Authenticated traffic without a payload arrived: the peer is alive."""

    def request_flush(self) -> None:
        """Flush the engine at the end of this tick."""

    def set_mtu(self, mtu: int) -> None:
        """The path's MTU changed (a UDP payload size; the path MTU search)."""

    def peer_closed(self, now: int, code: int, reason: str) -> None:
        """The peer ended the connection (an authenticated CLOSE)."""


class PacketPath(Protocol):
    """The wire-mode strategy under one session."""

    mode: Literal["compat", "secure"]
    overhead: int
    """Bytes the path adds to each pipeline datagram."""
    callbacks: list[EventCallback]
    has_timer: bool
    """True if :meth:`timer` may ask for wake-ups (the session then asks it on every re-arm)."""
    held_acks: bool
    """The peer agreed to held acks (secure mode's handshake; docs/wire-format/kcp.md "Held acks")."""
    ack_repeat: bool
    """The peer agreed to repeated acks (secure mode's handshake; docs/wire-format/kcp.md
    "Repeated acks")."""

    @property
    def connection(self) -> SecureConnection | None: ...

    def attach(self, owner: PathOwner) -> None: ...

    def make_output(self, pipeline: Pipeline, plain: bool, counters: Counters) -> Output:
        """The engine's output function: pipeline, then the path's sealing, then the endpoint."""

    def send_datagram(self, datagram: bytes, now: int) -> None:
        """Send one pipeline datagram (an OOB packet) at once."""

    def timer(self) -> int:
        """When the session should wake for the path (only asked when :attr:`has_timer`)."""

    def on_timer(self, now: int) -> None: ...

    def finish(self, now: int, code: int | None, reason: str) -> None:
        """The session ended locally (after its state became closed)."""

    def goaway(self, code: int, message: str, now: int) -> None: ...

    def announce_rebind(self, now: int) -> None:
        """After the endpoint moved to a new socket: tell the peer."""

    def ping(self, nonce: int, now: int) -> bool:
        """Send a keepalive the peer's transport answers; False when the path has none (compat)."""

    def add_stats(self, out: dict[str, int]) -> None: ...


class CompatPath:
    """kcp-go's packet path: pipeline datagrams go to the session's remote address unchanged."""

    __slots__ = ("callbacks", "ep", "owner")

    mode: Literal["compat", "secure"] = "compat"
    overhead = 0
    has_timer = False
    held_acks = False  # kcp-go's peers never agreed to them
    ack_repeat = False  # nor to these: ikcp and kcp-go refuse a REACK and the rest of its datagram

    def __init__(self, ep: Endpoint) -> None:
        self.ep = ep
        self.callbacks: list[EventCallback] = []  # compat sessions have no events
        self.owner: PathOwner | None = None

    @property
    def connection(self) -> SecureConnection | None:
        return None

    def attach(self, owner: PathOwner) -> None:
        self.owner = owner

    def make_output(self, pipeline: Pipeline, plain: bool, counters: Counters) -> Output:
        assert self.owner is not None
        tx_append = self.ep.tx.append
        addr = self.owner.remote_address
        c = counters
        if plain:

            def output(packet: bytes) -> None:
                tx_append((packet, addr))
                c.out_pkts += 1
                c.bytes_sent += len(packet)

            return output
        seal = pipeline.seal
        now_ms = self.ep.timers.now_ms

        def output_sealed(packet: bytes) -> None:
            for datagram in seal(packet, now_ms()):
                tx_append((datagram, addr))
                c.out_pkts += 1
                c.bytes_sent += len(datagram)

        return output_sealed

    def send_datagram(self, datagram: bytes, now: int) -> None:
        assert self.owner is not None
        self.ep.tx.append((datagram, self.owner.remote_address))

    def timer(self) -> int:
        return -1

    def on_timer(self, now: int) -> None:
        return None

    def finish(self, now: int, code: int | None, reason: str) -> None:
        return None

    def goaway(self, code: int, message: str, now: int) -> None:
        raise KCPUsageError("goaway() needs a secure-mode session (compat mode has no GOAWAY)")

    def announce_rebind(self, now: int) -> None:
        raise KCPUsageError("rebind() is for secure-mode client sessions (kcp.dial with a SecureWire)")

    def ping(self, nonce: int, now: int) -> bool:
        return False  # kcp-go's wire has no PING

    def add_stats(self, out: dict[str, int]) -> None:
        return None
