"""The built-in ``kcprpc.Push`` service: what a client calls to subscribe to topics
(``client.subscribe(topic)``), and the check that a topic is one the server's services declare.

Wire names: ``kcprpc.Push/Subscribe``, ``kcprpc.Push/Unsubscribe``, ``kcprpc.Push/Members``.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

from kcprpc.errors import RpcError
from kcprpc.presence import Joined, Left, MemberList
from kcprpc.push import ResumeFailed
from kcprpc.service import Service
from kcprpc.status import Status


class SubscribeRequest(BaseModel):
    """A topic name."""

    topic: str


class SubscribeReply(BaseModel):
    """The broker's epoch and the topic's last sequence number at subscription time."""

    epoch: int
    seq: int


_PLACEHOLDER = re.compile(r"\{[^{}]*\}")


def topic_pattern(template: str) -> re.Pattern[str]:
    """A declared topic (``"channel:{channel}"``) as a pattern: each ``{placeholder}`` stands for
    one or more characters other than braces; the rest is literal."""
    parts = _PLACEHOLDER.split(template)
    return re.compile("[^{}]+".join(re.escape(p) for p in parts))


def check_topic(topic: str, templates: list[str]) -> None:
    """Raise :class:`RpcError` unless ``topic`` is one that ``templates`` (the topics the server's
    services declare) name: ``INVALID_ARGUMENT`` for a template itself (``channel:{channel}``),
    ``NOT_FOUND`` for a topic no template matches. A server whose services declare no topics
    takes any name (nothing to check against)."""
    if not templates:
        return
    if topic in templates and _PLACEHOLDER.search(topic):
        example = _PLACEHOLDER.sub("demo", topic)
        raise RpcError(
            Status.INVALID_ARGUMENT,
            f"{topic!r} is the declared template, not a topic: fill in its placeholders (e.g. {example!r})",
        )
    if not any(topic_pattern(t).fullmatch(topic) for t in templates):
        raise RpcError(
            Status.NOT_FOUND,
            f"no topic {topic!r} on this server (its topics: {', '.join(sorted(templates))})",
        )


class MembersRequest(BaseModel):
    """A room or a topic (one of them)."""

    room: str | None = None
    topic: str | None = None


class PushService(Service, name="kcprpc.Push", events=[ResumeFailed, Joined, Left]):
    """Topic subscription and presence for clients (``client.subscribe(topic)``,
    ``client.members(room=...)``)."""

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
        """Subscribe the calling session to a topic."""
        from kcprpc.broker import topic_key
        from kcprpc.context import current_context

        ctx = current_context()
        check_topic(req.topic, self._declared(ctx.server))
        hub = ctx.server.push
        hub.subscribe(ctx.session, req.topic)
        return SubscribeReply(epoch=hub.broker.epoch, seq=hub.broker.last_seq(topic_key(req.topic)))

    async def Unsubscribe(self, req: SubscribeRequest) -> None:
        """Unsubscribe the calling session from a topic."""
        from kcprpc.context import current_context

        ctx = current_context()
        ctx.server.push.unsubscribe(ctx.session, req.topic)

    async def Members(self, req: MembersRequest) -> MemberList:
        """The members of a room the calling session is in, or the subscribers of a topic it is
        subscribed to, on every server sharing the broker (PERMISSION_DENIED otherwise), for rooms
        and topics that keep presence (FAILED_PRECONDITION otherwise); at most the server's
        ``max_members``, ``truncated`` when cut."""
        from kcprpc.context import current_context

        ctx = current_context()
        return await ctx.server.push.presence.listing(ctx.session, req.room, req.topic)
