"""A state sender for rooms with a tick (``kcprpc.tick_room``'s ``StateSender`` protocol): each
member gets the room's state through a :class:`~kcprpc.state.StateSync` of its own room, with
the sequence number of its last input processed as the message's extra (``StateView.extra`` on
the client).

Duck-typed: this module does not import the room; a room calls ``on_member_added(room,
member)``, ``on_member_removed(room, member)`` and ``send(snapshot)`` (``snapshot.state``, an
instance of the model; ``snapshot.acks``, member id to input seq). A registry makes one sender
per room: ``RoomRegistry(Arena, sender=lambda server: SyncSender(ArenaState, states))``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel

from kcp.fieldcheck import shown
from kcprpc.errors import UsageError
from kcprpc.state.interest import Interest
from kcprpc.state.service import StateService
from kcprpc.state.sync import (
    DEFAULT_MAX_PARTS,
    DEFAULT_PART_SIZE,
    InterestFn,
    StateSync,
    check_name,
    check_sync_settings,
)

DEFAULT_ROOM_NAME = "state:{room}"


class SyncSender:
    """Sync ``model`` to the members of one room. The sync is named ``name.format(room=room.name)``
    (what the client passes to ``client_state``) and is added to ``states`` (the server's
    :class:`StateService`, for the acks) while it has members. ``interest(room, member)``, called
    when a member joins, returns that member's filter: a function ``state -> Interest`` called once
    a tick, an :class:`~kcprpc.state.Interest` that stays the same, or None (everything); e.g.
    ``interest=lambda room, member: lambda state: Interest(keys={"units": state.seen_by(member.id)})``.
    ``groups``, ``part_size``, ``max_parts``: :class:`StateSync`'s
    (``groups="auto"``, the default: whole messages while they fit a datagram, then parts;
    ``groups`` > 1: always cut into datagram-sized parts that apply on their own)."""

    def __init__(
        self,
        model: type[BaseModel],
        states: StateService,
        *,
        name: str = DEFAULT_ROOM_NAME,
        interest: Callable[[Any, Any], InterestFn | Interest | None] | None = None,
        max_baselines: int = 32,
        groups: int | Literal["auto"] = "auto",
        part_size: int = DEFAULT_PART_SIZE,
        max_parts: int = DEFAULT_MAX_PARTS,
    ) -> None:
        # checked here: a wrong value failed the first join of every room
        try:
            check_name("SyncSender", name.format(room="r"))
        except (AttributeError, LookupError, ValueError):
            raise UsageError(
                f'SyncSender: name must be a str, a template of {{room}} ("state:{{room}}"), not {shown(name)}'
            ) from None
        check_sync_settings("SyncSender", max_baselines, groups, part_size, max_parts)
        if interest is not None and not callable(interest):
            raise UsageError(
                f"SyncSender: interest must be a function (room, member) -> filter, or None, not {shown(interest)}"
            )
        self.model = model
        self.states = states
        self.name = name
        self.interest = interest
        self.max_baselines = max_baselines
        self.groups = groups
        self.part_size = part_size
        self.max_parts = max_parts
        self.sync: StateSync[Any] | None = None
        """The room's sync (made at the first member)."""

    def on_member_added(self, room: Any, member: Any) -> None:
        """Start syncing to ``member`` (a snapshot at the next send)."""
        if self.sync is None:
            self.sync = StateSync(
                self.model,
                self.name.format(room=room.name),
                max_baselines=self.max_baselines,
                groups=self.groups,
                part_size=self.part_size,
                max_parts=self.max_parts,
            )
        if not len(self.sync):
            self.states.add(self.sync)
        self.sync.add_client(member, self.interest(room, member) if self.interest else None)

    def on_member_removed(self, room: Any, member: Any) -> None:
        """Stop syncing to ``member``; the last one out takes the sync out of ``states``."""
        if self.sync is None:
            return
        self.sync.remove_client(member)
        if not len(self.sync):
            self.states.remove(self.sync)

    def send(self, snapshot: Any) -> None:
        """Each member's snapshot or delta, with its last input's sequence number."""
        if self.sync is None:
            return
        acks = snapshot.acks
        extras = {m: acks.get(m.id, -1) for m in snapshot.members}
        self.sync.send(snapshot.state, extras)
