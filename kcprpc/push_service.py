"""The built-in ``kcprpc.Push`` service: what a client calls to subscribe to topics
(``client.subscribe(topic, since=...)``) and to read their history (``client.history(...)``),
and the check that a topic is one the server's services declare.

Wire names: ``kcprpc.Push/Subscribe``, ``kcprpc.Push/Unsubscribe``, ``kcprpc.Push/History``,
``kcprpc.Push/Members``.
"""

from __future__ import annotations

import functools
import re
import time
from typing import Any, TypeVar, cast

import msgpack
from pydantic import BaseModel, Field, ValidationError

from kcprpc.broker import BrokerMessage, BrokerUnavailable, Position
from kcprpc.codec import HEADER_SIZE, pack
from kcprpc.errors import RpcError, shown
from kcprpc.packed import Packed
from kcprpc.presence import Joined, Left, MemberList
from kcprpc.service import Service, event_info
from kcprpc.status import Status

T = TypeVar("T")


class SubscribeRequest(BaseModel):
    """A topic name; ``since``: the position to recover from (a restarted process resuming)."""

    topic: str
    since: Position | None = None


class SubscribeReply(BaseModel):
    """The topic's position now (``client.position(topic)``); with ``since``, how the recovery
    went (``recovered``, ``replayed``, ``missed``: as :class:`kcprpc.Recovered`)."""

    position: Position
    recovered: bool | None = None  # None: no since was given
    replayed: int = 0
    missed: int | None = None


class HistoryRequest(BaseModel):
    """A topic the caller is subscribed to, or a room it is in (one of the two). With ``since``,
    the messages after it (the first ``limit``); without, the last ``limit``. ``limit`` is capped
    by the server's ``max_history_fetch`` (None: that cap)."""

    topic: str | None = None
    room: str | None = None
    since: Position | None = None
    limit: int | None = Field(default=None, ge=0)


class HistoryMessage(BaseModel):
    """One message of a history: its event's wire name, its payload (plain msgpack values) and
    its position."""

    name: str
    payload: Any
    position: Position

    def decode(self, event_type: type[T]) -> T:
        """The payload as ``event_type`` (raises pydantic's ValidationError if it is not one)."""
        _, _, adapter = event_info(event_type)
        return adapter.validate_python(self.payload)  # type: ignore[no-any-return]


_HEAD = msgpack.Packer()
_MESSAGES, _POSITION, _MISSED, _TRUNCATED = (pack(k) for k in ("messages", "position", "missed", "truncated"))
_NAME, _PAYLOAD = pack("name"), pack("payload")


def history_entry(m: BrokerMessage) -> bytes:
    """One :class:`HistoryMessage` of a page, encoded: its payload's bytes taken from the
    message's EVENT frame (``[event, payload, key, seq, epoch]``, encoded once per message)."""
    frame = m.frame()
    up = msgpack.Unpacker()
    up.feed(memoryview(frame)[HEADER_SIZE:])
    up.read_array_header()
    up.skip()  # the event's name
    start = HEADER_SIZE + up.tell()
    up.skip()
    payload = frame[start : HEADER_SIZE + up.tell()]
    return b"".join(
        (_HEAD.pack_map_header(3), _NAME, pack(m.event), _PAYLOAD, payload, _POSITION, pack([m.epoch, m.seq]))
    )


class HistoryPage(BaseModel):
    """What ``client.history()`` returns: ``messages`` oldest first (every delivery), the key's
    ``position`` now, how many messages after ``since`` the history no longer holds (``missed``:
    its size or TTL; 0 without ``since``), and ``truncated`` when the answer stopped early (the
    limit, ``max_history_fetch`` or ``max_message_size``): ask again from the last message's
    position for more."""

    messages: list[HistoryMessage]
    position: Position
    missed: int | None = 0  # None: ``since`` is of another epoch (what was lost is unknown)
    truncated: bool = False

    def events(self, event_type: type[T]) -> list[T]:
        """The messages of ``event_type`` (by its wire name), decoded; others are skipped."""
        name, _, adapter = event_info(event_type)
        out: list[T] = []
        for m in self.messages:
            if m.name == name:
                try:
                    out.append(adapter.validate_python(m.payload))
                except ValidationError:
                    continue
        return out


_PLACEHOLDER = re.compile(r"\{[^{}]*\}")


def topic_pattern(template: str) -> re.Pattern[str]:
    """A declared topic (``"channel:{channel}"``) as a pattern: each ``{placeholder}`` stands for
    one or more characters other than braces; the rest is literal. (For reading; a topic is
    checked with :func:`topic_matches`, in linear time.)"""
    parts = _PLACEHOLDER.split(template)
    return re.compile("[^{}]+".join(re.escape(p) for p in parts))


