"""Events reported by secure connections (frozen, slotted dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class PathChanged:
    """An authenticated packet (the newest so far) came from a new address; a probe was queued."""

    old: Any
    new: Any


@dataclass(frozen=True, slots=True)
class PathValidated:
    """The peer answered the path probe at ``addr``: full-rate sending there is now allowed."""

    addr: Any


@dataclass(frozen=True, slots=True)
class PathFailed:
    """No answer to the probe of ``addr``; the connection went back to ``reverted_to``."""

    addr: Any
    reverted_to: Any


@dataclass(frozen=True, slots=True)
class KeyUpdated:
    """Both directions moved to key epoch ``epoch`` (``by_peer``: the peer started it)."""

    epoch: int
    by_peer: bool


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The connection is closed, by an authenticated CLOSE from the peer or by us."""

    code: int
    message: str
    by_peer: bool


@dataclass(frozen=True, slots=True)
class GoAwayReceived:
    """The peer is draining: open no new streams; in-flight calls may finish."""

    code: int
    message: str


@dataclass(frozen=True, slots=True)
class PingAnswered:
    """The peer answered our keepalive PING ``nonce`` (:meth:`kcp.KCPSession.ping`): it is alive,
    and so is the path both ways."""

    nonce: int


Event = (
    PathChanged | PathValidated | PathFailed | KeyUpdated | ConnectionClosed | GoAwayReceived | PingAnswered
)
