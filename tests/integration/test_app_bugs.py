"""What a bug must not break: an application's validator that raises what pydantic passes through
(anything but ValueError and AssertionError), a hook that raises, and the server's own loops (the
sweep, the accept loop) meeting an error. The framework drops what the bug touched, logs it (a
few times a minute where a peer can trigger it at will), and goes on, or, where it cannot go on,
says so; before, each of these ended a background task silently and left a connection hung or a
server serving nothing."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, field_validator

import kcprpc
from kcprpc import ClientConfig, ReconnectPolicy, rpc
from kcprpc.testing import pair

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

from test_rpc_support import Demo, Probe, Req

TIMEOUT = 5.0


def _buggy(n: int, bad: int) -> int:
    """An app's validator with a bug: a TypeError (pydantic passes it through) for ``bad``."""
    if n == bad:
        raise TypeError(f"app bug on {n}")
    return n


@kcprpc.event("bug.tick")
class BuggyTick(BaseModel):
    n: int

    @field_validator("n")
    @classmethod
    def _n(cls, n: int) -> int:
        return _buggy(n, 2)


@kcprpc.event("bug.pos", delivery="unreliable")
class BuggyPos(BaseModel):
    n: int

    @field_validator("n")
    @classmethod
    def _n(cls, n: int) -> int:
        return _buggy(n, 13)


class BuggyNote(BaseModel):
    n: int

    @field_validator("n")
    @classmethod
    def _n(cls, n: int) -> int:
        return _buggy(n, 0)


class Notes(kcprpc.Service, name="bug.Notes"):
    def __init__(self) -> None:
        self.got: list[int] = []

    @rpc.notify(delivery="reliable")
    async def note(self, req: BuggyNote) -> None:
        self.got.append(req.n)


async def _until(cond: Any, what: str) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + TIMEOUT
    while not cond():
        assert loop.time() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("link", ["kcp", "memory"])
