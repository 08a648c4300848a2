"""Events of the transport under an RPC connection, in kcprpc's own terms.

A :class:`~kcprpc.transport.Connection` that has transport events (a secure-mode KCP session:
:class:`kcprpc.net.MuxConnection`) translates its transport's events into these and hands them to
the callbacks given to ``Connection.add_event_callback``; the RPC client and server react to these,
never to the transport's own classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kcprpc.status import Status

__all__ = [
    "PathChanged",
    "PathFailed",
    "PathValidated",
    "PeerClosed",
    "PeerDraining",
    "PingAnswered",
    "TransportEvent",
]


@dataclass(frozen=True, slots=True)
class PathChanged:
    """The peer now sends from ``new`` (it was ``old``): NAT rebinding, a new network."""

    old: Any
    new: Any


@dataclass(frozen=True, slots=True)
class PathValidated:
    """The peer answered at ``address``: the new path is confirmed."""

    address: Any


@dataclass(frozen=True, slots=True)
class PathFailed:
    """No answer at ``address``: the connection went back to ``reverted_to``."""

    address: Any
    reverted_to: Any


@dataclass(frozen=True, slots=True)
class PeerDraining:
    """The peer's transport is going away (a transport GOAWAY): open nothing new on it."""

    message: str


@dataclass(frozen=True, slots=True)
class PeerClosed:
    """The peer closed the transport. ``status``: the RPC status it closed with (a server ending a
    slow consumer), else None; ``reason``: a readable reason (``"<reason>: <message>"``)."""

    status: Status | None
    message: str
    reason: str


@dataclass(frozen=True, slots=True)
class PingAnswered:
    """The peer's transport answered this side's :meth:`~kcprpc.transport.Connection.ping` ``nonce``."""

    nonce: int


TransportEvent = PathChanged | PathValidated | PathFailed | PeerDraining | PeerClosed | PingAnswered
