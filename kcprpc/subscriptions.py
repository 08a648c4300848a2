"""What a client does with pushed events: de-duplication, topic offsets, rooms, and the handlers.

:class:`Subscriptions` is the client's receiving end of push (docs/wire-format/rpc.md, "Push"):
it keeps the last ``(epoch, seq)`` per broker key (what ``HELLO.restore`` sends after a reconnect),
drops replayed duplicates and stale datagrams, tracks the rooms and topics the client is in, and
hands each event to the handlers registered with ``client.on`` / ``client.events`` /
``client.on_raw_event``.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, Final, TypeVar

from pydantic import ValidationError

from kcp.logutil import RateLimitedLog
from kcprpc.broker import Position
from kcprpc.direct_events import SESSION_KEY
from kcprpc.event_stream import EventQueues, queued_events
from kcprpc.protocol.frames import EVENT_REPLAYED, Event
from kcprpc.push_events import EventInfo, RawEvent, Recovered, ResumeFailed
from kcprpc.service import event_info

log = logging.getLogger("kcprpc.client")
_bug_log = RateLimitedLog(log, burst=3, interval=60.0)
_DROPPED: Final = object()  # what _validated returns for an event it dropped

__all__ = ["EventInfo", "RawEvent", "Subscriptions", "takes_info"]

T = TypeVar("T")
EventHandler = Callable[..., Any]
_new: Final = tuple.__new__

MAX_LATEST_KEYS: Final = 65_536
"""Latest-wins keys a client remembers (their newest position each); past it the oldest is
forgotten (``keys_evicted``): a late datagram of a forgotten key is then not recognised as stale."""


def takes_info(handler: Callable[..., Any]) -> bool:
    """True when ``handler`` accepts two positional arguments (the event and its
    :class:`EventInfo`); decided once, when it is registered."""
    try:
        params = inspect.signature(handler).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: one argument
        return False
    n = 0
    for p in params:
        if p.kind is p.VAR_POSITIONAL:
            return True
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            n += 1
    return n >= 2


def _key_name(key: str) -> str:
    return key.split(":", 1)[1] if ":" in key else key


class Subscriptions:
    """A client's pushed events: offsets, rooms, topics and handlers (see the module docstring).

    ``spawn`` runs the awaitable an async handler returns."""

    def __init__(self, spawn: Callable[[Awaitable[Any]], None]) -> None:
        self._spawn = spawn
        self._handlers: dict[str, list[tuple[Any, EventHandler, bool]]] = {}
        self._queues: EventQueues = {}
        self._raw_handlers: list[Callable[[RawEvent], Any]] = []
        self.rooms: set[str] = set()
        self.topics: set[str] = set()
        self.offsets: dict[str, Position] = {}  # broker key -> position of the last stream event
        self._latest: dict[str, Position] = {}  # the same for datagrams (latest-wins)
        self.events_dropped = 0  # events that fail validation against the handler's type
        self.events_stale = 0  # unreliable events dropped because a newer one had arrived
        # latest-wins keys (docs/rpc.md, "Latest-wins and priorities"): (room/topic key or None
        # for events sent to this session only, latest-wins key) -> the newest position seen
        self._keyed: dict[tuple[str | None, str], Position] = {}
        self.max_keys = MAX_LATEST_KEYS
        self.events_stale_keyed = (
            0  # of events_stale: keyed events (one newer of their latest-wins key had come)
        )
        self.keys_evicted = 0  # latest-wins keys forgotten (the oldest) to stay within max_keys

    # ------------------------------------------------------------------ registration
    def on(self, event_type: type[T], handler: Callable[..., Any]) -> Callable[[], None]:
        """Call ``handler(event)``, or ``handler(event, info)`` when it takes two positional
        parameters, for each pushed ``event_type``; returns an unsubscribe function."""
        name, _, adapter = event_info(event_type)
        entry = (adapter, handler, takes_info(handler))
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

    def events(self, event_type: type[Any], info: bool = False) -> AsyncGenerator[Any, None]:
        """Async iterator over pushed events of ``event_type`` (registered when iteration starts);
        with ``info``, ``(event, EventInfo)`` pairs."""
        return queued_events(self._queues, event_type, info)

    # ------------------------------------------------------------------ state
    def room(self, joined: bool, room: str) -> None:
        """A ROOMS frame: the server put this client in or out of ``room``."""
        if joined:
            self.rooms.add(room)
        else:
            self.rooms.discard(room)
            self.forget("room:" + room)

    def forget(self, key: str) -> None:
        """This client left ``key`` (a room, or a topic it unsubscribed from): its offsets go (a
        client that went through many rooms kept every one's for good)."""
        self.offsets.pop(key, None)
        self._latest.pop(key, None)

    def position(self, key: str) -> Position | None:
        """The position of the last stream event received on ``key`` (or the one the server
        reported), None before any."""
        return self.offsets.get(key)

    def advance(self, key: str, position: Position) -> None:
        """Move ``key``'s offset to ``position`` (the server's word: a subscribe's reply, a
        recovery's report) unless the client is already past it in the same epoch."""
        prev = self.offsets.get(key)
        if prev is None or prev[0] != position.epoch or prev[1] < position.offset:
            self.offsets[key] = position

    def restore_claim(self) -> dict[str, Any]:
        """What ``HELLO.restore`` names after a reconnect: rooms, topics and their offsets."""
        keys = {f"room:{r}" for r in self.rooms} | {f"topic:{t}" for t in self.topics}
        offsets = {k: list(v) for k, v in self.offsets.items() if k in keys}
        return {"rooms": sorted(self.rooms), "topics": sorted(self.topics), "offsets": offsets}

    def restored(self, restored: dict[str, Any] | None) -> None:
        """After a reconnect: keep the rooms and topics the server says this client is back in,
        tell the application of each one it lost (``ResumeFailed`` with reason ``"not
        restored"``) and of each recovery (``Recovered``)."""
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
            self.local(ev)
        recovery = restored.get("recovery")
        if isinstance(recovery, dict):
            for key, rep in recovery.items():
                self.recovered(key, rep)

    def recovered(self, key: Any, rep: Any) -> None:
        """One key's recovery report from the server (``[recovered, replayed, missed|nil,
        [epoch, offset]]``; anything else is ignored): move its offset past what the server
        accounted for and raise :class:`Recovered`."""
        if not isinstance(key, str) or not isinstance(rep, list) or len(rep) < 4:
            return
        ok, replayed, missed, pos = rep[:4]
        if (
            type(replayed) is not int
            or not (missed is None or type(missed) is int)
            or not isinstance(pos, list)
            or len(pos) != 2
            or not all(type(x) is int for x in pos)
        ):
            return
        if key.startswith("room:"):
            if _key_name(key) not in self.rooms:
                return
        elif not key.startswith("topic:") or _key_name(key) not in self.topics:
            return
        self.advance(key, Position(pos[0], pos[1]))
        position = Position(*self.offsets[key])
        self.local(
            Recovered(key=key, recovered=ok is True, replayed=replayed, missed=missed, position=position)
        )

    def direct_recovered(self, report: list[int], last: int) -> None:
        """A resume's report on the session's numbered direct events (``WELCOME.direct``:
        ``[replayed, missed]``, the replayed ones handled by then; some were replayed or missed):
        raise :class:`Recovered` with key ``"session"`` (its position: ``(0, the number of the
        last one handled)``)."""
        replayed, missed = report
        self.local(
            Recovered(
                key=SESSION_KEY,
                recovered=missed == 0,
                replayed=replayed,
                missed=missed,
                position=Position(0, last),
            )
        )

    def local(self, ev: Any) -> None:
        """Hand a locally made event (``ResumeFailed``, ``Recovered``) to its handlers."""
        name, _, adapter = event_info(type(ev))
        self.handle(Event(name, adapter.dump_python(ev), None, None, None), False)

    # ------------------------------------------------------------------ delivery
    def handle(self, event: Event, unreliable: bool = False) -> None:
        """One pushed event (``unreliable``: it came as a datagram)."""
        name, payload, key, seq, epoch, flags, lw = event
        if lw is not None and not self._keep_keyed(key, lw, seq, epoch, unreliable):
            return
        # datagrams of a keyed event are latest-wins per key (above), not per room or topic
        if key is not None and seq is not None and epoch is not None and (lw is None or not unreliable):
            # Reliable (stream) and unreliable (datagram) messages of one key share its sequence
            # numbers but are tracked apart: the stream's offset drives resume and drops replay
            # duplicates; datagrams are latest-wins (an older one arriving late is dropped).
            offsets = self._latest if unreliable else self.offsets
            prev = offsets.get(key)
            if prev is not None and prev[0] == epoch and seq <= prev[1]:
                if unreliable:
                    self.events_stale += 1
                return
            offsets[key] = _new(Position, (epoch, seq))
        if self._raw_handlers:
            raw = RawEvent(name, payload, key, seq, epoch, unreliable, bool(flags & EVENT_REPLAYED), lw)
            for raw_handler in list(self._raw_handlers):
                try:
                    raw_handler(raw)
                except Exception:
                    log.exception("raw event handler raised")
        info: EventInfo | None = None
        for adapter, handler, wants_info in self._handlers.get(name, ()):
            ev = self._validated(adapter, payload, name)
            if ev is _DROPPED:
                continue
            try:
                if wants_info:
                    if info is None:
                        info = self._info(event, unreliable)
                    r = handler(ev, info)
                else:
                    r = handler(ev)
                if r is not None and inspect.isawaitable(r):  # a plain handler returns None
                    self._spawn(r)
            except Exception:
                log.exception("event handler for %s raised", name)
        for adapter, q, with_info in self._queues.get(name, ()):
            ev = self._validated(adapter, payload, name)
            if ev is _DROPPED:
                continue
            if with_info:
                if info is None:
                    info = self._info(event, unreliable)
                q.put_nowait((ev, info))
            else:
                q.put_nowait(ev)

    def _validated(self, adapter: Any, payload: Any, name: str) -> Any:
        """``payload`` as the handler's type, or :data:`_DROPPED` (counted in ``events_dropped``)
        when it does not validate, or when the app's validator raised what pydantic passes
        through (anything but ValueError and AssertionError: an app's bug, logged a few times a
        minute; before, it ended the reading of the connection's control stream for good)."""
        try:
            return adapter.validate_python(payload)
        except ValidationError:
            self.events_dropped += 1
        except Exception:
            self.events_dropped += 1
            _bug_log.exception(
                "validator", "validating event %s raised (not a ValidationError): dropped", name
            )
        return _DROPPED

    def _keep_keyed(
        self, key: str | None, lw: str, seq: int | None, epoch: int | None, unreliable: bool
    ) -> bool:
        """Record a keyed event's position; False when it came as a datagram older than (or the
        same as) one already seen for its (room/topic, latest-wins key): drop it."""
        if seq is None or epoch is None:
            return True
        k = (key, lw)
        table = self._keyed
        prev = table.get(k)
        if prev is not None and prev[0] == epoch:
            if seq <= prev[1]:
                if unreliable:
                    self.events_stale_keyed += 1
                    self.events_stale += 1
                    return False
                return True  # a stream event is in order: an equal seq is a replay, handled below
            del table[k]  # re-inserted last: the dict's order is "least recently updated first"
        elif prev is None and len(table) >= self.max_keys:
            del table[next(iter(table))]
            self.keys_evicted += 1
        table[k] = _new(Position, (epoch, seq))
        return True

    @staticmethod
    def _info(event: Event, unreliable: bool) -> EventInfo:
        name, _, key, seq, epoch, flags, _lw = event
        pos = Position(epoch, seq) if seq is not None and epoch is not None else None
        return EventInfo(name, key, pos, bool(flags & EVENT_REPLAYED), unreliable)
