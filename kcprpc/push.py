"""Server push: events to one session, to rooms and to topics, through a :class:`Broker`.

The broker contract is :mod:`kcprpc.broker`. The server subscribes *itself* to a broker key when its first local session joins, and fans the
message out to its local sessions, encoding the frame once for all of them.

:func:`route` is the one place where a frame's :class:`~kcprpc.service.Delivery` picks its path.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from kcp.ratelimit import PrefixLimiter, SourceKeys
from kcprpc.broker import Broker, BrokerMessage, Position, room_key, topic_key
from kcprpc.codec import HEADER_SIZE, ROOMS, encode_frame
from kcprpc.errors import RpcError
from kcprpc.frame_writer import FrameWriter
from kcprpc.msgpack_size import decoded_size
from kcprpc.presence import Presence, PresenceConfig
from kcprpc.reply_hold import hold_reply
from kcprpc.send_lanes import LaneConfig, SendLanes, encode_keyed_event
from kcprpc.service import Delivery, event_info, event_send
from kcprpc.status import Status
from kcprpc.transport import Connection

RECOVERY_COUNTERS = (
    "recoveries",  # rooms and topics recovered (after a reconnect, a since= subscribe)
    "recoveries_failed",  # ... that were not whole (history too short, another epoch, given up)
    "recoveries_overflowed",  # ... given up: more than recovery_buffer live messages, or recovery_buffer_bytes, held back
    "recoveries_shed",  # ... given up: among the largest holds while all together were over recovery_buffer_total
    "recovery_held",  # bytes held back for all sessions together, each message once (a gauge: PushHub.hold_total)
    "recovered_replayed",  # messages replayed by them
    "history_fetches",  # kcprpc.Push/History calls answered
    "history_fetched",  # messages they returned
    "history_truncated",  # answers cut by max_history_fetch or max_message_size
    "history_refused",  # History calls refused: the address's history_rate bucket was empty
    "replays_refused",  # recoveries not replayed (reported as missed): the address's replay_rate bucket was empty
)
"""The server counters of recovery and history (``server.stats``)."""


class Member(Protocol):
    """A session as the hub sees it (:class:`kcprpc.Member`)."""

    id: str
    presence: dict[str, Any]  # the info presence lists (kcprpc.presence)
    rooms: set[str]
    topics: set[str]
    memberships: int  # bytes its rooms and topics cost, as the hub counts them (MEMBERSHIP_COST + key each)
    closed: bool
    detached: bool  # kept for a resume (closed too): what it is sent is held
    control: FrameWriter | None

    @property
    def remote_address(self) -> Any: ...

    @property
    def streaming_calls(self) -> int: ...

    def send_frame(self, frame: bytes, unreliable: bool = False) -> None: ...

    def send_datagram(self, frame: bytes) -> bool: ...

    def send(self, event: Any, *, delivery: Delivery | str | None = None) -> None: ...

    def enqueue(
        self, frame: bytes, lane: str, key: str | None, unreliable: bool, order: str | None = None
    ) -> None: ...

    @property
    def lanes(self) -> SendLanes | None: ...


class HubLimits(Protocol):
    """The limits the hub applies (:class:`kcprpc.ServerConfig`)."""

    @property
    def max_name_length(self) -> int: ...

    @property
    def max_rooms(self) -> int: ...

    @property
    def max_subscriptions(self) -> int: ...

    @property
    def max_message_size(self) -> int: ...

    @property
    def presence(self) -> PresenceConfig: ...

    @property
    def recovery_buffer(self) -> int: ...

    @property
    def recovery_buffer_bytes(self) -> int: ...

    @property
    def recovery_buffer_total(self) -> int: ...

    @property
    def replay_rate(self) -> int: ...

    @property
    def replay_burst(self) -> int: ...

    @property
    def history_rate(self) -> int: ...

    @property
    def history_burst(self) -> int: ...

    @property
    def restore_rate(self) -> int: ...

    @property
    def restore_burst(self) -> int: ...

    @property
    def lanes(self) -> LaneConfig: ...

    @property
    def max_membership_bytes(self) -> int: ...


class HubHost(Protocol):
    """What the hub uses of its server: its counters and its limits."""

    stats: dict[str, int]

    @property
    def config(self) -> HubLimits: ...

    def memberships_over(self) -> None:
        """The memberships of all sessions together passed ``max_membership_bytes``: shed soon."""


MEMBERSHIP_COST = 288
"""What one session's membership of a room or topic costs the server besides the key's name (its
entries in the key's member set and the session's own set, and the name's copy the session keeps):
1,000 topics shared by 20 sessions measured 334 bytes of RSS per membership with 20-character
names, 542 with 256."""

KEY_COST = 768
"""What a room or topic with local members costs besides its name (the member set, the fan-out
callback, the broker's subscription): 1,000 topics of one session each measured 1,044 bytes per
membership with 20-character names, 1,492 with 256."""


MEMBERSHIP_ALLOWANCE = 4096
"""Bytes of memberships each session has free of :attr:`PushHub.held` (about 13 rooms or topics
with short names): a server whose sessions are each in a few rooms and topics never counts them,
however many sessions it serves (the listener's ``max_sessions`` bounds them)."""


def membership_bytes(session: Member) -> int:
    """What ``session``'s rooms and topics add to :attr:`PushHub.held`: their cost past its
    :data:`MEMBERSHIP_ALLOWANCE` (not the cost of the keys it was the first local member of)."""
    return max(0, session.memberships - MEMBERSHIP_ALLOWANCE)


class Recovery(NamedTuple):
    """The server's report of one key's recovery (``WELCOME.restored.recovery``, the reply to a
    ``since=`` subscribe): see :class:`~kcprpc.push_events.Recovered`."""

    recovered: bool
    replayed: int
    missed: int | None
    position: Position

    def wire(self) -> list[Any]:
        """``[recovered, replayed, missed|nil, [epoch, offset]]``."""
        return [self.recovered, self.replayed, self.missed, list(self.position)]


HOLD_OVERHEAD = 400
"""Bytes a held-back message costs besides its EVENT frame and its payload's decoded estimate
(:func:`held_size`): the message object and its place in the hold (as
:data:`kcprpc.broker.MESSAGE_OVERHEAD`)."""


HOLD_REF = 16
"""Bytes a held-back message costs each further session holding it (:attr:`PushHub.hold_total`):
its place in that session's hold (a list slot and the list's over-allocation)."""


def held_size(msg: BrokerMessage) -> int:
    """What holding ``msg`` back keeps alive: its EVENT frame (encoded once, shared), its decoded
    payload (estimated from the frame) and :data:`HOLD_OVERHEAD`. Counted per session holding it
    in :attr:`PushHub.hold_bytes` (an upper bound, since sessions holding the same message share
    it), once in :attr:`PushHub.hold_total`."""
    frame = msg.frame()
    return len(frame) + max(0, decoded_size(frame[HEADER_SIZE:], 1 << 30)) + HOLD_OVERHEAD


class _Hold:
    """Live messages of one key held back for one session while its history is replayed."""

    __slots__ = ("buf", "bytes", "dropped")

    def __init__(self) -> None:
        self.buf: list[BrokerMessage] = []
        self.bytes = 0  # held_size of what buf holds, counted in PushHub.hold_bytes[session]
        self.dropped = 0  # > 0: the hold was given up; the last offset it gave up


class Peer(Protocol):
    """What :func:`route` needs from either end of a connection."""

    def send_frame(self, frame: bytes, unreliable: bool = False) -> None:
        """Queue a frame on the reliable control stream. ``unreliable``: the frame is an unreliable
        message that did not fit a datagram; the peer may drop it (and count it) rather than queue
        it behind a backlog."""
        ...

    def send_datagram(self, frame: bytes) -> bool:
        """Send a frame as one OOB datagram; False if it cannot go that way (too big, no datagrams)."""
        ...


def send_datagram(conn: Connection, frame: bytes, max_size: int) -> bool:
    """Send ``frame`` as one OOB datagram of ``conn`` if it fits (``Peer.send_datagram`` of either end);
    False when it does not or the connection refuses, so that the caller sends it reliably."""
    if len(frame) > max_size:
        return False
    try:
        conn.send_datagram(frame)
    except Exception:
        return False
    return True


def route(peer: Peer, frame: bytes, delivery: Delivery) -> None:
    """Send ``frame`` the way ``delivery`` asks. Unreliable frames too big for a datagram go on the
    stream, unless the peer is backed up (then they are dropped and counted: they never queue)."""
    if delivery is Delivery.UNRELIABLE:
        if not peer.send_datagram(frame):
            peer.send_frame(frame, True)
        return
    peer.send_frame(frame)


def send_event(s: Member, frame: bytes, unreliable: bool, key: str | None) -> None:
    """Send an EVENT ``frame`` to one session: unreliable as :func:`route` does, reliable on its
    control stream, unless reliable frames of its room or topic ``key`` (None: a frame outside
    the key's numbering) still wait in one of its lanes: then behind them there, in order."""
    if unreliable:
        route(s, frame, Delivery.UNRELIABLE)
    elif s.control is not None:
        lanes = s.lanes
        lane = lanes.holding(key) if key is not None and lanes is not None and lanes.queued_bytes else None
        if lane is None:
            s.control.send(frame)
        else:
            s.enqueue(frame, lane, None, False, key)


class PushHub:
    """Local membership of rooms and topics, wired to the broker (``server.push``)."""

    def __init__(self, server: HubHost, broker: Broker, keys: SourceKeys | None = None) -> None:
        self.server = server
        self.broker = broker
        self._local: dict[str, set[Member]] = {}
        self._callbacks: dict[str, Callable[[BrokerMessage], None]] = {}
        self.presence = Presence(server, broker, keys=keys)
        """Who is in a room or topic that keeps presence, on every server (``kcprpc.presence``)."""
        # bytes replayed (ServerConfig.replay_rate) and answered by kcprpc.Push/History
        # (history_rate) a second per address; None keys: no budgets
        self._replays: PrefixLimiter | None = None
        self.history_budget: PrefixLimiter | None = None
        self.restore_budget: PrefixLimiter | None = None  # rooms and topics restored (HELLO.restore)
        if keys is not None:
            cfg = server.config
            self._replays = PrefixLimiter(cfg.replay_rate, cfg.replay_burst, keys, max_prefixes=4096)
            self.history_budget = PrefixLimiter(cfg.history_rate, cfg.history_burst, keys, max_prefixes=4096)
            self.restore_budget = PrefixLimiter(cfg.restore_rate, cfg.restore_burst, keys, max_prefixes=4096)
        # recovery: key -> the sessions whose live messages are held back while they replay
        self._holds: dict[str, dict[Member, _Hold]] = {}
        self.hold_bytes: dict[Member, int] = {}
        """Per session, the bytes of live messages held back for it, all its keys together
        (:func:`held_size` each; bounded by ``recovery_buffer_bytes``). Sessions holding none
        are not in it."""
        self.hold_total = 0
        """Bytes held back for all sessions together (bounded by ``recovery_buffer_total``): each
        message once (:func:`held_size`), however many sessions hold it (they share the one
        object the broker delivered), and :data:`HOLD_REF` for each further session holding it."""
        self._refs: dict[int, list[int]] = {}  # id(held message) -> [sessions holding it, held_size]
        self.held = 0
        """Bytes the rooms and topics of all local sessions cost: every key with local members
        (:data:`KEY_COST` plus its length), and each session's memberships past its
        :data:`MEMBERSHIP_ALLOWANCE` (:data:`MEMBERSHIP_COST` plus the key's length each). Bounded
        by ``max_membership_bytes``."""

    def _fanout(self, key: str) -> Callable[[BrokerMessage], None]:
        members = self._local[key]
        stats = self.server.stats
        holds = self._holds

        def deliver(msg: BrokerMessage) -> None:
            decl = event_send(msg.event)
            if decl is not None:
                self._deliver_lanes(key, members, msg, decl.key_field, decl.lane)
                return
            frame = msg.frame()
            unreliable = msg.delivery is Delivery.UNRELIABLE
            held = holds.get(key) if holds else None
            n = 0
            for s in tuple(members):
                if s.closed:
                    continue
                # unnumbered messages (presence) are outside the replayed stream: never held
                if held is not None and msg.seq and s in held and self._held(held[s], msg, s):
                    continue
                n += 1
                send_event(s, frame, unreliable, key)
            stats["events_sent"] += n

        return deliver

    def _deliver_lanes(
        self, key: str, members: set[Member], msg: BrokerMessage, key_field: str | None, lane: str | None
    ) -> None:
        """Fan out a message whose event type declares a latest-wins key or a lane: it waits in
        each session's lane (its latest-wins key, scoped by the room or topic, replaces an older
        one still waiting). A payload without the key field goes unkeyed."""
        lanes = self.server.config.lanes
        lane_name = lane if lane is not None else lanes.default_lane
        p = msg.payload
        lw = None
        if key_field is not None and isinstance(p, dict) and key_field in p:
            lw = str(p[key_field])
        if lw is None:
            frame, qkey = msg.frame(), None
        else:
            frame = encode_keyed_event(msg.event, p, msg.key, msg.seq, msg.epoch, lw)
            qkey = f"{key}\0{lw}"
        unreliable = msg.delivery is Delivery.UNRELIABLE
        holds = self._holds.get(key) if self._holds else None
        n = 0
        for s in tuple(members):
            if s.closed:
                continue
            if holds is not None and msg.seq and s in holds and self._held(holds[s], msg, s):
                continue
            n += 1
            s.enqueue(frame, lane_name, qkey, unreliable, key)
        self.server.stats["events_sent"] += n

    def _add(self, session: Member, key: str) -> None:
        members = self._local.get(key)
        if members is None:
            members = self._local[key] = set()
            cb = self._callbacks[key] = self._fanout(key)
            self.broker.subscribe(key, cb)
            self.held += KEY_COST + len(key)
        if session not in members:
            members.add(session)
            old = session.memberships
            new = session.memberships = old + MEMBERSHIP_COST + len(key)
            if new > MEMBERSHIP_ALLOWANCE:
                self.held += new - max(old, MEMBERSHIP_ALLOWANCE)
            if self.held > self.server.config.max_membership_bytes:
                self.server.memberships_over()
        self.presence.joined(session, key)

    def _remove(self, session: Member, key: str) -> None:
        members = self._local.get(key)
        if not members:
            return
        if session in members:
            members.discard(session)
            old = session.memberships
            new = session.memberships = old - MEMBERSHIP_COST - len(key)
            if old > MEMBERSHIP_ALLOWANCE:
                self.held -= old - max(new, MEMBERSHIP_ALLOWANCE)
        self.presence.left(session, key)
        if not members:
            del self._local[key]
            self.broker.unsubscribe(key, self._callbacks.pop(key))
            self.held -= KEY_COST + len(key)

    def _check_name(self, kind: str, name: str) -> None:
        limit = self.server.config.max_name_length
        if type(name) is not str or not name or len(name) > limit:
            raise RpcError(Status.INVALID_ARGUMENT, f"{kind} name must have 1 to {limit} characters")

    def join(self, session: Member, room: str) -> None:
        """Add a session to a room and tell its client. RESOURCE_EXHAUSTED past the server's
        ``max_rooms`` per session, INVALID_ARGUMENT for an empty name or one longer than
        ``max_name_length``. A session detached for a resume joins too (in ``on_resume``, say):
        its client is told when it resumes, and gets the room's recovery report (what it missed
        there unknown)."""
        if room in session.rooms or (session.closed and not session.detached):
            return
        self._check_name("room", room)
        if len(session.rooms) >= self.server.config.max_rooms:
            raise RpcError(Status.RESOURCE_EXHAUSTED, "too many rooms")
        self.presence.check(session, room_key(room))
        session.rooms.add(room)
        key = room_key(room)
        self._add(session, key)
        live = self.broker.live(key)
        if live is not None:  # a join in a handler answers once other servers' pushes reach it
            hold_reply(live)
        session.send_frame(encode_frame(ROOMS, 0, [True, room]))

    def leave(self, session: Member, room: str) -> None:
        """Remove a session from a room."""
        if room not in session.rooms:
            return
        session.rooms.discard(room)
        self._remove(session, room_key(room))
        if not session.closed or session.detached:  # a detached session's client is told on its resume
            session.send_frame(encode_frame(ROOMS, 0, [False, room]))

    def subscribe(self, session: Member, topic: str) -> None:
        """Subscribe a session to a topic (RESOURCE_EXHAUSTED past ``max_subscriptions``,
        INVALID_ARGUMENT for an empty name or one longer than ``max_name_length``)."""
        if topic in session.topics:
            return
        self._check_name("topic", topic)
        if len(session.topics) + session.streaming_calls >= self.server.config.max_subscriptions:
            raise RpcError(Status.RESOURCE_EXHAUSTED, "too many subscriptions")
        self.presence.check(session, topic_key(topic))
        session.topics.add(topic)
        self._add(session, topic_key(topic))

    def unsubscribe(self, session: Member, topic: str) -> None:
        """Unsubscribe a session from a topic."""
        if topic in session.topics:
            session.topics.discard(topic)
            self._remove(session, topic_key(topic))

    # ------------------------------------------------------------------ recovery
    def hold(self, session: Member, key: str) -> None:
        """Hold back live messages of ``key`` for ``session`` (until :meth:`recover` or
        :meth:`release`): call it before the session becomes a member when the join or the
        subscription is awaited, so that no live message overtakes the replay."""
        held = self._holds.setdefault(key, {})
        if session not in held:
            held[session] = _Hold()

    def release(self, session: Member, key: str) -> None:
        """Stop holding ``key`` back for ``session``; what was held is dropped (it was not
        recovered, e.g. the session is not in the key after all)."""
        held = self._holds.get(key)
        if held is None:
            return
        h = held.pop(session, None)
        if h is None:
            return
        if not held:
            del self._holds[key]
        if h.bytes:
            self._unheld(session, h)

    def _unheld(self, session: Member, h: _Hold) -> None:
        """Stop counting what ``h`` holds in its session's :attr:`hold_bytes` and in
        :attr:`hold_total` (a message no other hold keeps leaves it whole)."""
        left = self.hold_bytes.get(session, 0) - h.bytes
        h.bytes = 0
        if left > 0:
            self.hold_bytes[session] = left
        else:
            self.hold_bytes.pop(session, None)
        refs = self._refs
        freed = 0
        for m in h.buf:
            ref = refs[id(m)]
            ref[0] -= 1
            if ref[0]:
                freed += HOLD_REF
            else:
                freed += ref[1]
                del refs[id(m)]
        self.hold_total -= freed
        self.server.stats["recovery_held"] = self.hold_total

    def _give_up(self, session: Member, h: _Hold) -> None:
        """Give up ``h`` (its key's recovery for ``session``): what it held is let go at once, the
        key's live messages go to the session from the next one, and the recovery reports what
        was lost (``missed``) instead of replaying."""
        h.dropped = h.buf[-1].seq
        self._unheld(session, h)
        h.buf = []

    def _held(self, h: _Hold, msg: BrokerMessage, session: Member) -> bool:
        """Hold ``msg`` back for ``session``; False once the hold was given up (the message goes
        out live)."""
        if h.dropped:
            return False
        h.buf.append(msg)
        ref = self._refs.get(id(msg))
        if ref is None:  # the first session holding it: counted whole in the process's total
            size = held_size(msg)
            self._refs[id(msg)] = [1, size]
            self.hold_total += size
        else:  # one more: shared, the place in its hold only
            ref[0] += 1
            size = ref[1]
            self.hold_total += HOLD_REF
        h.bytes += size
        total = self.hold_bytes[session] = self.hold_bytes.get(session, 0) + size
        cfg = self.server.config
        stats = self.server.stats
        if len(h.buf) > cfg.recovery_buffer or total > cfg.recovery_buffer_bytes:
            # bounded (in messages per key, in bytes per session): give this key's recovery up
            self._give_up(session, h)
            stats["recoveries_overflowed"] += 1
        elif self.hold_total > cfg.recovery_buffer_total:
            self._shed_holds(cfg.recovery_buffer_total)
        else:
            stats["recovery_held"] = self.hold_total
        return True

    def _shed_holds(self, cap: int) -> None:
        """All sessions together hold more than ``recovery_buffer_total`` back: give up the largest
        holds (session and key, by what each counts for its session), largest first, until the
        total is under 90 % of it. Not the hold that crossed it: a client that filled the bound
        with slow recoveries would have every other one given up (a session holding little is
        never given up while larger holds remain). A pass reads every hold; the next one comes
        only once the total grew by a tenth of the bound again."""
        target = cap - cap // 10
        holds = [(h.bytes, s, h) for held in self._holds.values() for s, h in held.items() if h.bytes]
        holds.sort(key=lambda t: t[0], reverse=True)
        stats = self.server.stats
        for _n, s, h in holds:
            if self.hold_total <= target:
                break
            self._give_up(s, h)
            stats["recoveries_shed"] += 1

    async def recover(self, session: Member, key: str, since: Position | None) -> Recovery:
        """Replay to ``session`` (a member of ``key``) the reliable messages of ``key`` after
        ``since``, flagged REPLAYED, then the live ones held back meanwhile; returns the report.

        Live messages are held back from the call (or an earlier :meth:`hold`) until the history
        was sent, so none overtakes the replay, even with a broker whose ``history`` is a round
        trip. Past ``ServerConfig.recovery_buffer`` held messages of the key, or past
        ``recovery_buffer_bytes`` held for the session (all its keys), or among the largest holds
        past ``recovery_buffer_total`` for all sessions, the recovery is given up (nothing
        replayed, ``missed`` counts what was lost). Same epoch: what the history still holds is
        replayed and the rest counted in ``missed``. Another epoch (or no ``since``): what the
        current epoch holds is replayed (without ``since``: nothing), ``missed`` unknown (None)."""
        self.hold(session, key)
        h = self._holds[key][session]  # an earlier hold may have been given up already
        broker = self.broker
        stats = self.server.stats
        if since is not None:
            stats["recoveries"] += 1
        same = since is not None and since.epoch == broker.epoch
        budget, address = self._replays, session.remote_address
        now = int(time.monotonic() * 1000)
        # the address replayed its share: nothing is read or sent, what this one would have
        # replayed is reported missed (read first and skipped, it cost 5-7 echo calls: an audit)
        empty = since is not None and budget is not None and budget.empty(address, now)
        start = None if since is None else since.offset if same else 0
        try:  # without since, or refused: the key's position only
            hist = await broker.history(key, start, 0 if since is None or empty else None)
        except BaseException:
            self.release(session, key)
            raise
        same = same and since is not None and hist.epoch == since.epoch
        if h.dropped or session.closed:
            self.release(session, key)
            stats["recoveries_failed"] += since is not None
            # given up: nothing replayed; what was held back and dropped is lost, later ones went live
            lost = h.dropped - since.offset if h.dropped and same and since is not None else None
            return Recovery(False, 0, lost, Position(hist.epoch, max(h.dropped, hist.last)))
        n = sent = skipped = 0
        if empty and since is not None:  # every message after since, of any delivery
            skipped = max(0, hist.last - since.offset - hist.missed) if same else 0
            refused = skipped > 0 if same else hist.last > 0
        else:
            refused = bool(hist.messages) and budget is not None and not budget.allow(address, now)
        for m in hist.messages:
            if m.delivery is Delivery.RELIABLE:
                if refused:
                    skipped += 1
                    continue
                frame = m.replay_frame()
                session.send_frame(frame)
                sent += len(frame)
                n += 1
        if refused:
            stats["replays_refused"] += 1
        elif budget is not None:
            budget.charge(address, sent, now)
        self.release(session, key)  # live messages go straight to the session from here
        cursor = hist.last
        for m in h.buf:
            if m.seq > cursor or m.epoch != hist.epoch:
                cursor = m.seq
                stats["events_sent"] += 1
                route(session, m.frame(), m.delivery)
        stats["recovered_replayed"] += n
        if same:
            missed: int | None = hist.missed + skipped
            ok = missed == 0
        else:
            missed, ok = None, False
        if not ok and since is not None:
            stats["recoveries_failed"] += 1
        return Recovery(ok, n, missed, Position(hist.epoch, max(cursor, hist.last)))

    def members(self, room: str) -> set[Member]:
        """Local sessions in a room (on every server, with their info: ``presence.members``)."""
        return set(self._local.get(room_key(room), ()))

    def drop(self, session: Member) -> None:
        """Forget a disconnected session everywhere."""
        for room in list(session.rooms):
            self._remove(session, room_key(room))
        for topic in list(session.topics):
            self._remove(session, topic_key(topic))
        session.rooms.clear()
        session.topics.clear()
        for key in [k for k, held in self._holds.items() if session in held]:
            self.release(session, key)

    def send_local(self, room: str, frame: bytes, delivery: Delivery) -> int:
        """Send the encoded EVENT ``frame`` to this server's members of ``room``, around the
        broker: it is neither numbered nor kept in the history, and other servers' members do not
        get it (a tick room's states: :class:`kcprpc.tick_room.PushStateSender`). Returns how many
        sessions it went to."""
        members = self._local.get(room_key(room))
        if not members:
            return 0
        unreliable = delivery is Delivery.UNRELIABLE
        n = 0
        for s in tuple(members):
            if not s.closed:
                n += 1
                send_event(s, frame, unreliable, None)
        self.server.stats["events_sent"] += n
        return n

    async def to_room(
        self, room: str, event: Any, *, delivery: Delivery | str | None = None
    ) -> BrokerMessage:
        """Push a typed event to every member of ``room`` (on every server sharing the broker).
        INVALID_ARGUMENT for an empty name or one longer than ``max_name_length``, as for a join:
        the broker keeps every name it was given."""
        self._check_name("room", room)
        return await self._publish(room_key(room), event, delivery)

    async def publish(
        self, topic: str, event: Any, *, delivery: Delivery | str | None = None
    ) -> BrokerMessage:
        """Publish a typed event on ``topic`` (INVALID_ARGUMENT for an empty name or one longer
        than ``max_name_length``, as for a subscribe)."""
        self._check_name("topic", topic)
        return await self._publish(topic_key(topic), event, delivery)

    async def _publish(self, key: str, event: Any, delivery: Delivery | str | None) -> BrokerMessage:
        name, default, adapter = event_info(type(event))
        d = Delivery(delivery) if delivery is not None else default
        return await self.broker.publish(key, name, adapter.dump_python(event), d)
