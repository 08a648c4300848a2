"""A room with a fixed-rate simulation tick, and the registry that creates and disposes rooms
(docs/game.md).

A :class:`TickRoom` has members (server sessions), queues their inputs with their sequence
numbers (:mod:`kcprpc.tick_inputs`), runs ``update(dt, inputs)`` on a drift-free schedule
(:mod:`kcprpc.tick`) and hands its state to a :class:`StateSender` at ``send_hz``. A
:class:`RoomRegistry` creates rooms on demand, lets sessions join and leave them, follows the
server's session hooks (a detached member stays a member until it is gone for good) and stops
every room when the server shuts down. A room lives in the process that created it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

import msgpack
from pydantic import BaseModel, TypeAdapter, ValidationError

from kcp.fieldcheck import check_count, is_int, is_number, shown
from kcp.logutil import RateLimitedLog
from kcp.ratelimit import PrefixLimiter, SourceTally
from kcp.token_bucket import TokenBucket
from kcprpc.broker import room_key
from kcprpc.errors import RpcError, UsageError
from kcprpc.msgpack_size import held_size
from kcprpc.send_lanes import encode_keyed_event
from kcprpc.service import Delivery, event, event_info
from kcprpc.status import Status
from kcprpc.tick import TickSchedule, sends_between
from kcprpc.tick_inputs import INPUT_COUNTERS, InputQueue, TickInput
from kcprpc.transport import maybe_await

if TYPE_CHECKING:
    from kcprpc.server import Server

__all__ = [
    "PushStateSender",
    "RoomMember",
    "RoomRegistry",
    "RoomState",
    "Snapshot",
    "StateSender",
    "TickInput",
    "TickRoom",
]

log = logging.getLogger("kcprpc.rooms")
_hook_log = RateLimitedLog(log, burst=10, interval=60.0)  # members decide how often hooks run

ROOM_COUNTERS = (
    "ticks",  # update() calls
    "ticks_missed",  # ticks skipped: due while the loop was late, past max_catch_up
    "sends",  # states handed to the sender
    "update_errors",  # update() raised (logged; the room goes on)
    "send_errors",  # get_state() or the sender raised (logged; the room goes on)
    *INPUT_COUNTERS,
)
"""The counters of one room (``room.stats``)."""


class RoomMember(Protocol):
    """What a room uses of a member: a :class:`kcprpc.ServerSession`."""

    id: str
    closed: bool
    detached: bool
    may_resume: bool


@dataclass(frozen=True)
class Snapshot:
    """What a room hands its sender after a tick: the room's name, the tick index (tick ``n`` is
    simulation time ``n / tick_hz``), the state, the members not detached, and per member id the
    sequence number of its last input processed (-1: none yet)."""

    room: str
    tick: int
    state: Any
    members: tuple[Any, ...]
    acks: Mapping[str, int]


class StateSender(Protocol):
    """Sends a room's state to its members (the default is :class:`PushStateSender`; a delta
    state sync plugs in here). Each method may be sync or async."""

    def on_member_added(self, room: TickRoom, member: Any) -> Awaitable[None] | None:
        """``member`` joined ``room`` (before ``on_join``); a later :meth:`send` includes it."""
        ...

    def on_member_removed(self, room: TickRoom, member: Any) -> Awaitable[None] | None:
        """``member`` left ``room`` for good (after ``on_leave``), or the room stopped."""
        ...

    def send(self, snapshot: Snapshot) -> Awaitable[None] | None:
        """Send ``snapshot`` (called at the room's ``send_hz``, after the tick it describes)."""
        ...


@event("kcprpc.RoomState", delivery="unreliable")  # what the default sender sends (a per-send choice)
class RoomState(BaseModel):
    """The state event of :class:`PushStateSender`: the room, the tick, the last input sequence
    number processed per member id (a client finds its own under its member id, the ``member``
    of its join reply), and the room's state as the app's model dumps it."""

    room: str
    tick: int
    acks: dict[str, int]
    state: Any


class PushStateSender:
    """The default sender: each member is in the push room of the room's name, and each send is
    one :class:`RoomState` event to that push room's members on this server (``delivery``:
    unreliable by default, the newest state replaces a lost one). Needs the server:
    :meth:`RoomRegistry.attach` gives it.

    States go straight to the sessions, not through the broker: a room's members are this
    server's sessions, and a state is stale once the next is sent, so none is numbered in the
    room's sequence or kept in its history (before, every state of every room stayed in the
    broker's history, 1,024 per room for good with the default policy). An unreliable state is a
    latest-wins event (key ``kcprpc.RoomState``) numbered by this sender: a client drops one
    older than a state it already has, as it does for any datagram that arrives late."""

    def __init__(
        self,
        server: Server,
        delivery: Delivery | str = Delivery.UNRELIABLE,
        *,
        rng: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.server = server
        self.delivery = Delivery(delivery)
        self._epoch = int.from_bytes(rng(4), "big") or 1
        self._seq = 0

    def on_member_added(self, room: TickRoom, member: Any) -> None:
        """Join the member to the push room ``room.name``."""
        self.server.push.join(member, room.name)

    def on_member_removed(self, room: TickRoom, member: Any) -> None:
        """Take the member out of the push room."""
        self.server.push.leave(member, room.name)

    def send(self, snapshot: Snapshot) -> None:
        """Send one :class:`RoomState` to the room's members on this server."""
        payload = _ROOM_STATE.dump_python(
            RoomState(room=snapshot.room, tick=snapshot.tick, acks=dict(snapshot.acks), state=snapshot.state)
        )
        key = room_key(snapshot.room)
        if self.delivery is Delivery.UNRELIABLE:
            self._seq += 1
            frame = encode_keyed_event(
                _ROOM_STATE_NAME, payload, key, self._seq, self._epoch, _ROOM_STATE_NAME
            )
        else:  # on the stream, in order: unnumbered, so that it never moves the room's resume offset
            frame = encode_keyed_event(_ROOM_STATE_NAME, payload, key, None, None, _ROOM_STATE_NAME)
        self.server.push.send_local(snapshot.room, frame, self.delivery)


_ROOM_STATE_NAME, _, _ROOM_STATE = event_info(RoomState)


_SIZE_LIMIT = 1 << 24  # past this an input's estimate stops: it is over any queue's bound anyway


def _size(payload: Any) -> int:
    """What an input payload takes, as the queues count it (``max_input_bytes``): the estimate of
    the Python objects its msgpack form decodes into (kcprpc.msgpack_size), not its wire size, so
    that 16 KB of nested empty lists (a megabyte decoded) counts as the megabyte it is held as."""
    if isinstance(payload, BaseModel):
        payload = payload.model_dump(mode="json")
    try:
        packed = msgpack.packb(payload, use_bin_type=True)
    except (TypeError, ValueError, OverflowError):
        return len(repr(payload))
    return held_size(packed, _SIZE_LIMIT)


_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def _input_adapter(model: Any) -> TypeAdapter[Any]:
    """The input model's adapter, built once per model (each room built its own: most of what
    creating a room cost)."""
    try:
        adapter = _ADAPTERS.get(model)
    except TypeError:  # an unhashable model
        return TypeAdapter(model)
    if adapter is None:
        adapter = _ADAPTERS[model] = TypeAdapter(model)
    return adapter


class TickRoom:
    """A room with a fixed-rate simulation tick. Subclass it and override what you need:
    :meth:`on_create`, :meth:`on_join`, :meth:`on_leave`, :meth:`on_detach`, :meth:`on_resume`,
    :meth:`on_dispose` (each sync or async), :meth:`update` (the simulation step) and
    :meth:`get_state` (what is sent; ``self.state`` by default).

    Class attributes configure it (or pass them to the constructor): ``tick_hz`` (simulation
    ticks a second), ``send_hz`` (states sent a second, at most ``tick_hz``; None: ``tick_hz``),
    ``max_catch_up`` (the most ticks run at one wake-up when the loop was late: the others are
    skipped and counted in ``ticks_missed``), ``max_clients`` (None: no limit),
    ``dispose_after`` (seconds an empty room waits for a member before it stops),
    ``input_model`` (the pydantic type of an input's payload, validated on arrival),
    ``max_inputs`` and ``max_input_bytes`` (per member: past them the oldest inputs are dropped,
    counted), ``inputs_per_tick`` (per member and tick, None: all queued), ``max_input_rate``
    (new inputs a second per member, in bursts of ``max_inputs``; None: 8 x ``tick_hz``; past it
    they are dropped before they are validated, ``inputs_rate_limited``).
    """

    tick_hz: ClassVar[int] = 20
    send_hz: ClassVar[int | None] = None
    max_catch_up: ClassVar[int] = 4
    max_clients: ClassVar[int | None] = None
    dispose_after: ClassVar[float] = 0.0
    input_model: ClassVar[Any] = Any
    max_inputs: ClassVar[int] = 64
    max_input_bytes: ClassVar[int] = 64 * 1024
    inputs_per_tick: ClassVar[int | None] = None
    max_input_rate: ClassVar[float | None] = None

    def __init__(
        self,
        name: str,
        *,
        sender: StateSender | None = None,
        clock: Callable[[], float] | None = None,
        **settings: Any,
    ) -> None:
        if not name:
            raise UsageError("a room needs a name")
        for key, value in settings.items():
            if key not in _SETTINGS:
                raise UsageError(f"unknown room setting {key!r} (one of {', '.join(sorted(_SETTINGS))})")
            setattr(self, key, value)
        self.name = name
        self.sender = sender
        self._clock = clock
        if not is_int(self.tick_hz) or self.tick_hz < 1:
            raise UsageError(f"tick_hz must be a positive integer, not {self.tick_hz!r}")
        send_hz = self.tick_hz if self.send_hz is None else self.send_hz
        if not is_int(send_hz) or not 1 <= send_hz <= self.tick_hz:
            raise UsageError(
                f"send_hz must be an integer from 1 to tick_hz ({self.tick_hz}), not {send_hz!r}"
            )
        self._send_hz = send_hz
        if self.max_clients is not None and (not is_int(self.max_clients) or self.max_clients < 1):
            raise UsageError(
                f"max_clients must be an integer of at least 1 (or None), not {self.max_clients!r}"
            )
        if not is_number(self.dispose_after) or self.dispose_after < 0:
            raise UsageError(
                f"dispose_after must be a finite number of seconds >= 0, not {self.dispose_after!r}"
            )
        if self.max_inputs < 1 or self.max_input_bytes < 1:
            raise UsageError("max_inputs and max_input_bytes must be at least 1")
        if self.inputs_per_tick is not None and self.inputs_per_tick < 1:
            raise UsageError("inputs_per_tick must be at least 1 (or None)")
        rate = self.max_input_rate
        if rate is not None and (
            isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0
        ):
            raise UsageError(f"max_input_rate must be a number > 0 (inputs a second), not {rate!r}")
        self._input_adapter = _input_adapter(self.input_model)
        self.schedule: TickSchedule | None = None
        self.state: Any = None
        """The room's state (what :meth:`get_state` returns unless overridden)."""
        self.tick = -1
        """The index of the last tick run (-1: none yet)."""
        self.members: dict[str, Any] = {}
        """Members by session id (detached ones included, until they are gone for good)."""
        self._inputs: dict[str, InputQueue] = {}
        self.stats: dict[str, int] = dict.fromkeys(ROOM_COUNTERS, 0)
        self._last_send_tick = -1
        self._task: asyncio.Task[None] | None = None
        self._dispose_timer: asyncio.TimerHandle | None = None
        self._stop_task: asyncio.Future[None] | None = None
        self._stopping = False
        self.stopped = asyncio.Event()
        """Set once the room stopped (its tick task ended, ``on_dispose`` ran)."""
        self.on_stopped: Callable[[TickRoom], None] | None = None  # the registry forgets it

    # ---------------------------------------------------------------- the app's side
    def on_create(self) -> Awaitable[None] | None:
        """Called once, before the first tick and the first member (set ``self.state`` here)."""
        return None

    def on_join(self, member: Any) -> Awaitable[None] | None:
        """``member`` joined (it is in :attr:`members`)."""
        return None

    def on_leave(self, member: Any) -> Awaitable[None] | None:
        """``member`` left, or is gone for good (no longer in :attr:`members`)."""
        return None

    def on_detach(self, member: Any) -> Awaitable[None] | None:
        """``member``'s connection was lost; it stays a member while it may resume."""
        return None

    def on_resume(self, member: Any) -> Awaitable[None] | None:
        """``member`` resumed its session (it is connected again)."""
        return None

    def on_dispose(self) -> Awaitable[None] | None:
        """The room stopped (no tick runs any more)."""
        return None

    def update(self, dt: float, inputs: Mapping[str, Sequence[TickInput]]) -> Awaitable[None] | None:
        """One simulation step of ``dt`` seconds (always ``1 / tick_hz``) with the inputs taken
        this tick per member id, in sequence order."""
        return None

    def get_state(self) -> Any:
        """What a send carries (``self.state`` by default)."""
        return self.state

    # ---------------------------------------------------------------- members and inputs
    @property
    def full(self) -> bool:
        """True when ``max_clients`` members are in."""
        return self.max_clients is not None and len(self.members) >= self.max_clients

    @property
    def running(self) -> bool:
        """True from :meth:`start` until the room stops."""
        return self.schedule is not None and not self._stopping

    def acked(self, member_id: str) -> int:
        """The sequence number of the last input of ``member_id`` processed (-1: none)."""
        q = self._inputs.get(member_id)
        return q.acked if q is not None else -1

    async def add_member(self, member: Any) -> None:
        """Add ``member`` (RESOURCE_EXHAUSTED when full, UNAVAILABLE once stopping). The sender's
        ``on_member_added`` and ``on_join`` may refuse it with :class:`RpcError`: it is then not a
        member (and ``on_leave`` does not run)."""
        if self._stopping:
            raise RpcError(Status.UNAVAILABLE, f"room {self.name!r} is closing")
        if member.id in self.members:
            return
        if self.full:
            raise RpcError(Status.RESOURCE_EXHAUSTED, f"room {self.name!r} is full")
        self._cancel_dispose()
        self.members[member.id] = member
        rate = self.max_input_rate if self.max_input_rate is not None else 8.0 * self.tick_hz
        bucket = TokenBucket(rate, self.max_inputs, int(self._now() * 1000))
        self._inputs[member.id] = InputQueue(self.max_inputs, self.max_input_bytes, self.stats, bucket)
        added = False
        try:
            if self.sender is not None:
                await maybe_await(self.sender.on_member_added(self, member))
                added = True
            await self.call_hook(self.on_join, member, refusable=True)
        except BaseException:
            self.members.pop(member.id, None)
            self._inputs.pop(member.id, None)
            if added and self.sender is not None:
                with contextlib.suppress(Exception):
                    await maybe_await(self.sender.on_member_removed(self, member))
            if not self.members:
                self.schedule_dispose()
            raise

    async def remove_member(self, member: Any) -> None:
        """Remove ``member`` (it left, or is gone for good); an empty room stops after
        ``dispose_after``."""
        if self.members.pop(member.id, None) is None:
            return
        self._inputs.pop(member.id, None)
        await self.call_hook(self.on_leave, member)
        if self.sender is not None:
            try:
                await maybe_await(self.sender.on_member_removed(self, member))
            except Exception:
                _hook_log.exception(
                    "on_member_removed", "room %s: the sender's on_member_removed failed", self.name
                )
        if not self.members:
            self.schedule_dispose()

    def push_input(self, member_id: str, seq: int, payload: Any) -> bool:
        """Validate ``payload`` with ``input_model`` and queue it for ``member_id``'s next tick;
        False when it was dropped (not a member, invalid, stale or too large: counted)."""
        q = self._inputs.get(member_id)
        if q is None or not q.admit(seq, int(self._now() * 1000)):
            return False
        try:
            value = self._input_adapter.validate_python(payload)
        except ValidationError:
            self.stats["inputs_invalid"] += 1
            return False
        return q.push(seq, value, _size(payload))

    # ---------------------------------------------------------------- the tick
    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    async def start(self) -> None:
        """Run :meth:`on_create` and start the tick task (the first tick is due now)."""
        if self.schedule is not None:
            return
        self.schedule = TickSchedule(self.tick_hz, start=self._now(), max_catch_up=self.max_catch_up)
        await maybe_await(self.on_create())
        self._task = asyncio.ensure_future(self._run())
        self._task.add_done_callback(self._tick_ended)

    def _tick_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:  # a bug: step() contains the app's errors
            log.error("room %s: the tick task died: stopping the room", self.name, exc_info=task.exception())
            if not self._stopping:  # a room that no longer ticks must not take members (nor its name)
                self._stop_task = asyncio.ensure_future(self.stop())

    async def _run(self) -> None:
        sched = self.schedule
        assert sched is not None
        while not self._stopping:
            await self.step(self._now())
            await asyncio.sleep(max(0.0, sched.next_time - self._now()))

    async def step(self, now: float) -> int:
        """Run the ticks due at ``now`` (at most ``max_catch_up``; the rest counted in
        ``ticks_missed``), then send the state if a send slot passed; returns the ticks run.
        The tick task calls it; a test drives it with its own clock."""
        sched = self.schedule
        if sched is None:
            raise UsageError("start() the room first")
        due = sched.due(now)
        self.stats["ticks_missed"] += due.missed
        if not due.run:
            return 0
        await self._sweep()
        dt = sched.period
        for tick in range(due.first, due.first + due.run):
            self.tick = tick
            inputs = {mid: q.take(self.inputs_per_tick) for mid, q in self._inputs.items()}
            self.stats["ticks"] += 1
            try:
                await maybe_await(self.update(dt, {k: v for k, v in inputs.items() if v}))
            except Exception:
                self.stats["update_errors"] += 1
                _hook_log.exception("update", "room %s: update failed at tick %d", self.name, tick)
        if sends_between(self._last_send_tick, self.tick, self.tick_hz, self._send_hz):
            self._last_send_tick = self.tick
            await self.send_now()
        return due.run

    async def send_now(self) -> None:
        """Hand the current state to the sender (the tick does it at ``send_hz``)."""
        if self.sender is None:
            return
        self.stats["sends"] += 1
        try:
            snap = Snapshot(
                room=self.name,
                tick=self.tick,
                state=self.get_state(),  # the app's: its error is a failed send, not the tick's end
                members=tuple(m for m in self.members.values() if not m.detached and not m.closed),
                acks={mid: q.acked for mid, q in self._inputs.items()},
            )
            await maybe_await(self.sender.send(snap))
        except Exception:
            self.stats["send_errors"] += 1
            _hook_log.exception("send", "room %s: send failed at tick %d", self.name, self.tick)

    async def _sweep(self) -> None:
        """Remove members gone for good whose leave no hook reported (closed, not kept for a
        resume): a safety net should the app replace the server's hooks after the registry."""
        for m in [m for m in self.members.values() if m.closed and not m.detached and not m.may_resume]:
            await self.remove_member(m)

    # ---------------------------------------------------------------- stopping
    def schedule_dispose(self) -> None:
        """Stop the room after ``dispose_after`` unless a member joins first."""
        if self._stopping or self.schedule is None:
            return
        self._cancel_dispose()
        loop = asyncio.get_running_loop()
        self._dispose_timer = loop.call_later(self.dispose_after, self._dispose_if_empty)

    def _cancel_dispose(self) -> None:
        if self._dispose_timer is not None:
            self._dispose_timer.cancel()
            self._dispose_timer = None

    def _dispose_if_empty(self) -> None:
        self._dispose_timer = None
        if not self.members and not self._stopping:
            self._stop_task = asyncio.ensure_future(self.stop())

    async def stop(self) -> None:
        """Stop the room: the tick task ends, every member is removed (``on_leave``), then
        ``on_dispose``. Idempotent."""
        if self._stopping:
            await self.stopped.wait()
            return
        self._stopping = True
        self._cancel_dispose()
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):  # (a death is logged: _tick_ended)
                await task
        for m in list(self.members.values()):
            await self.remove_member(m)
        self._cancel_dispose()
        await self.call_hook(self.on_dispose)
        if self.on_stopped is not None:
            self.on_stopped(self)
        self.stopped.set()

    async def call_hook(
        self, fn: Callable[..., Awaitable[None] | None], *args: Any, refusable: bool = False
    ) -> None:
        """Run one of the room's hooks: what it raises is logged (the room goes on), except an
        :class:`RpcError` from a ``refusable`` one (``on_join``), which refuses."""
        try:
            await maybe_await(fn(*args))
        except RpcError:
            if refusable:
                raise
            name = getattr(fn, "__name__", "a hook")
            _hook_log.exception(f"refused:{name}", "room %s: %s refused, which it cannot", self.name, name)
        except Exception:
            name = getattr(fn, "__name__", "a hook")
            _hook_log.exception(f"hook:{name}", "room %s: %s failed", self.name, name)


_SETTINGS = frozenset(
    {
        "tick_hz",
        "send_hz",
        "max_catch_up",
        "max_clients",
        "dispose_after",
        "input_model",
        "max_inputs",
        "max_input_bytes",
        "inputs_per_tick",
        "max_input_rate",
    }
)

R = TypeVar("R", bound=TickRoom)

RoomFactory = Callable[[str], R]
"""Makes the room of a name (a :class:`TickRoom` subclass is one); it is started by the registry."""


class RoomRegistry(Generic[R]):
    """The rooms of one server process, created on demand.

    ``rooms = RoomRegistry(GameRoom)`` then ``kcprpc.Server([...], lifespan=rooms.lifespan)``: the
    lifespan attaches the registry to the server (:meth:`attach`) and stops every room at
    shutdown. :meth:`attach` chains the server's ``on_detach``, ``on_resume`` and
    ``on_disconnect`` hooks (the app's run first): set yours on the server before it.
    ``max_rooms`` bounds the rooms alive at once (RESOURCE_EXHAUSTED past it); since a client
    creates a room by joining it, one member may be in at most ``max_rooms_per_member`` rooms, and
    the clients of one address (IPv4, or IPv6 /64, as the server counts connections; loopback
    exempt) may have created at most ``max_rooms_per_address`` of the rooms alive, so that one
    client cannot take every room of the process (each ticks) from the other players; and they
    may create ``create_rate`` rooms a second, in bursts of ``create_burst`` (a room made and
    disposed costs about 10 echo calls' CPU: joining and leaving new names in a loop took a core).
    ``sender`` makes each room's sender (default: a :class:`PushStateSender` of the server).
    """

    def __init__(
        self,
        factory: RoomFactory[R],
        *,
        max_rooms: int = 1000,
        max_rooms_per_member: int = 8,
        max_rooms_per_address: int = 64,
        sender: Callable[[Server], StateSender] | None = None,
        max_name_length: int = 64,
        create_rate: float = 10.0,
        create_burst: int = 64,
    ) -> None:
        if not callable(factory):  # a room class or a function name -> room; 5 failed at the first join
            raise UsageError(
                f"RoomRegistry: factory must make a room from its name (a TickRoom class), not {shown(factory)}"
            )
        for what, count in (
            ("max_rooms", max_rooms),
            ("max_rooms_per_member", max_rooms_per_member),
            ("max_rooms_per_address", max_rooms_per_address),
            ("max_name_length", max_name_length),
            ("create_burst", create_burst),
        ):
            check_count(count, f"RoomRegistry: {what}", UsageError, 1)
        if not is_number(create_rate) or create_rate <= 0:
            raise UsageError(
                f"RoomRegistry: create_rate must be a number > 0 (rooms a second), not {shown(create_rate)}"
            )
        if sender is not None and not callable(sender):
            raise UsageError(
                f"RoomRegistry: sender must be a function server -> StateSender, or None, not {shown(sender)}"
            )
        self.create_rate = create_rate
        self.create_burst = create_burst
        self._creations: PrefixLimiter | None = None  # rooms created a second per address (attach)
        self.factory = factory
        self.max_rooms = max_rooms
        self.max_rooms_per_member = max_rooms_per_member
        self.max_rooms_per_address = max_rooms_per_address
        self.max_name_length = max_name_length
        self._make_sender = sender
        self.server: Server | None = None
        self.rooms: dict[str, R] = {}
        self._creating: dict[str, asyncio.Future[R]] = {}
        self._created_by: SourceTally | None = None  # rooms alive per creating address (attach)
        self.stats: dict[str, int] = {
            "rooms_created": 0,
            "rooms_disposed": 0,
            "joins_refused": 0,
            "rooms_refused_member": 0,
            "rooms_refused_address": 0,
            "rooms_refused_rate": 0,
        }

    # ---------------------------------------------------------------- the server
    def attach(self, server: Server) -> None:
        """Follow ``server``'s session hooks, and give rooms its push hub (the default sender)."""
        if self.server is server:
            return
        if self.server is not None:
            raise UsageError("this RoomRegistry is already attached to another server")
        self.server = server
        self._created_by = SourceTally(server.source_keys, self.max_rooms_per_address)
        self._creations = PrefixLimiter(
            self.create_rate, self.create_burst, server.source_keys, max_prefixes=4096
        )
        app_detach, app_resume, app_gone = server.on_detach, server.on_resume, server.on_disconnect

        async def on_detach(session: Any) -> None:
            if app_detach is not None:
                await maybe_await(app_detach(session))
            if session.detached:  # kept for a resume: still a member
                for room in self.rooms_of(session):
                    await room.call_hook(room.on_detach, session)

        async def on_resume(session: Any) -> None:
            if app_resume is not None:
                await maybe_await(app_resume(session))  # may refuse (RpcError)
            for room in self.rooms_of(session):
                await room.call_hook(room.on_resume, session)

        async def on_disconnect(session: Any) -> None:
            try:
                if app_gone is not None:
                    await maybe_await(app_gone(session))
            finally:
                await self.leave_all(session)

        server.on_detach, server.on_resume, server.on_disconnect = on_detach, on_resume, on_disconnect

    @contextlib.asynccontextmanager
    async def lifespan(self, server: Server) -> AsyncIterator[None]:
        """A server lifespan (``Server(lifespan=rooms.lifespan)``): attach, and at shutdown
        stop every room."""
        self.attach(server)
        try:
            yield
        finally:
            await self.close()

    async def close(self) -> None:
        """Stop every room (the server's shutdown does it through :meth:`lifespan`)."""
        await asyncio.gather(*(r.stop() for r in list(self.rooms.values())), return_exceptions=True)

    # ---------------------------------------------------------------- rooms
    def get(self, name: str) -> R | None:
        """The running room ``name``, or None."""
        room = self.rooms.get(name)
        return room if room is not None and room.running else None

    def rooms_of(self, member: Any) -> list[R]:
        """The rooms ``member`` is in."""
        return [r for r in self.rooms.values() if member.id in r.members]

    async def get_or_create(self, name: str, creator: Any = None) -> R:
        """The running room ``name``, created and started if there is none (INVALID_ARGUMENT for
        a bad name, RESOURCE_EXHAUSTED past ``max_rooms``, or past ``max_rooms_per_address`` for
        the address of ``creator``, a session, when it would create it)."""
        if not name or len(name) > self.max_name_length:
            raise RpcError(
                Status.INVALID_ARGUMENT, f"room name must have 1 to {self.max_name_length} characters"
            )
        room = self.get(name)
        if room is not None:
            return room
        pending = self._creating.get(name)
        if pending is not None:  # another join is creating it: the same room
            return await asyncio.shield(pending)
        old = self.rooms.get(name)
        if old is not None:  # stopping: a new one takes its name once it stopped
            await old.stopped.wait()
        if len(self.rooms) + len(self._creating) >= self.max_rooms:
            raise RpcError(Status.RESOURCE_EXHAUSTED, "too many rooms")
        tally, address = self._created_by, getattr(creator, "remote_address", None)
        if tally is not None and tally.over(address):
            self.stats["rooms_refused_address"] += 1
            raise RpcError(Status.RESOURCE_EXHAUSTED, "too many rooms created from one address")
        creations = self._creations
        if creations is not None and not creations.allow(address, int(time.monotonic() * 1000)):
            self.stats["rooms_refused_rate"] += 1
            raise RpcError(
                Status.RESOURCE_EXHAUSTED,
                f"rooms created from one address faster than create_rate ({self.create_rate:g} a second)",
            )
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._creating[name] = fut
        if tally is not None:  # charged while it is made, so that concurrent joins see it
            tally.add(name, address)
        try:
            room = self.factory(name)
            if room.sender is None:
                if self._make_sender is not None:
                    room.sender = self._make_sender(self.server) if self.server is not None else None
                elif self.server is not None:
                    room.sender = PushStateSender(self.server)
            room.on_stopped = self._stopped
            await room.start()
            self.rooms[name] = room
            self.stats["rooms_created"] += 1
            fut.set_result(room)
            return room
        except BaseException as e:
            self._uncharge(name)
            fut.set_exception(e)
            fut.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        finally:
            del self._creating[name]

    def _uncharge(self, name: str) -> None:
        if self._created_by is not None:
            self._created_by.remove(name)

    def _stopped(self, room: TickRoom) -> None:
        if self.rooms.get(room.name) is room:
            del self.rooms[room.name]
            self._uncharge(room.name)
            self.stats["rooms_disposed"] += 1

    async def join(self, name: str, member: Any) -> R:
        """Put ``member`` in room ``name`` (created if needed): RESOURCE_EXHAUSTED when full, or when
        ``member`` is in ``max_rooms_per_member`` rooms already."""
        current = self.get(name)
        if (current is None or member.id not in current.members) and (
            len(self.rooms_of(member)) >= self.max_rooms_per_member
        ):
            self.stats["joins_refused"] += 1
            self.stats["rooms_refused_member"] += 1
            raise RpcError(Status.RESOURCE_EXHAUSTED, f"in {self.max_rooms_per_member} rooms already")
        room = await self.get_or_create(name, member)
        try:
            await room.add_member(member)
        except RpcError:
            self.stats["joins_refused"] += 1
            if not room.members:
                room.schedule_dispose()
            raise
        return room

    async def leave(self, name: str, member: Any) -> None:
        """Take ``member`` out of room ``name`` (nothing when it is not in)."""
        room = self.rooms.get(name)
        if room is not None:
            await room.remove_member(member)

    async def leave_all(self, member: Any) -> None:
        """Take ``member`` out of every room (it is gone for good)."""
        for room in self.rooms_of(member):
            await room.remove_member(member)