@functools.lru_cache(maxsize=1024)
def _literals(template: str) -> tuple[str, ...]:
    return tuple(_PLACEHOLDER.split(template))


def topic_matches(topic: str, template: str) -> bool:
    """True when ``topic`` is one that ``template`` names (see :func:`topic_pattern`), in time
    linear in their lengths. The pattern's regular expression backtracked: with three placeholders
    a 700-character topic of colons took a second of the server's CPU (an audit)."""
    parts = _literals(template)
    if len(parts) == 1:
        return topic == template
    first, last = parts[0], parts[-1]
    if not topic.startswith(first) or not topic.endswith(last):
        return False
    if any("{" in p or "}" in p for p in parts):  # an odd template: its bounded regex
        return topic_pattern(template).fullmatch(topic) is not None
    # each placeholder takes one or more characters, the literals between them at their first
    # place that leaves room for the rest (for such patterns the earliest place always does)
    pos, end = len(first), len(topic) - len(last)
    spans: list[tuple[int, int]] = []
    for lit in parts[1:-1]:
        i = topic.find(lit, pos + 1, end - 1)
        if i < 0:
            return False
        spans.append((pos, i))
        pos = i + len(lit)
    if end - pos < 1:
        return False
    spans.append((pos, end))
    return not any("{" in topic[a:b] or "}" in topic[a:b] for a, b in spans)


def check_topic(topic: str, templates: list[str], max_length: int | None = None) -> None:
    """Raise :class:`RpcError` unless ``topic`` is one that ``templates`` (the topics the server's
    services declare) name: ``INVALID_ARGUMENT`` for a name longer than ``max_length`` (checked
    first) or for a template itself (``channel:{channel}``), ``NOT_FOUND`` for a topic no template
    matches. A server whose services declare no topics takes any name (nothing to check against)."""
    if not templates:
        return
    if max_length is not None and not 0 < len(topic) <= max_length:
        raise RpcError(Status.INVALID_ARGUMENT, f"topic name must have 1 to {max_length} characters")
    if topic in templates and _PLACEHOLDER.search(topic):
        example = _PLACEHOLDER.sub("demo", topic)
        raise RpcError(
            Status.INVALID_ARGUMENT,
            f"{topic!r} is the declared template, not a topic: fill in its placeholders (e.g. {example!r})",
        )
    if not any(topic_matches(topic, t) for t in templates):
        listed = ", ".join(sorted(templates)[:10]) + (", ..." if len(templates) > 10 else "")
        raise RpcError(Status.NOT_FOUND, f"no topic {shown(topic)} on this server (its topics: {listed})")


class MembersRequest(BaseModel):
    """A room or a topic (one of them)."""

    room: str | None = None
    topic: str | None = None


