"""The acknowledgements of state sync: ``kcprpc.State/Ack``, an unreliable notify from each client
to the :class:`~kcprpc.state.StateSync` it names (docs/wire-format/state.md)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, Field

from kcprpc.context import current_context
from kcprpc.errors import UsageError
from kcprpc.service import Service, rpc
from kcprpc.state.groups import MAX_GROUPS
from kcprpc.state.sync import MAX_NAME, StateSync


class StateAck(BaseModel):
    """A client's acknowledgement: it applied message ``seq`` of the sync ``name`` (with groups:
    the groups ``groups`` of it)."""

    name: str = Field(min_length=1, max_length=MAX_NAME)
    seq: int = Field(ge=1)
    groups: list[int] | None = Field(default=None, max_length=MAX_GROUPS)
    """With groups (PARTS messages): the groups of message ``seq`` applied."""


class StateService(Service, name="kcprpc.State"):
    """Receives the clients' acknowledgements for the syncs added to it. Serve one per server:
    ``states = StateService(); states.add(sync); Server([..., states])``."""

    def __init__(self, syncs: Iterable[StateSync[Any]] = ()) -> None:
        self._syncs: dict[str, StateSync[Any]] = {}
        self.acks_unknown = 0  # acks naming no sync
        for s in syncs:
            self.add(s)

    def add(self, sync: StateSync[Any]) -> None:
        """Route acks for ``sync.name`` to ``sync`` (UsageError if another sync has the name)."""
        other = self._syncs.get(sync.name)
        if other is not None and other is not sync:
            raise UsageError(f"a state sync named {sync.name!r} is already added")
        self._syncs[sync.name] = sync

    def remove(self, sync: StateSync[Any]) -> None:
        """Stop routing acks to ``sync``."""
        if self._syncs.get(sync.name) is sync:
            del self._syncs[sync.name]

    @rpc.notify(name="Ack")
    async def ack(self, msg: StateAck) -> None:
        """The notify ``kcprpc.State/Ack`` (unreliable): route one acknowledgement."""
        sync = self._syncs.get(msg.name)
        if sync is None:
            self.acks_unknown += 1
            return
        sync.ack(current_context().session, msg.seq, msg.groups)
