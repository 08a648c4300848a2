"""The named state of an RPC connection and its transition table (sans-I/O)."""

from __future__ import annotations

from enum import Enum
from typing import Final


class ConnState(Enum):
    """Where an RPC connection is in its life (both ends use the same names).

    * ``AWAITING_HELLO``: connected, the control stream's HELLO not yet received (server) or
      WELCOME not yet received (client); calls are refused (UNAVAILABLE "no handshake").
    * ``HANDSHAKE``: server only: HELLO received, ``on_connect``/restore running; WELCOME not
      sent yet; calls are still refused.
    * ``READY``: calls flow.
    * ``DRAINING``: a GOAWAY was sent (server) or received (client): no new calls; calls in flight
      finish.
    * ``CLOSED``: the connection is gone; nothing more is accepted.
    """

    AWAITING_HELLO = "awaiting_hello"
    HANDSHAKE = "handshake"
    READY = "ready"
    DRAINING = "draining"
    CLOSED = "closed"


TRANSITIONS: Final[dict[ConnState, frozenset[ConnState]]] = {
    ConnState.AWAITING_HELLO: frozenset(
        {ConnState.HANDSHAKE, ConnState.READY, ConnState.DRAINING, ConnState.CLOSED}
    ),
    ConnState.HANDSHAKE: frozenset({ConnState.READY, ConnState.DRAINING, ConnState.CLOSED}),
    ConnState.READY: frozenset({ConnState.DRAINING, ConnState.CLOSED}),
    ConnState.DRAINING: frozenset({ConnState.CLOSED}),
    ConnState.CLOSED: frozenset(),
}
"""The legal moves. Staying in the same state is not a move (callers check first)."""


class IllegalTransition(RuntimeError):
    """An internal error: the code tried a move that :data:`TRANSITIONS` does not allow."""


def check_transition(old: ConnState, new: ConnState) -> ConnState:
    """``new`` if ``old → new`` is legal, else :class:`IllegalTransition`."""
    if new not in TRANSITIONS[old]:
        raise IllegalTransition(f"{old.value} -> {new.value}")
    return new