class PushService(Service, name="kcprpc.Push", events=[Joined, Left]):
    """Topic subscription, history and presence for clients (``client.subscribe(topic)``,
    ``client.history(topic)``, ``client.members(room=...)``)."""

    # When the server's services declare topics (``class S(kcprpc.Service, topics={...})``), only
    # those can be subscribed to (check_topic). The docstrings are the interface document's text.

    def __init__(self) -> None:
        self._templates: list[str] | None = (
            None  # one instance per server (kcprpc.builtins.default_services())
        )

    def _declared(self, server: Any) -> list[str]:
        if self._templates is None:
            from kcprpc.idl.export import declared_topics

            self._templates = sorted({t for svc in server.services for t in declared_topics(type(svc))})
        return self._templates

    async def Subscribe(self, req: SubscribeRequest) -> SubscribeReply:
        """Subscribe the calling session to a topic; with ``since``, replay what it missed after
        that position first (flagged as replayed), as after a reconnect. UNAVAILABLE while the
        server's broker is unreachable (the session is then not subscribed)."""
        from kcprpc.broker import topic_key
        from kcprpc.context import current_context

        ctx = current_context()
        check_topic(req.topic, self._declared(ctx.server), ctx.server.config.max_name_length)
        hub = ctx.server.push
        key = topic_key(req.topic)
        try:
            if req.since is None:
                hub.subscribe(ctx.session, req.topic)
                # the position after subscribing: every later message is delivered live
                return SubscribeReply(position=(await hub.broker.history(key, None, 0)).position)
            hub.hold(ctx.session, key)  # no live message overtakes the replay
            try:
                hub.subscribe(ctx.session, req.topic)
            except BaseException:
                hub.release(ctx.session, key)
                raise
            r = await hub.recover(ctx.session, key, req.since)
        except BrokerUnavailable:
            # the call fails with UNAVAILABLE and leaves the session as it was: not subscribed
            hub.unsubscribe(ctx.session, req.topic)
            raise
        return SubscribeReply(
            position=r.position, recovered=r.recovered, replayed=r.replayed, missed=r.missed
        )

    async def Unsubscribe(self, req: SubscribeRequest) -> None:
        """Unsubscribe the calling session from a topic."""
        from kcprpc.context import current_context

        ctx = current_context()
        ctx.server.push.unsubscribe(ctx.session, req.topic)

    async def History(self, req: HistoryRequest) -> HistoryPage:
        """The kept messages of a topic the calling session is subscribed to, or of a room it is
        in (FAILED_PRECONDITION otherwise): at most ``limit`` (capped by the server's
        ``max_history_fetch``), the reply under ``max_message_size`` (``truncated`` says when it
        stopped early)."""
        from kcprpc.broker import room_key, topic_key
        from kcprpc.context import current_context

        ctx = current_context()
        server, sess = ctx.server, ctx.session
        if (req.topic is None) == (req.room is None):
            raise RpcError(Status.INVALID_ARGUMENT, "name a topic or a room (one of the two)")
        if req.topic is not None:
            check_topic(req.topic, self._declared(server), server.config.max_name_length)
            if req.topic not in sess.topics:
                raise RpcError(Status.FAILED_PRECONDITION, f"not subscribed to topic {shown(req.topic)}")
            key = topic_key(req.topic)
        else:
            assert req.room is not None
            if req.room not in sess.rooms:
                raise RpcError(Status.FAILED_PRECONDITION, f"not in room {shown(req.room)}")
            key = room_key(req.room)
        budget, address = server.push.history_budget, sess.remote_address
        now = int(time.monotonic() * 1000)
        if budget is not None and not budget.allow(address, now):
            server.stats["history_refused"] += 1
            raise RpcError(
                Status.RESOURCE_EXHAUSTED,
                f"history read faster than history_rate ({server.config.history_rate} bytes a second per address)",
            )
        cap = server.config.max_history_fetch
        limit = cap if req.limit is None else min(req.limit, cap)
        broker = server.push.broker
        since = req.since
        same = since is not None and since.epoch == broker.epoch
        if since is None:
            hist = await broker.history(key, None, limit)
        else:
            hist = await broker.history(key, since.offset if same else 0, limit)
        room = server.config.max_message_size - 1024  # the reply's own fields
        msgs = hist.messages
        out: list[bytes] = []
        cut = False
        taken = 0
        for m in msgs if since is not None else reversed(msgs):  # the tail keeps the newest
            entry = history_entry(m)
            room -= len(entry)
            if room < 0:
                cut = True
                break
            taken += len(entry)
            out.append(entry)
        if budget is not None:
            budget.charge(address, taken, now)  # (the token allow() took stands for the call itself)
        if since is None:
            out.reverse()
        capped = (req.limit is None or req.limit > cap) and len(msgs) == limit > 0
        if capped:  # the server's cap stopped it: are there more?
            cut = cut or (msgs[-1].seq < hist.last if since is not None else msgs[0].seq > 1)
        stats = server.stats
        stats["history_fetches"] += 1
        stats["history_fetched"] += len(out)
        stats["history_truncated"] += cut
        missed = hist.missed if same else (0 if since is None else None)
        # the page, encoded from the messages' own frames: a model per message, dumped and packed
        # again, cost 7 times the CPU (bench/history_page.py)
        page = b"".join(
            (
                _HEAD.pack_map_header(4),
                _MESSAGES,
                _HEAD.pack_array_header(len(out)),
                *out,
                _POSITION,
                pack(list(hist.position)),
                _MISSED,
                pack(missed),
                _TRUNCATED,
                pack(cut),
            )
        )
        return cast(HistoryPage, Packed(page))  # what HistoryPage(...) would encode into

    async def Members(self, req: MembersRequest) -> MemberList:
        """The members of a room the calling session is in, or the subscribers of a topic it is
        subscribed to, on every server sharing the broker (PERMISSION_DENIED otherwise), for rooms
        and topics that keep presence (FAILED_PRECONDITION otherwise); at most the server's
        ``max_members``, ``truncated`` when cut."""
        from kcprpc.context import current_context

        ctx = current_context()
        return await ctx.server.push.presence.listing(ctx.session, req.room, req.topic)
