"""The server side of state sync: per-client baselines, snapshots then deltas (sans-I/O core).

Design (Quake-3-style snapshot deltas, see docs/state.md): every :meth:`StateSync.tick` numbers
the state (``seq``, one counter per sync) and, for each client, builds the client's *view* (its
interest filter applied) and sends

* a **snapshot** (the whole view) while the client has acknowledged nothing, or
* a **delta** against the last view the client **acknowledged** (its baseline).

Frames go over unreliable delivery and are latest-wins: a lost delta is superseded by the next
one, which is computed against the still-acknowledged baseline. The client acknowledges the
``seq`` it applied (:class:`~kcprpc.state.StateService`, an unreliable notify); an ack moves the baseline to the
view sent with that ``seq``. The views sent and not yet acknowledged are kept per client, at most
``max_baselines`` (the oldest is forgotten; an ack for it is then ignored and counted). A client
that acknowledged nothing for ``max_baselines`` ticks gets snapshots again until it does.

:meth:`StateSync.tick` is pure (no I/O, no clock): it returns the message for each client.
:meth:`StateSync.send` encodes each as an ``EVENT`` frame and routes it unreliably
(:func:`kcprpc.push.route`: one OOB datagram when it fits, else the control stream).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from typing import Any, Final, Generic, TypeVar

from pydantic import BaseModel

from kcprpc import codec
from kcprpc.codec import encode_frame
from kcprpc.errors import UsageError
from kcprpc.push import route
from kcprpc.service import Delivery
from kcprpc.state.delta import SAME, diff
from kcprpc.state.interest import Interest, Views
from kcprpc.state.schema import Schema

M = TypeVar("M", bound=BaseModel)

SNAPSHOT: Final = 0
DELTA: Final = 1

DEFAULT_NAME: Final = "kcprpc.state"
MAX_NAME: Final = 128

STATE_COUNTERS: Final = (
    "snapshots",  # snapshot messages made (a client with no acknowledged baseline)
    "deltas",  # delta messages made
    "idle",  # ticks a client was sent nothing: its acknowledged view was current
    "acks",  # acknowledgements that moved a baseline
    "acks_ignored",  # acknowledgements for an unknown client, an old or forgotten seq
    "baselines_evicted",  # unacknowledged views forgotten past max_baselines
    "resets",  # clients sent a snapshot again: no ack for max_baselines ticks
    "bytes",  # bytes of EVENT frames sent by send()
)

InterestFn = Callable[[Any], Interest]


class _Client:
    __slots__ = ("acked_seq", "acked_tree", "interest", "sent", "waiting")

    def __init__(self, interest: InterestFn | None) -> None:
        self.interest = interest
        self.acked_seq = 0
        self.waiting = 0  # the first seq sent since the last ack (0: none)
        self.acked_tree: Any = None
        self.sent: OrderedDict[int, Any] = OrderedDict()


class StateSync(Generic[M]):
    """Sync a state model to many clients: ``sync = StateSync(RoomState, name="game.state")``.

    ``name`` is the wire name of the ``EVENT`` frames (and what a client's
    :class:`~kcprpc.state.StateView` listens to); ``max_baselines`` bounds the unacknowledged
    views kept per client (default 32: 1.6 s at 20 Hz). Clients are any hashable handle; for
    :meth:`send` they are sessions (``kcprpc.push.Peer``)."""

    def __init__(self, model: type[M], name: str = DEFAULT_NAME, *, max_baselines: int = 32) -> None:
        if not name or len(name) > MAX_NAME:
            raise UsageError(f"state sync name must have 1 to {MAX_NAME} characters")
        if max_baselines < 1:
            raise UsageError("max_baselines must be at least 1")
        self.schema = Schema(model)
        self.name = name
        self.max_baselines = max_baselines
        self.seq = 0
        self.stats: dict[str, int] = dict.fromkeys(STATE_COUNTERS, 0)
        self._views = Views(self.schema)
        self._clients: dict[Hashable, _Client] = {}

    # ------------------------------------------------------------------ clients
    def add_client(self, client: Hashable, interest: InterestFn | None = None) -> None:
        """Start syncing to ``client``: it gets a snapshot at the next tick. ``interest(state) ->
        Interest`` filters what it sees (None: everything). Adding it again restarts it."""
        self._clients[client] = _Client(interest)

    def set_interest(self, client: Hashable, interest: InterestFn | None) -> None:
        """Change a client's interest filter (from the next tick)."""
        self._client(client).interest = interest

    def remove_client(self, client: Hashable) -> None:
        """Stop syncing to ``client`` and forget its baselines (no-op when unknown)."""
        self._clients.pop(client, None)

    def __contains__(self, client: object) -> bool:
        return client in self._clients

    def __len__(self) -> int:
        return len(self._clients)

    def _client(self, client: Hashable) -> _Client:
        c = self._clients.get(client)
        if c is None:
            raise UsageError(f"{client!r} is not a client of state sync {self.name!r}")
        return c

    def acked(self, client: Hashable) -> int:
        """The last seq ``client`` acknowledged (0: none)."""
        return self._client(client).acked_seq

    # ------------------------------------------------------------------ acks
    def ack(self, client: Hashable, seq: int) -> bool:
        """``client`` applied the message ``seq``: its baseline moves there. False (counted in
        ``acks_ignored``) for an unknown client, a seq not newer than its baseline, or one whose
        view was forgotten or never sent."""
        c = self._clients.get(client)
        tree = c.sent.get(seq) if c is not None and type(seq) is int else None
        if c is None or tree is None or seq <= c.acked_seq:
            self.stats["acks_ignored"] += 1
            return False
        c.acked_seq = seq
        c.acked_tree = tree
        sent = c.sent
        while sent:
            s = next(iter(sent))
            if s > seq:
                break
            del sent[s]
        c.waiting = next(iter(sent)) if sent else 0
        self.stats["acks"] += 1
        return True

    # ------------------------------------------------------------------ ticks
    def tick(self, state: M, extras: Mapping[Any, Any] | None = None) -> list[tuple[Hashable, list[Any]]]:
        """Number ``state`` (the next seq) and return each client's message (clients with nothing
        new are left out). Each interest filter is called once. Clients without a filter that
        acknowledged the same baseline share one message object (computed once).

        ``extras``: per client, a value its message carries as a 5th element (``StateView.extra``
        on the client), e.g. the sequence number of the client's last input the state includes."""
        tree = self.schema.tree(state)
        self.seq += 1
        seq = self.seq
        root = self.schema.root
        out: list[tuple[Hashable, list[Any]]] = []
        stats = self.stats
        # clients that see everything and acknowledged the same baseline get the same delta
        shared: dict[int, list[Any]] = {}
        for handle, c in self._clients.items():
            view = tree if c.interest is None else self._views.view(tree, c.interest(state))
            if c.acked_tree is not None and c.waiting and seq - c.waiting >= self.max_baselines:
                # no ack for max_baselines ticks: the client may no longer hold its baseline
                # (a long stall); start over with snapshots
                c.acked_tree = None
                stats["resets"] += 1
            if c.acked_tree is None:
                snap = shared.get(0) if c.interest is None else None
                msg = snap if snap is not None else [SNAPSHOT, seq, self.schema.id, view]
                if c.interest is None:
                    shared[0] = msg
                stats["snapshots"] += 1
            else:
                same = shared.get(id(c.acked_tree)) if c.interest is None else None
                if same is not None:
                    msg = same
                else:
                    change = diff(root, c.acked_tree, view)
                    if change is SAME:
                        if not c.sent:  # the client holds exactly this view: nothing to send
                            stats["idle"] += 1
                            continue
                        change = {}
                    msg = [DELTA, seq, c.acked_seq, change]
                    if c.interest is None:
                        shared[id(c.acked_tree)] = msg
                stats["deltas"] += 1
            c.sent[seq] = view
            if not c.waiting:
                c.waiting = seq
            if len(c.sent) > self.max_baselines:
                c.sent.popitem(last=False)
                stats["baselines_evicted"] += 1
            if extras is not None and handle in extras:
                msg = [*msg, extras[handle]]  # a copy: the body stays shared
            out.append((handle, msg))
        return out

    def frame(self, msg: list[Any]) -> bytes:
        """The ``EVENT`` frame carrying one message of :meth:`tick`."""
        return encode_frame(codec.EVENT, 0, [self.name, msg, None, None, None])

    def send(self, state: M, extras: Mapping[Any, Any] | None = None) -> int:
        """:meth:`tick`, then send each client (a session) its message unreliably; returns the
        bytes sent."""
        total = 0
        frames: dict[int, bytes] = {}  # a message shared by several clients is encoded once
        for peer, msg in self.tick(state, extras):
            f = frames.get(id(msg))
            if f is None:
                f = frames[id(msg)] = self.frame(msg)
            total += len(f)
            route(peer, f, Delivery.UNRELIABLE)  # type: ignore[arg-type]
        self.stats["bytes"] += total
        return total