async def test_an_event_validator_that_raises_drops_that_event_and_the_link_goes_on(
    link: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: the TypeError left the client's control-stream reader; over secure KCP, whose
    transport answers the heartbeats, the client looked connected and its next call hung."""
    async with pair([Demo(Probe())], link=link) as p:  # type: ignore[arg-type]
        c = p.client
        got: list[int] = []
        c.on(BuggyTick, lambda ev: got.append(ev.n))
        await c.subscribe("t")
        for n in (1, 2, 3):
            await p.server.push.publish("t", BuggyTick.model_construct(n=n))
        await _until(lambda: got == [1, 3], "the events around the bad one")
        assert c.events_dropped == 1 and c.connected and c.reconnects == 0
        reply = await asyncio.wait_for(c.stub(Demo).hello(Req(name="after")), TIMEOUT)
        assert reply.text == "hello after"
        assert [r for r in caplog.records if r.exc_info and "app bug on 2" in str(r.exc_info[1])]


async def test_an_unreliable_event_validator_that_raises_does_not_end_datagram_delivery() -> None:
    """Over a link whose datagrams are read by the reading loop (memory, WebSocket,
    WebTransport): before, the exception ended that loop, and with it every later unreliable
    event (a TickRoom's state among them)."""
    async with pair([Demo(Probe())], link="memory") as p:
        c = p.client
        got: list[int] = []
        c.on(BuggyPos, lambda ev: got.append(ev.n))
        await c.subscribe("t")
        for n in (1, 13, 2, 3):
            await p.server.push.publish("t", BuggyPos.model_construct(n=n))
            await asyncio.sleep(0)
        await _until(lambda: got == [1, 2, 3], "the unreliable events after the bad one")


async def test_a_notify_validator_that_raises_gives_its_slot_back() -> None:
    """Each notify holds one of ``max_concurrent_notifications`` slots while it runs; before, one
    whose validation raised a non-ValidationError kept its slot for good, and past the bound every
    later notify of the connection was dropped."""
    notes = Notes()
    cfg = kcprpc.ServerConfig(max_concurrent_notifications=2)
    async with pair([notes], link="memory", server_config=cfg) as p:
        stub = p.client.stub(Notes)
        for _ in range(5):
            await stub.note(BuggyNote.model_construct(n=0))
        await _until(lambda: p.server.stats["notifications_dropped"] == 5, "the five bad notifies dropped")
        for n in (1, 2, 3):
            await stub.note(BuggyNote(n=n))
            await _until(lambda n=n: notes.got[-1:] == [n], f"notify {n}")  # type: ignore[misc]
        assert notes.got == [1, 2, 3]


@pytest.mark.parametrize("hook", ["on_disconnect", "on_reconnect"])
async def test_a_connection_hook_that_raises_is_logged_and_the_client_reconnects(
    hook: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: an on_disconnect that raised skipped the reconnect (the client stayed down for
    good); an on_reconnect that raised ended the reconnect task with its error unseen."""
    cfg = ClientConfig(reconnect=ReconnectPolicy(initial=0.01, maximum=0.05))
    async with pair([Demo(Probe())], client_config=cfg) as p:
        c = p.client
        calls: list[str] = []

        def bad(*_args: Any) -> None:
            calls.append(hook)
            raise RuntimeError(f"app bug in {hook}")

        setattr(c, hook, bad)
        caplog.set_level(logging.ERROR, logger="kcprpc.client")
        await p.drop()
        await _until(lambda: c.reconnects == 1 and c.connected and calls == [hook], "the reconnect")
        reply = await asyncio.wait_for(c.stub(Demo).hello(Req(name="back")), TIMEOUT)
        assert reply.text == "hello back"
        await _until(
            lambda: [r for r in caplog.records if r.exc_info and f"app bug in {hook}" in str(r.exc_info[1])],
            "the hook's error logged",
        )


# ------------------------------------------------------------------ the server's own loops
async def test_a_session_whose_probe_raises_does_not_stop_the_sweep_of_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The sweep (silent sessions, slow consumers, the send backlog) runs over every session once
    per heartbeat interval; one session's probe raising is logged (rate-limited) and skipped, and
    the others are still swept: here, a silent client is closed. Before, the error ended the sweep
    task for every session until the next connection arrived."""
    hb = kcprpc.HeartbeatConfig(interval=0.05, timeout=0.3)
    cfg = kcprpc.ServerConfig(heartbeat=hb)
    quiet = ClientConfig(heartbeat=kcprpc.HeartbeatConfig(interval=30.0, timeout=60.0))
    async with pair([Demo(Probe())], link="memory", server_config=cfg, client_config=quiet) as p:
        broken = next(iter(p.server.sessions))

        def boom() -> int:
            raise RuntimeError("a probe's bug")

        broken.backlog_probe = boom
        broken.last_receive = float("inf")  # (never silent: the probe runs every sweep)
        second = kcprpc.Client(p.connector, config=quiet)  # pings every 30 s: silent past 0.3 s
        await second.connect()
        try:
            await _until(lambda: len(p.server.sessions) == 1, "the silent client closed by the sweep")
            assert p.server.sessions == {broken}
            assert (
                len([r for r in caplog.records if r.exc_info and "a probe's bug" in str(r.exc_info[1])]) <= 10
            )
        finally:
            await second.close()


async def test_accepting_that_fails_under_a_serving_server_ends_serve_loudly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The KCP listener failing to hand over connections (its socket gone under the server) makes
    ``serve()`` raise, logged, instead of a process that stays up and accepts nothing."""
    server = kcprpc.Server([Demo(Probe())], "127.0.0.1", 0)
    await server.start()
    serving = asyncio.ensure_future(server.serve())
    await asyncio.sleep(0)
    listener = server._listener
    assert listener is not None
    listener.close()  # the listener ends without a shutdown
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(serving, TIMEOUT)
    assert [r for r in caplog.records if "no longer accepts" in r.getMessage()]
    assert server._closing  # serve() shut the server down on its way out


class Fragile(kcprpc.Service, name="bug.Fragile"):
    async def lookup(self, req: Req) -> Req:
        return Req(name={"known": "yes"}[req.name])  # KeyError for any other name: an app bug


async def test_a_handler_that_any_client_can_make_raise_logs_a_few_tracebacks_not_one_per_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every call fails with INTERNAL, and the log gets 10 tracebacks a minute for the method,
    then how many it left out: one per call let a client flood the log (and spend the server's
    CPU on formatting them) with any input the handler fails on."""
    async with pair([Fragile()], link="memory") as p:
        stub = p.client.stub(Fragile)
        caplog.set_level(logging.ERROR, logger="kcprpc.server")
        for i in range(30):
            with pytest.raises(kcprpc.RpcError) as e:
                await stub.lookup(Req(name=f"no{i}"))
            assert e.value.status is kcprpc.Status.INTERNAL and e.value.message == "internal error"
        tracebacks = [r for r in caplog.records if r.exc_info and "bug.Fragile/lookup" in r.getMessage()]
        assert len(tracebacks) == 10 and p.server.stats["calls_failed"] == 30
        assert (await stub.lookup(Req(name="known"))).name == "yes"
