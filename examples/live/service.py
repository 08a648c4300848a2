"""Live channel service: the publisher's calls publish chat, gift and score events to a topic;
viewers subscribe to the topic (``client.subscribe("channel:<name>")``). Publishing needs the
publisher token in the call metadata, checked by a server interceptor."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, Field

import kcprpc
from kcprpc import RpcError, ServerContext, Status, current_context


class ChannelEvent(BaseModel):
    """What every event published on a channel carries."""

    channel: str
    sent_at: float = 0.0  # the publisher's clock (time.time()), for latency figures


@kcprpc.event("live.chat")
class Chat(ChannelEvent):
    user: str
    text: str = Field(max_length=500)


@kcprpc.event("live.gift")
class Gift(ChannelEvent):
    user: str
    gift: str
    amount: int = Field(ge=1)


@kcprpc.event("live.score")
class Score(ChannelEvent):
    home: int
    away: int


@kcprpc.event("live.viewers", delivery="unreliable")
class Viewers(BaseModel):
    """How many viewers follow a channel on this server: sent to each of them, unreliable (a
    lost one is superseded by the next), whenever the figure changes (report_viewers)."""

    channel: str
    viewers: int = Field(ge=0)


class PublishAck(BaseModel):
    seq: int
    epoch: int


def topic(channel: str) -> str:
    """The topic viewers subscribe to."""
    return f"channel:{channel}"


class LiveService(
    kcprpc.Service, name="live.v1.Live", topics={"channel:{channel}": [Chat, Gift, Score]}, events=[Viewers]
):
    """Publishing calls (publisher only)."""

    async def chat(self, ev: Chat) -> PublishAck:
        return await self._publish(ev.channel, ev)

    async def gift(self, ev: Gift) -> PublishAck:
        return await self._publish(ev.channel, ev)

    async def score(self, ev: Score) -> PublishAck:
        return await self._publish(ev.channel, ev)

    @staticmethod
    async def _publish(channel: str, ev: BaseModel) -> PublishAck:
        msg = await current_context().server.push.publish(topic(channel), ev)
        return PublishAck(seq=msg.seq, epoch=msg.epoch)


def count_viewers(server: kcprpc.Server, channel: str) -> list[kcprpc.ServerSession]:
    """The sessions of ``server`` subscribed to ``channel``'s topic."""
    t = topic(channel)
    return [s for s in server.sessions if not s.closed and t in s.topics]


async def report_viewers(server: kcprpc.Server, channel: str, every: float = 0.2) -> None:
    """Until cancelled: look at the viewers of ``channel`` every ``every`` seconds and send a
    :class:`Viewers` event to each of them when their number changed, and to each new viewer
    (session events, not the topic's: they take no position and no room in its history)."""
    told: set[kcprpc.ServerSession] = set()
    while True:
        viewers = count_viewers(server, channel)
        now = set(viewers)
        to = viewers if len(now) != len(told) else [s for s in viewers if s not in told]
        if to:
            ev = Viewers(channel=channel, viewers=len(viewers))
            for s in to:
                s.send(ev)
        told = now
        await asyncio.sleep(every)


def publisher_auth(token: str) -> Callable[[ServerContext, Callable[[], Awaitable[Any]]], Awaitable[Any]]:
    """Server interceptor: only callers with ``{"token": token}`` may call ``live.v1.Live``."""

    async def intercept(ctx: ServerContext, call_next: Callable[[], Awaitable[Any]]) -> Any:
        if ctx.spec.service == "live.v1.Live" and ctx.metadata.get("token") != token:
            raise RpcError(Status.PERMISSION_DENIED, "publisher token required")
        return await call_next()

    return intercept


KEY = "live example passphrase"
"""The shared passphrase of the example (secure wire mode: the handshake's PSK)."""


def make_server(
    host: str = "127.0.0.1", port: int = 9200, token: str = "publisher-secret", key: str = KEY
) -> kcprpc.Server:
    """A live server (secure mode, ``key`` as the passphrase)."""
    return kcprpc.Server([LiveService()], host, port, key=key, interceptors=[publisher_auth(token)])
