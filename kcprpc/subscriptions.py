"""What a client does with pushed events: de-duplication, topic offsets, rooms, and the handlers.

:class:`Subscriptions` is the client's receiving end of push (docs/wire-format/rpc.md, "Push"):
it keeps the last ``(epoch, seq)`` per broker key (what ``HELLO.restore`` sends after a reconnect),
drops replayed duplicates and stale datagrams, tracks the rooms and topics the client is in, and
hands each event to the handlers registered with ``client.on`` / ``client.events`` /
``client.on_raw_event``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from pydantic import ValidationError

from kcprpc.protocol.frames import Event
from kcprpc.push import ResumeFailed
from kcprpc.service import event_info

log = logging.getLogger("kcprpc.client")

__all__ = ["RawEvent", "Subscriptions"]

T = TypeVar("T")
EventHandler = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class RawEvent:
    """A pushed event as it came off the wire (see :meth:`Client.on_raw_event`): the event's wire name,
    its payload as a plain msgpack value, and for room and topic messages the broker key
    (``"room:<name>"`` / ``"topic:<name>"``), sequence number and epoch."""

    name: str
    payload: Any
    key: str | None
    seq: int | None
    epoch: int | None
    unreliable: bool  # came as an OOB datagram

    @property
    def topic(self) -> str | None:
        """The topic it was published on, if any."""
        return self.key[6:] if self.key is not None and self.key.startswith("topic:") else None

    @property
    def room(self) -> str | None:
        """The room it was sent to, if any."""
        return self.key[5:] if self.key is not None and self.key.startswith("room:") else None


class Subscriptions:
    """A client's pushed events: offsets, rooms, topics and handlers (see the module docstring).

    ``spawn`` runs the awaitable an async handler returns."""

    def __init__(self, spawn: Callable[[Awaitable[Any]], None]) -> None:
        self._spawn = spawn
        self._handlers: dict[str, list[tuple[Any, EventHandler]]] = {}
        self._queues: dict[str, list[tuple[Any, asyncio.Queue[Any]]]] = {}
        self._raw_handlers: list[Callable[[RawEvent], Any]] = []
        self.rooms: set[str] = set()
        self.topics: set[str] = set()
        self.offsets: dict[str, tuple[int, int]] = {}  # broker key -> (epoch, last seq) of the stream
        self._latest: dict[str, tuple[int, int]] = {}  # the same for datagrams (latest-wins)
        self.events_dropped = 0  # events that fail validation against the handler's type
        self.events_stale = 0  # unreliable events dropped because a newer one had arrived

    # ------------------------------------------------------------------ registration
    def on(self, event_type: type[T], handler: Callable[[T], Any]) -> Callable[[], None]:
        """Call ``handler(event)`` for each pushed ``event_type``; returns an unsubscribe function."""
        name, _, adapter = event_info(event_type)
        entry = (adapter, cast(EventHandler, handler))
        self._handlers.setdefault(name, []).append(entry)

        def off() -> None:
            with contextlib.suppress(ValueError, KeyError):
                self._handlers[name].remove(entry)

        return off

    def on_raw_event(self, handler: Callable[[RawEvent], Any]) -> Callable[[], None]:
        """Call ``handler(RawEvent)`` for every pushed event; returns an unsubscribe function."""
        self._raw_handlers.append(handler)

        def off() -> None:
            with contextlib.suppress(ValueError):
                self._raw_handlers.remove(handler)

        return off

    async def events(self, event_type: type[T]) -> AsyncGenerator[T, None]:
        """Async iterator over pushed events of ``event_type`` (registered when iteration starts)."""
        name, _, adapter = event_info(event_type)
        q: asyncio.Queue[Any] = asyncio.Queue()
        entry = (adapter, q)
        self._queues.setdefault(name, []).append(entry)
        try:
            while True:
                yield cast(T, await q.get())
        finally:
            with contextlib.suppress(ValueError, KeyError):
                self._queues[name].remove(entry)

    # ------------------------------------------------------------------ state
    def room(self, joined: bool, room: str) -> None:
        """A ROOMS frame: the server put this client in or out of ``room``."""
        if joined:
            self.rooms.add(room)
        else:
            self.rooms.discard(room)

    def restore_claim(self) -> dict[str, Any]:
        """What ``HELLO.restore`` names after a reconnect: rooms, topics and their offsets."""
        keys = {f"room:{r}" for r in self.rooms} | {f"topic:{t}" for t in self.topics}
        offsets = {k: list(v) for k, v in self.offsets.items() if k in keys}
        return {"rooms": sorted(self.rooms), "topics": sorted(self.topics), "offsets": offsets}

    def restored(self, restored: dict[str, Any] | None) -> None:
        """After a reconnect: keep the rooms and topics the server says this client is back in, and
        tell the application of each one it lost (``ResumeFailed`` with reason ``"not restored"``)."""
        if restored is None:
            return
        rooms, topics = restored.get("rooms"), restored.get("topics")
        back_rooms = {r for r in rooms if isinstance(r, str)} if isinstance(rooms, list) else set()
        back_topics = {t for t in topics if isinstance(t, str)} if isinstance(topics, list) else set()
        lost = [f"room:{r}" for r in sorted(self.rooms - back_rooms)]
        lost += [f"topic:{t}" for t in sorted(self.topics - back_topics)]
        self.rooms = back_rooms
        self.topics = back_topics
        for key in lost:
            epoch, seq = self.offsets.pop(key, (0, 0))
            self._latest.pop(key, None)
            ev = ResumeFailed(key=key, epoch=epoch, last_seq=seq, reason="not restored")
            self.handle(Event("kcprpc.ResumeFailed", ev.model_dump(), None, None, None), False)

    # ------------------------------------------------------------------ delivery
    def handle(self, event: Event, unreliable: bool = False) -> None:
        """One pushed event (``unreliable``: it came as a datagram)."""
        name, payload, key, seq, epoch = event
        if key is not None and seq is not None and epoch is not None:
            # Reliable (stream) and unreliable (datagram) messages of one key share its sequence
            # numbers but are tracked apart: the stream's offset drives resume and drops replay
            # duplicates; datagrams are latest-wins (an older one arriving late is dropped).
            offsets = self._latest if unreliable else self.offsets
            prev = offsets.get(key)
            if prev is not None and prev[0] == epoch and seq <= prev[1]:
                if unreliable:
                    self.events_stale += 1
                return
            offsets[key] = (epoch, seq)
        if self._raw_handlers:
            raw = RawEvent(name, payload, key, seq, epoch, unreliable)
            for raw_handler in list(self._raw_handlers):
                try:
                    raw_handler(raw)
                except Exception:
                    log.exception("raw event handler raised")
        for adapter, handler in self._handlers.get(name, ()):
            try:
                ev = adapter.validate_python(payload)
            except ValidationError:
                self.events_dropped += 1
                continue
            try:
                r = handler(ev)
                if inspect.isawaitable(r):
                    self._spawn(r)
            except Exception:
                log.exception("event handler for %s raised", name)
        for adapter, q in self._queues.get(name, ()):
            try:
                q.put_nowait(adapter.validate_python(payload))
            except ValidationError:
                self.events_dropped += 1
