"""A state sender for rooms with a tick (``kcprpc.tick_room``'s ``StateSender`` protocol): each
member gets the room's state through a :class:`~kcprpc.state.StateSync`, with the sequence number
of its last input processed as the message's extra (``StateView.extra`` on the client).

Duck-typed: this module does not import the room; a room calls ``on_member_added(room,
member)``, ``on_member_removed(room, member)`` and ``send(snapshot)`` (``snapshot.state``, a
model instance of the sync's type; ``snapshot.acks``, member id to input seq)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kcprpc.state.sync import InterestFn, StateSync


class SyncSender:
    """``RoomRegistry(Arena, sender=lambda server: SyncSender(StateSync(ArenaState, "arena")))``.

    ``interest(room, member)`` returns the member's interest filter (None: everything). The
    sync is shared by every room the sender serves only if they share one state: give each
    registry its own ``SyncSender`` and name."""

    def __init__(
        self, sync: StateSync[Any], interest: Callable[[Any, Any], InterestFn | None] | None = None
    ) -> None:
        self.sync = sync
        self.interest = interest

    def on_member_added(self, room: Any, member: Any) -> None:
        """Start syncing to ``member`` (a snapshot at the next send)."""
        self.sync.add_client(member, self.interest(room, member) if self.interest else None)

    def on_member_removed(self, room: Any, member: Any) -> None:
        """Stop syncing to ``member``."""
        self.sync.remove_client(member)

    def send(self, snapshot: Any) -> None:
        """Each member's snapshot or delta, with its last input's sequence number."""
        acks = snapshot.acks
        extras = {m: acks.get(m.id, -1) for m in snapshot.members}
        self.sync.send(snapshot.state, extras)
