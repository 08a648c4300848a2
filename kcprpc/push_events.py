"""What a client's pushed-event handlers receive besides the events: where an event comes from
(:class:`EventInfo`), an event as it came off the wire (:class:`RawEvent`), and the local events a
client raises about its rooms and topics after a reconnect (:class:`Recovered`,
:class:`ResumeFailed`).

In a module of their own, which the compiled build leaves interpreted: pydantic does not accept
the fields of a model defined in a mypyc-compiled module, and a compiled dataclass cannot derive
from :class:`~kcprpc.broker.KeyNames` (an interpreted class). :mod:`kcprpc.push` and
:mod:`kcprpc.subscriptions`, which use them, are compiled."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from kcprpc.broker import KeyNames, Position
from kcprpc.service import event

__all__ = ["EventInfo", "RawEvent", "Recovered", "ResumeFailed"]


@dataclass(frozen=True, slots=True)
class EventInfo(KeyNames):
    """Where a pushed event comes from, for handlers that take a second parameter
    (``client.on(Chat, lambda chat, info: ...)``) and for ``client.events(Chat, info=True)``.

    ``key``: ``"room:<name>"`` / ``"topic:<name>"`` (None for an event sent to this session
    only); ``position``: its :class:`~kcprpc.Position` in that room or topic (what to save for a
    later ``client.subscribe(topic, since=position)``); ``replayed``: it was replayed from history
    after a reconnect or a ``since=`` subscribe, not live; ``unreliable``: it came as a datagram."""

    name: str
    key: str | None
    position: Position | None
    replayed: bool
    unreliable: bool


@dataclass(frozen=True, slots=True)
class RawEvent(KeyNames):
    """A pushed event as it came off the wire (see :meth:`Client.on_raw_event`): the event's wire name,
    its payload as a plain msgpack value, and for room and topic messages the broker key
    (``"room:<name>"`` / ``"topic:<name>"``), sequence number and epoch; ``replayed``: flagged as
    replayed from history (not live)."""

    name: str
    payload: Any
    key: str | None
    seq: int | None
    epoch: int | None
    unreliable: bool  # came as an OOB datagram
    replayed: bool = False
    lw_key: str | None = None  # its latest-wins key (docs/rpc.md, "Latest-wins and priorities")

    @property
    def position(self) -> Position | None:
        """``Position(epoch, seq)`` for a room or topic message."""
        return Position(self.epoch, self.seq) if self.seq is not None and self.epoch is not None else None


@event("kcprpc.ResumeFailed")
class ResumeFailed(BaseModel):
    """Raised on the client (a local event, never sent) after a reconnect for each room or topic
    the server did not restore: the client is no longer in it (reason ``"not restored"``). Gaps in
    what was replayed are told by :class:`Recovered`."""

    key: str  # "room:<name>" or "topic:<name>"
    epoch: int  # the client's last epoch for the key
    last_seq: int  # the client's last sequence number
    reason: str


@event("kcprpc.Recovered")
class Recovered(BaseModel, KeyNames):
    """Raised on the client (a local event) for each room and topic recovered after a reconnect,
    and for a ``client.subscribe(topic, since=...)``, once the replayed events were handled. The
    server also pushes one (``recovered=False``) when a broker across processes could not fill a
    gap in a key's live delivery from its history: ``missed`` messages are gone.

    ``recovered``: every message after the client's position was replayed (nothing lost).
    ``replayed``: how many were. ``missed``: how many the history no longer held (its size or
    TTL), ``None`` when unknown (the broker's epoch changed, or the client had no position).
    ``position``: where the client is now.

    After a resume that sent some of the session's own reliable events again (``session.send``)
    or missed some, one more with ``key`` ``"session"``; its ``position`` is ``(0, the number of
    the last one handled)`` (docs/wire-format/rpc.md, "Numbered direct events")."""

    key: str  # "room:<name>", "topic:<name>", or "session" (the session's own events)
    recovered: bool
    replayed: int
    missed: int | None
    position: Position
