"""Resume: a reconnect within the server's window takes back the same ServerSession (its id,
state, rooms and topics), proven with a token bound to the new connection, used once.

Issue 14, item 1: inside and after the window, a replayed, forged or rebound proof refused and
counted (the real session unharmed), a peer identity that differs, ``on_resume`` refusing, a clean
``client.close()``, a server shutdown, ``max_detached_sessions``, a slow consumer."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel
from test_rpc_support import Demo, Req, Tick

import kcprpc
from kcprpc import ClientConfig, HeartbeatConfig, ReconnectPolicy, RpcError, Server, ServerConfig, Status
from kcprpc import codec as c
from kcprpc.memory import MemoryConnection, connection_pair
from kcprpc.resume import resume_proof
from kcprpc.testing import RpcPair, pair

TIMEOUT = 5.0


@kcprpc.event("test.resume.blob")
class Blob(BaseModel):
    data: bytes


FAST = ClientConfig(
    heartbeat=HeartbeatConfig(interval=0.05, timeout=1.0),
    reconnect=ReconnectPolicy(initial=0.01, maximum=0.05),
)


class Hooks:
    """The server's session hooks, recorded, with an event per call to wait on."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.changed = asyncio.Event()

    def hook(self, name: str, then: Callable[[kcprpc.ServerSession], None] | None = None) -> Any:
        def run(session: kcprpc.ServerSession) -> None:
            self.calls.append((name, session.id))
            self.changed.set()
            if then is not None:
                then(session)

        return run

    def kwargs(self, **then: Callable[[kcprpc.ServerSession], None]) -> dict[str, Any]:
        return {
            name: self.hook(name, then.get(name))
            for name in ("on_connect", "on_detach", "on_resume", "on_disconnect")
        }

    def names(self, sid: str) -> list[str]:
        return [n for n, s in self.calls if s == sid]

    async def wait_for(self, name: str, sid: str) -> None:
        async def seen() -> None:
            while name not in self.names(sid):
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(seen(), TIMEOUT)


def remember(session: kcprpc.ServerSession) -> None:
    session.state["seat"] = "north"
    session.player = "ana"  # type: ignore[attr-defined]  # an application's own attribute: kept too


async def reconnect_after(p: RpcPair, while_down: Callable[[], Any]) -> None:
    """Drop the connection, keep the client from reconnecting while ``while_down()`` runs, then let
    it back and wait for its WELCOME."""
    back = asyncio.Event()
    p.client.on_reconnect = lambda _: back.set()
    p.refuse = True
    await p.drop()
    await while_down()
    p.refuse = False
    await asyncio.wait_for(back.wait(), TIMEOUT)


@pytest.mark.parametrize("link", ["memory", "mux", "kcp"])
async def test_a_reconnect_inside_the_window_resumes_the_same_session(link: Any) -> None:
    hooks = Hooks()
    async with pair([Demo()], link=link, client_config=FAST, **hooks.kwargs(on_connect=remember)) as p:
        d = p.client.stub(Demo, timeout=TIMEOUT)
        await d.join(Req(name="arena"))
        await p.client.subscribe("news")
        ticks: asyncio.Queue[Tick] = asyncio.Queue()
        flags: list[tuple[int, bool]] = []
        p.client.on(Tick, lambda t, info: (flags.append((t.n, info.replayed)), ticks.put_nowait(t)))
        reports: list[kcprpc.Recovered] = []
        p.client.on(kcprpc.Recovered, reports.append)
        await p.server.push.to_room("arena", Tick(n=0))  # an offset for each key
        await p.server.push.publish("news", Tick(n=1))
        assert [await asyncio.wait_for(ticks.get(), TIMEOUT) for _ in range(2)] == [Tick(n=0), Tick(n=1)]
        sid = p.client.session_id
        assert sid is not None and p.client.lifecycle.resumable
        (session,) = p.server.sessions
        probed = link != "memory"  # a mux connection reports what it holds unread
        assert (session.receive_probe is not None) == probed

        async def while_detached() -> None:
            await hooks.wait_for("on_detach", sid)
            assert p.server.detached_sessions == 1 and session.detached
            assert session.receive_probe is None  # nothing of the lost connection is kept alive
            assert p.server.push.members("arena") == {session}  # the seat is kept
            await p.server.push.to_room("arena", Tick(n=2))  # nothing is sent to it now...
            await p.server.push.publish("news", Tick(n=3))

        await reconnect_after(p, while_detached)
        # ... and what it missed is replayed from the client's offsets
        assert [await asyncio.wait_for(ticks.get(), TIMEOUT) for _ in range(2)] == [Tick(n=2), Tick(n=3)]
        assert flags == [(0, False), (1, False), (2, True), (3, True)]  # told apart from live ones
        assert p.client.session_id == sid and p.client.resumes == 1
        assert p.server.sessions == {session} and not session.detached
        # the new connection's receive bounds are this session's: the process total sheds it
        assert (session.receive_probe is not None) == probed and session.receive.frames.owner is session
        assert (
            session.state == {"seat": "north"}
            and session.rooms == {"arena"}
            and session.topics == {"news"}
            and session.player == "ana"  # type: ignore[attr-defined]
        )
        assert p.client.rooms == {"arena"} and p.client.topics == {"news"}
        assert hooks.names(sid) == ["on_connect", "on_detach", "on_resume"]  # not gone, not new
        assert p.server.stats["sessions_detached"] == 1 and p.server.stats["sessions_resumed"] == 1
        assert await d.whoami() == sid
        assert sorted((r.key, r.recovered, r.replayed, r.missed) for r in reports) == [
            ("room:arena", True, 1, 0),
            ("topic:news", True, 1, 0),
        ]
        await p.server.push.to_room("arena", Tick(n=4))  # live again
        assert await asyncio.wait_for(ticks.get(), TIMEOUT) == Tick(n=4)


async def test_after_the_window_the_session_is_gone_and_the_client_starts_fresh() -> None:
    hooks = Hooks()
    config = ServerConfig(resume_window=0.2)
    async with pair([Demo()], client_config=FAST, server_config=config, **hooks.kwargs()) as p:
        await p.client.stub(Demo).join(Req(name="arena"))
        expired: list[kcprpc.SessionExpired] = []
        failed: list[kcprpc.ResumeFailed] = []
        p.client.on(kcprpc.SessionExpired, expired.append)
        p.client.on(kcprpc.ResumeFailed, failed.append)
        sid = p.client.session_id
        assert sid is not None

        async def until_gone() -> None:
            await hooks.wait_for("on_disconnect", sid)  # the window ended

        await reconnect_after(p, until_gone)
        assert hooks.names(sid) == ["on_connect", "on_detach", "on_disconnect"]
        assert expired == [kcprpc.SessionExpired(session_id=sid, reason="session expired")]
        assert [f.key for f in failed] == ["room:arena"]  # Demo has no on_restore: the room is lost
        new = p.client.session_id
        assert new is not None and new != sid and p.client.resumes == 0
        assert hooks.names(new) == ["on_connect"]  # a fresh session, as a first connect
        # an honest client whose session is no longer kept: expired, not refused (an attack's counter)
        assert p.server.stats["sessions_expired"] == 1 and p.server.stats["resumes_expired"] == 1
        assert p.server.stats["resumes_refused"] == 0
        assert p.server.detached_sessions == 0 and p.server.push.members("arena") == set()


async def test_on_resume_may_refuse_and_the_old_session_is_gone() -> None:
    hooks = Hooks()

    def refuse(session: kcprpc.ServerSession) -> None:
        raise RpcError(Status.PERMISSION_DENIED, "banned while away")

    async with pair([Demo()], client_config=FAST, **hooks.kwargs(on_resume=refuse)) as p:
        expired: list[kcprpc.SessionExpired] = []
        p.client.on(kcprpc.SessionExpired, expired.append)
        sid = p.client.session_id
        assert sid is not None

        async def detached() -> None:
            await hooks.wait_for("on_detach", sid)

        await reconnect_after(p, detached)
        assert expired == [kcprpc.SessionExpired(session_id=sid, reason="resume refused")]
        assert hooks.names(sid) == ["on_connect", "on_detach", "on_resume", "on_disconnect"]
        assert p.client.session_id != sid
        assert p.server.stats["resumes_refused"] == 1 and p.server.stats["sessions_resumed"] == 0


@pytest.mark.parametrize("link", ["memory", "mux", "kcp"])
async def test_a_clean_close_frees_the_session_at_once(link: Any) -> None:
    hooks = Hooks()
    async with pair([Demo()], link=link, client_config=FAST, **hooks.kwargs()) as p:
        await p.client.stub(Demo).join(Req(name="arena"))
        sid = p.client.session_id
        assert sid is not None
        await p.client.close()
        await hooks.wait_for("on_disconnect", sid)
        assert hooks.names(sid) == ["on_connect", "on_disconnect"]  # never detached
        assert p.server.stats["sessions_detached"] == 0 and p.server.detached_sessions == 0
        assert p.server.push.members("arena") == set()


async def test_a_slow_consumer_is_not_resumable() -> None:
    hooks = Hooks()
    async with pair([Demo()], client_config=FAST, **hooks.kwargs()) as p:
        sid = p.client.session_id
        assert sid is not None
        (session,) = p.server.sessions
        session.end_slow_consumer("slow_consumers", "test")
        await hooks.wait_for("on_disconnect", sid)
        assert "on_detach" not in hooks.names(sid) and p.server.detached_sessions == 0


async def test_the_window_is_the_apps_per_session() -> None:
    hooks = Hooks()

    def no_seat(session: kcprpc.ServerSession) -> None:
        session.resume_window = 0  # this one is gone at once

    async with pair([Demo()], client_config=FAST, **hooks.kwargs(on_detach=no_seat)) as p:
        sid = p.client.session_id
        assert sid is not None
        await p.drop()
        await hooks.wait_for("on_disconnect", sid)
        assert hooks.names(sid) == ["on_connect", "on_detach", "on_disconnect"]
        assert p.server.stats["sessions_expired"] == 1


# ----------------------------------------------------------------------------- raw connections
class Raw:
    """One connection to ``server`` that speaks HELLO by hand (its ``binding``: the pair's)."""

    def __init__(self, server: Server, conn: tuple[MemoryConnection, MemoryConnection] | None = None) -> None:
        self.client, served = conn or connection_pair()
        self.server = server
        self.task = asyncio.ensure_future(server.handle_connection(served))
        self.binding = self.client.channel_binding
        self.dec = c.FrameDecoder()
        self.frames: list[c.Frame] = []  # every frame read on the control stream

    async def send_hello(self, **body: Any) -> None:
        """Send HELLO with ``body`` (the WELCOME is read by :meth:`read_until`)."""
        self.ctrl = await self.client.open_stream()
        self.ctrl.write(c.encode_frame(c.HELLO, 0, {"v": 1, "md": {}, **body}))

    async def read_until(self, ftype: int) -> c.Frame:
        """The first frame of ``ftype`` read on the control stream (read on until it comes)."""
        while True:
            for f in self.frames:
                if f[0] == ftype:
                    return f
            data = await asyncio.wait_for(self.ctrl.read(65536), TIMEOUT)
            assert data, "the server closed the connection"
            self.frames += self.dec.feed(data)

    async def hello(self, **body: Any) -> dict[str, Any]:
        """Send HELLO with ``body``; the WELCOME's body."""
        await self.send_hello(**body)
        frame = (await self.read_until(c.WELCOME))[2]
        assert isinstance(frame, dict)
        return frame

    def ticks(self) -> list[int]:
        """The ``n`` of every Tick event read so far."""
        return [f[2][1]["n"] for f in self.frames if f[0] == c.EVENT and f[2][0] == "tick"]

    def proof(self, welcome: dict[str, Any], binding: bytes | None = None) -> dict[str, Any]:
        """A resume claim for ``welcome``'s session, bound to ``binding`` (default: this one's)."""
        b = binding if binding is not None else self.binding
        assert b is not None
        return {"sid": welcome["sid"], "proof": resume_proof(welcome["resume"]["token"], welcome["sid"], b)}

    async def lose(self) -> None:
        """The connection is lost (no goodbye): its session detaches."""
        await self.client.close()
        await asyncio.wait_for(self.task, TIMEOUT)


async def served(hooks: Hooks, config: ServerConfig | None = None) -> Server:
    return Server([Demo()], config=config, **hooks.kwargs())


async def test_a_used_token_is_refused_and_counted() -> None:
    hooks = Hooks()
    server = await served(hooks)
    first = await Raw(server).hello()
    assert len(first["resume"]["token"]) == 32 and first["resume"]["window_ms"] == 30_000
    r1 = Raw(server)
    w1 = await r1.hello()
    await r1.lose()
    r2 = Raw(server)
    w2 = await r2.hello(resume=r2.proof(w1))
    assert w2["resumed"] is True and w2["sid"] == w1["sid"] and w2["resume"]["token"] != w1["resume"]["token"]
    await r2.lose()
    r3 = Raw(server)  # the first token again, correctly bound to this connection: used, refused
    w3 = await r3.hello(resume=r3.proof(w1))
    assert w3["resumed"] is False and w3["resume_error"] == "resume refused" and w3["sid"] != w1["sid"]
    assert server.stats["resumes_refused"] == 1
    r4 = Raw(server)  # the real session still waits for its owner
    w4 = await r4.hello(resume=r4.proof(w2))
    assert w4["resumed"] is True and w4["sid"] == w1["sid"]
    assert server.stats["sessions_resumed"] == 2
    await server.shutdown(grace=0)


async def test_a_forged_or_rebound_proof_is_refused_and_the_session_unharmed() -> None:
    hooks = Hooks()
    server = await served(hooks)
    r1 = Raw(server)
    w1 = await r1.hello()
    await r1.lose()
    forged = Raw(server)
    wf = await forged.hello(resume={"sid": w1["sid"], "proof": os.urandom(32)})
    assert wf["resumed"] is False and wf["resume_error"] == "resume refused"
    assert hooks.names(wf["sid"]) == ["on_connect"]  # the forger got a fresh session, nothing more
    elsewhere = Raw(server)  # a proof made for another connection (a captured HELLO)
    rebound = Raw(server)
    wr = await rebound.hello(resume=elsewhere.proof(w1))
    assert wr["resumed"] is False and wr["resume_error"] == "resume refused"
    for bad in ({"sid": 7}, {"sid": w1["sid"], "proof": b"short"}, {}):  # malformed claims
        wb = await Raw(server).hello(resume=bad)
        assert wb["resumed"] is False and wb["resume_error"] == "resume refused"
    assert "resumed" not in await Raw(server).hello(resume="x")  # not a map: no resume asked
    nobody = Raw(server)
    wn = await nobody.hello(resume={"sid": "no-such-session", "proof": os.urandom(32)})
    assert wn["resume_error"] == "session expired"
    assert server.stats["resumes_refused"] == 5 and server.stats["resumes_expired"] == 1
    assert hooks.names(w1["sid"]) == ["on_connect", "on_detach"]  # untouched by all of that
    owner = Raw(server)
    wo = await owner.hello(resume=owner.proof(w1))
    assert wo["resumed"] is True and wo["sid"] == w1["sid"]
    await server.shutdown(grace=0)


class KeyedConnection(MemoryConnection):
    """A server side whose peer proved a static key (as a pinned-key secure handshake does)."""

    key: bytes | None = None

    @property
    def peer_public_key(self) -> bytes | None:
        return self.key


def keyed_pair(key: bytes) -> tuple[MemoryConnection, MemoryConnection]:
    cl, sv = MemoryConnection(), KeyedConnection()
    sv.key = key
    cl.peer, sv.peer = sv, cl
    cl.binding = sv.binding = os.urandom(32)
    return cl, sv


async def test_a_resume_from_another_peer_identity_is_refused() -> None:
    hooks = Hooks()
    server = await served(hooks)
    r1 = Raw(server, keyed_pair(b"A" * 32))
    w1 = await r1.hello()
    await r1.lose()
    other = Raw(server, keyed_pair(b"B" * 32))
    wo = await other.hello(resume=other.proof(w1))
    assert wo["resumed"] is False and wo["resume_error"] == "resume refused"
    assert server.stats["resumes_refused"] == 1
    same = Raw(server, keyed_pair(b"A" * 32))
    ws = await same.hello(resume=same.proof(w1))
    assert ws["resumed"] is True
    await server.shutdown(grace=0)


async def test_a_resume_takes_over_a_connection_the_server_still_thinks_alive() -> None:
    hooks = Hooks()
    server = await served(hooks)
    r1 = Raw(server)
    w1 = await r1.hello()  # still connected
    r2 = Raw(server)
    w2 = await r2.hello(resume=r2.proof(w1))
    assert w2["resumed"] is True and w2["sid"] == w1["sid"]
    await asyncio.wait_for(r1.task, TIMEOUT)  # the old connection ended
    assert r1.client.closed and not r2.client.closed
    (session,) = server.sessions
    assert session.id == w1["sid"] and not session.closed
    assert hooks.names(w1["sid"]) == ["on_connect", "on_resume"]
    await server.shutdown(grace=0)


async def test_max_detached_sessions_evicts_the_oldest() -> None:
    hooks = Hooks()
    server = await served(hooks, ServerConfig(max_detached_sessions=2))
    welcomes = []
    for _ in range(3):
        r = Raw(server)
        welcomes.append(await r.hello())
        await r.lose()
    oldest = welcomes[0]["sid"]
    await hooks.wait_for("on_disconnect", oldest)
    assert server.stats["detached_evicted"] == 1 and server.detached_sessions == 2
    late = Raw(server)
    wl = await late.hello(resume=late.proof(welcomes[0]))
    assert wl["resume_error"] == "session expired"
    await server.shutdown(grace=0)


class FromAddress(MemoryConnection):
    """A server side whose peer is at ``addr`` (an IP address, as over UDP or TCP)."""

    addr: Any = None

    @property
    def remote_address(self) -> Any:
        return self.addr


def pair_from(host: str, port: int) -> tuple[MemoryConnection, MemoryConnection]:
    cl, sv = MemoryConnection(), FromAddress()
    sv.addr = (host, port)
    cl.peer, sv.peer = sv, cl
    cl.binding = sv.binding = os.urandom(32)
    return cl, sv


async def test_one_address_keeps_at_most_its_share_of_detached_sessions() -> None:
    """A client that connects and vanishes again and again cannot push other players' sessions out
    of the table: past max_connections_per_address its own oldest go."""
    hooks = Hooks()
    server = await served(hooks, ServerConfig(max_connections_per_address=2, max_detached_sessions=4))
    player = Raw(server, pair_from("203.0.113.5", 1))
    wp = await player.hello()
    await player.lose()
    welcomes = []
    for i in range(6):
        r = Raw(server, pair_from("198.51.100.9", 1000 + i))
        welcomes.append(await r.hello())
        await r.lose()
    for w in welcomes[:4]:
        await hooks.wait_for("on_disconnect", w["sid"])  # the vanishing address's own oldest went
    assert server.stats["detached_evicted"] == 4 and server.detached_sessions == 3
    back = Raw(server, pair_from("203.0.113.5", 2))
    wb = await back.hello(resume=back.proof(wp))
    assert wb["resumed"] is True  # the other player's session was kept
    await server.shutdown(grace=0)


async def test_max_detached_bytes_evicts_the_oldest_and_charges_metadata() -> None:
    from kcprpc.session_table import DETACHED_BASE

    hooks = Hooks()
    md = {"pad": "x" * 3000}  # each session is charged DETACHED_BASE + about 3.4 KB
    server = await served(hooks, ServerConfig(max_detached_bytes=2 * DETACHED_BASE + 7000))
    welcomes = []
    for _ in range(3):
        r = Raw(server)
        welcomes.append(await r.hello(md=md))
        await r.lose()
    await hooks.wait_for("on_disconnect", welcomes[0]["sid"])
    assert server.stats["detached_evicted"] == 1 and server.detached_sessions == 2
    assert server.resumable.detached_bytes <= server.config.max_detached_bytes
    # a resume frees the charge of the session it takes back
    r = Raw(server)
    wl = await r.hello(resume=r.proof(welcomes[2]))
    assert wl["resumed"] is True and server.detached_sessions == 1
    # charged as held: the metadata's and presence info's decoded estimates (3,000 characters)
    assert DETACHED_BASE + 3000 < server.resumable.detached_bytes < DETACHED_BASE + 3600
    await server.shutdown(grace=0)
    assert server.resumable.detached_bytes == 0


async def test_events_sent_to_a_detached_session_reach_it_when_it_resumes() -> None:
    """``session.send`` to a session kept for a resume was dropped and counted as sent (an
    audit): the client resumed and never knew. Now reliable events are held for the resume and
    sent right after its WELCOME, in order; past ``detached_send_buffer`` the oldest are
    forgotten, and the client is told how many it missed."""
    hooks = Hooks()
    sessions: list[kcprpc.ServerSession] = []
    async with pair([Demo()], client_config=FAST, **hooks.kwargs(on_connect=sessions.append)) as p:
        got: list[int] = []
        expired: list[kcprpc.SessionExpired] = []
        p.client.on(Tick, lambda t: got.append(t.n))
        p.client.on(kcprpc.SessionExpired, expired.append)
        sess = sessions[0]
        sess.send(Tick(n=0))
        await p.client.health()  # delivered before the connection drops

        async def while_down() -> None:
            await hooks.wait_for("on_detach", sess.id)
            for n in (1, 2, 3):
                sess.send(Tick(n=n))
            sess.send(Tick(n=99), delivery="unreliable")  # dropped, counted
            assert p.server.stats["detached_events_held"] == 3
            assert p.server.stats["unreliable_dropped"] == 1

        await reconnect_after(p, while_down)
        sess.send(Tick(n=4))
        await p.client.health()
        assert got == [0, 1, 2, 3, 4] and expired == [] and p.client.resumes == 1
    sessions.clear()
    cfg = ServerConfig(detached_send_buffer=200)
    async with pair(
        [Demo()], client_config=FAST, server_config=cfg, **hooks.kwargs(on_connect=sessions.append)
    ) as p:
        got.clear()
        reports: list[kcprpc.Recovered] = []
        p.client.on(Tick, lambda t: got.append(t.n))
        p.client.on(kcprpc.SessionExpired, expired.append)
        p.client.on(kcprpc.Recovered, reports.append)
        sess = sessions[0]

        async def overflow() -> None:
            await hooks.wait_for("on_detach", sess.id)
            for n in range(20):  # about 30 bytes each, and 64 for its entry: two fit
                sess.send(Tick(n=n))

        # a client that takes numbered direct events keeps its session, and is told exactly how
        # many it missed (the oldest are forgotten first)
        await reconnect_after(p, overflow)
        await p.client.health()
        assert p.client.resumes == 1 and p.client.session_id == sess.id and expired == []
        assert got == [18, 19] and p.server.stats["detached_events_overflowed"] == 0
        assert [(r.key, r.recovered, r.replayed, r.missed) for r in reports] == [("session", False, 2, 18)]
        assert p.server.stats["direct_forgotten"] == 18 and p.server.stats["direct_missed"] == 18


async def test_a_client_without_numbered_events_loses_its_session_past_the_buffer() -> None:
    """Past ``detached_send_buffer`` the session of a client that does not take numbered direct
    events is gone, and its resume fails with SessionExpired, so it knows it missed something."""
    hooks = Hooks()
    server = await served(hooks, ServerConfig(detached_send_buffer=200))
    r1 = Raw(server)
    w1 = await r1.hello()  # no "numbered"
    await r1.lose()
    (sess,) = server.resumable.detached.values()
    for n in range(20):
        sess.send(Tick(n=n))
    await hooks.wait_for("on_disconnect", sess.id)
    r2 = Raw(server)
    w2 = await r2.hello(resume=r2.proof(w1))
    assert w2["resumed"] is False and w2["resume_error"] == "session expired"
    assert server.stats["detached_events_overflowed"] == 1 and "direct" not in w2
    await server.shutdown(grace=0)


async def test_shutdown_ends_every_detached_session() -> None:
    hooks = Hooks()
    server = await served(hooks)
    sids = []
    for _ in range(2):
        r = Raw(server)
        sids.append((await r.hello())["sid"])
        await r.lose()
    assert server.detached_sessions == 2
    await server.shutdown(grace=0)
    assert server.detached_sessions == 0
    assert all(hooks.names(s) == ["on_connect", "on_detach", "on_disconnect"] for s in sids)


async def test_no_channel_binding_no_token() -> None:
    hooks = Hooks()
    server = await served(hooks)
    cl, sv = connection_pair()
    cl.binding = sv.binding = None  # as compat mode: nothing to bind a proof to
    r = Raw(server, (cl, sv))
    w = await r.hello()
    assert "resume" not in w
    await r.lose()
    assert hooks.names(w["sid"]) == ["on_connect", "on_disconnect"]  # gone at once
    off = await served(Hooks(), ServerConfig(resume_window=None))
    assert "resume" not in await Raw(off).hello()
    await server.shutdown(grace=0)
    await off.shutdown(grace=0)


def test_config_checks_the_resume_settings() -> None:
    from kcprpc import UsageError

    with pytest.raises(UsageError, match="resume_window"):
        ServerConfig(resume_window=-1)
    with pytest.raises(UsageError):
        ServerConfig(max_detached_sessions=-1)
    with pytest.raises(UsageError):
        ServerConfig(max_detached_bytes=-1)


async def test_the_server_may_end_a_detached_session() -> None:
    hooks = Hooks()
    server = await served(hooks)
    r = Raw(server)
    w = await r.hello()
    await r.lose()
    (session,) = server.resumable.detached.values()
    await session.close()
    assert hooks.names(w["sid"]) == ["on_connect", "on_detach", "on_disconnect"]
    assert server.detached_sessions == 0
    late = Raw(server)
    assert (await late.hello(resume=late.proof(w)))["resume_error"] == "session expired"
    await server.shutdown(grace=0)


@pytest.mark.parametrize("link", ["memory", "mux"])
async def test_a_session_gone_silent_detaches_and_resumes(link: Any) -> None:
    hooks = Hooks()
    config = ServerConfig(heartbeat=HeartbeatConfig(interval=0.02, timeout=0.2))
    async with pair([Demo()], link=link, client_config=FAST, server_config=config, **hooks.kwargs()) as p:
        sid = p.client.session_id
        assert sid is not None
        back = asyncio.Event()
        p.client.on_reconnect = lambda _: back.set()
        p.refuse = True
        p.blackhole()  # no EOF: only the server's heartbeat sweep notices
        await hooks.wait_for("on_detach", sid)
        p.refuse = False
        await asyncio.wait_for(back.wait(), TIMEOUT)
        assert p.client.session_id == sid and p.client.resumes == 1
        assert hooks.names(sid) == ["on_connect", "on_detach", "on_resume"]


async def test_a_stream_opened_before_the_resume_serves_the_resumed_session() -> None:
    hooks = Hooks()
    server = await served(hooks)
    r1 = Raw(server)
    w1 = await r1.hello()
    await r1.lose()
    r2 = Raw(server)
    early = await r2.client.open_stream()  # before its HELLO: its calls wait for WELCOME
    w2 = await r2.hello(resume=r2.proof(w1))
    assert w2["resumed"] is True
    early.write(c.encode_frame(c.CALL, 1, ["test.Demo/whoami", None, 5000, c.FLAG_END, None]))
    dec = c.FrameDecoder()
    frames: list[Any] = []
    while not frames:
        data = await asyncio.wait_for(early.read(65536), TIMEOUT)
        assert data
        frames += dec.feed(data)
    assert frames[0][0] == c.REPLY and frames[0][2][0] == w1["sid"]
    await server.shutdown(grace=0)


async def test_a_detached_member_stays_present_until_it_is_gone() -> None:
    """Presence and resume: no Left while a session may resume, none and no Joined when it does,
    Left once it is gone."""
    hooks = Hooks()
    cfg = ServerConfig(presence=kcprpc.PresenceConfig(events=["room:arena"]))
    async with pair([Demo()], server_config=cfg, client_config=FAST, **hooks.kwargs()) as p:
        a = p.client
        await a.stub(Demo, timeout=TIMEOUT).join(Req(name="arena"))
        (sa,) = p.server.sessions
        observer = kcprpc.Client(p.connector, config=ClientConfig(heartbeat=None))
        await observer.connect()
        try:
            seen: asyncio.Queue[Any] = asyncio.Queue()
            observer.on(kcprpc.Joined, seen.put_nowait)
            observer.on(kcprpc.Left, seen.put_nowait)
            await observer.stub(Demo, timeout=TIMEOUT).join(Req(name="arena"))
            joined = await asyncio.wait_for(seen.get(), TIMEOUT)  # its own
            assert isinstance(joined, kcprpc.Joined) and joined.member.id != sa.id

            async def while_detached() -> None:
                await hooks.wait_for("on_detach", sa.id)
                members = await observer.members(room="arena")
                assert {m.id for m in members.members} == {sa.id, joined.member.id}

            back = asyncio.Event()
            a.on_reconnect = lambda _: back.set()
            p.refuse = True
            await sa.conn.close()  # A's connection is lost (the observer's is p.current)
            await while_detached()
            p.refuse = False
            await asyncio.wait_for(back.wait(), TIMEOUT)
            assert a.session_id == sa.id and a.resumes == 1
            await a.close()  # on purpose: gone at once
            left = await asyncio.wait_for(seen.get(), TIMEOUT)
            assert isinstance(left, kcprpc.Left) and left.member.id == sa.id  # nothing in between
            assert (await observer.members(room="arena")).total == 1
        finally:
            await observer.close()


# ------------------------------------------------------- what happens while a resume is under way
class Gate:
    """An async ``on_resume`` that waits (a database lookup, say) until :meth:`open`."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.gate = asyncio.Event()
        self.task: asyncio.Task[Any] | None = None  # the resume's, waiting in the hook

    async def __call__(self, session: kcprpc.ServerSession) -> None:
        self.task = asyncio.current_task()
        self.started.set()
        await self.gate.wait()


async def lost_and_claimed(
    server: Server, gate: Gate, **first: Any
) -> tuple[kcprpc.ServerSession, Raw, dict[str, Any]]:
    """A session whose connection was lost, and a new connection whose resume of it waits in
    ``on_resume``: (the session, the new connection, the first WELCOME)."""
    r1 = Raw(server)
    w1 = await r1.hello(**first)
    (session,) = server.sessions
    session.join("arena")
    await r1.lose()
    r2 = Raw(server)
    await r2.send_hello(resume=r2.proof(w1))
    await asyncio.wait_for(gate.started.wait(), TIMEOUT)
    return session, r2, w1


async def test_events_past_the_buffer_while_on_resume_runs_fail_the_resume() -> None:
    """Events held for a session while its resume's ``on_resume`` ran overflowed
    ``detached_send_buffer``: the buffer was dropped and the resume succeeded anyway, so the
    client never learned it missed them (an audit). The resume fails now (SessionExpired), and
    the session is gone."""
    hooks, gate = Hooks(), Gate()
    kw = hooks.kwargs()
    kw["on_resume"] = gate
    server = Server([Demo()], config=ServerConfig(detached_send_buffer=200), **kw)
    session, r2, w1 = await lost_and_claimed(server, gate)
    for n in range(20):  # about 30 bytes each
        session.send(Tick(n=n))
    gate.gate.set()
    w2 = (await r2.read_until(c.WELCOME))[2]
    assert w2["resumed"] is False and w2["resume_error"] == "session expired" and w2["sid"] != w1["sid"]
    assert server.stats["detached_events_overflowed"] == 1
    await hooks.wait_for("on_disconnect", w1["sid"])
    assert session not in server.sessions and server.push.members("arena") == set()
    await server.shutdown(grace=0)


async def test_a_session_closed_while_a_resume_is_under_way_stays_ended() -> None:
    """``session.close()`` (a kick) while its resume's ``on_resume`` ran was a no-op: the session
    came back to life in its rooms, and ``on_disconnect`` never ran (an audit). Now the resume
    fails and the session is gone."""
    hooks, gate = Hooks(), Gate()
    kw = hooks.kwargs()
    kw["on_resume"] = gate
    server = Server([Demo()], **kw)
    session, r2, w1 = await lost_and_claimed(server, gate)
    await session.close()
    gate.gate.set()
    w2 = (await r2.read_until(c.WELCOME))[2]
    assert w2["resumed"] is False and w2["resume_error"] == "session expired"
    await hooks.wait_for("on_disconnect", w1["sid"])
    assert session not in server.sessions and session.rooms == set() and not session.may_resume
    await server.shutdown(grace=0)


@pytest.mark.parametrize("end", ["close", "slow consumer"])
async def test_a_resume_arriving_as_the_server_ends_the_session_is_refused(end: str) -> None:
    """A resume HELLO handled in the same loop turn as ``session.close()`` or a penalty, before
    the old connection's teardown, took the session back and served calls on it (an audit)."""
    server = Server([Demo()])
    r1 = Raw(server)
    w1 = await r1.hello()
    (session,) = server.sessions
    r2 = Raw(server)
    r2.ctrl = await r2.client.open_stream()
    await asyncio.sleep(0)  # the server accepts the stream: the HELLO is read in the same turn
    closing = asyncio.ensure_future(session.close()) if end == "close" else None
    if closing is None:
        session.end_slow_consumer("slow_consumers", "test")
    r2.ctrl.write(c.encode_frame(c.HELLO, 0, {"v": 1, "md": {}, "resume": r2.proof(w1)}))
    w2 = (await r2.read_until(c.WELCOME))[2]
    assert w2["resumed"] is False and w2["resume_error"] == "session expired" and w2["sid"] != w1["sid"]
    if closing is not None:
        await closing
    await server.shutdown(grace=0)


async def test_a_shutdown_while_on_resume_runs_ends_the_session() -> None:
    """``server.shutdown()`` cancelled a resume inside its ``on_resume``; the session was then in
    neither the live set nor the detached table, so it was never ended: no ``on_disconnect``, and
    it stayed in its room (an audit)."""
    hooks, gate = Hooks(), Gate()
    kw = hooks.kwargs()
    kw["on_resume"] = gate  # never opened
    server = Server([Demo()], **kw)
    session, _, w1 = await lost_and_claimed(server, gate)
    await asyncio.wait_for(server.shutdown(grace=0), TIMEOUT)
    await hooks.wait_for("on_disconnect", w1["sid"])
    assert server.push.members("arena") == set() and session.rooms == set()
    assert server.resumable.by_id == {} and server.detached_sessions == 0


async def test_events_waiting_in_send_lanes_are_held_when_the_connection_is_lost() -> None:
    """Reliable events accepted into a send lane and not yet handed to the transport were cleared
    when the session detached: its client resumed with a silent gap while an event sent a moment
    later reached it (an audit). They are held for the resume now, in order, before it."""
    from kcprpc.memory import mux_memory_pair

    server = Server([Demo()])
    r1 = Raw(server, mux_memory_pair())
    w1 = await r1.hello()
    (session,) = server.sessions
    window = server.config.lanes.window
    for _ in range(window // 8192 + 2):  # the client reads nothing: the transport holds a window
        session.send(Blob(data=b"x" * 10_000))
    for n in (1, 2, 3):
        session.send(Tick(n=n), lane="chat")
    lanes = session.lanes
    assert lanes is not None and lanes.queued_bytes > 0  # waiting in the lane
    await r1.lose()
    assert server.detached_sessions == 1 and server.stats["detached_events_held"] == 3
    session.send(Tick(n=4))
    r2 = Raw(server, mux_memory_pair())
    assert (await r2.hello(resume=r2.proof(w1)))["resumed"] is True
    while len(r2.ticks()) < 4:
        r2.frames += r2.dec.feed(await asyncio.wait_for(r2.ctrl.read(65536), TIMEOUT))
    assert r2.ticks() == [1, 2, 3, 4]
    await server.shutdown(grace=0)


async def test_a_detach_superseded_while_its_close_lingers_runs_nothing() -> None:
    """A resume came while the lost connection's close lingered, and the resumed session lost its
    new connection too: when the first close returned, ``on_detach`` ran a second time and armed a
    second expiry timer over the first, which then ended the session early (an audit)."""

    class SlowClose(MemoryConnection):
        gate = asyncio.Event()

        async def close(self) -> None:
            await super().close()
            await self.gate.wait()  # a KCP/mux close lingering for a dead peer

    client, served_conn = MemoryConnection(), SlowClose()
    client.peer, served_conn.peer = served_conn, client
    client.binding = served_conn.binding = os.urandom(32)
    hooks = Hooks()
    server = Server([Demo()], config=ServerConfig(resume_window=60.0), **hooks.kwargs())
    r1 = Raw(server, (client, served_conn))
    w1 = await r1.hello()
    (session,) = server.sessions
    await r1.client.close()  # lost; its close lingers
    while not session.detached:
        await asyncio.sleep(0)
    r2 = Raw(server)
    w2 = await r2.hello(resume=r2.proof(w1))
    assert w2["resumed"] is True
    await r2.lose()  # lost again, while the first close still lingers
    await hooks.wait_for("on_detach", w1["sid"])
    first_timer = session.expiry
    assert first_timer is not None and session.detaches == 2
    SlowClose.gate.set()
    await asyncio.wait_for(r1.task, TIMEOUT)  # the first teardown goes on
    assert hooks.names(w1["sid"]) == ["on_connect", "on_resume", "on_detach"]  # not a 2nd on_detach
    assert session.expiry is first_timer and not first_timer.cancelled()
    await server.shutdown(grace=0)
    assert first_timer.cancelled()


async def test_a_session_may_join_a_room_in_on_resume() -> None:
    """``session.join()`` from ``on_resume`` (a returning player put back in the lobby) did
    nothing, without an error (an audit): the session is detached until it runs on the new
    connection. It joins now; the client hears of it when it resumes."""

    def back_to_lobby(session: kcprpc.ServerSession) -> None:
        session.join("lobby")

    server = Server([Demo()], on_resume=back_to_lobby)
    r1 = Raw(server)
    w1 = await r1.hello()
    (session,) = server.sessions
    await r1.lose()
    r2 = Raw(server)
    w2 = await r2.hello(resume=r2.proof(w1))
    assert w2["resumed"] is True and w2["restored"]["rooms"] == ["lobby"]
    assert session.rooms == {"lobby"} and server.push.members("lobby") == {session}
    rooms = await r2.read_until(c.ROOMS)
    assert rooms[2] == [True, "lobby"]
    await server.shutdown(grace=0)


async def test_a_resume_whose_new_connection_is_lost_waits_again_within_the_bounds() -> None:
    """The new connection of a resume was lost while ``on_resume`` ran: the session waits again
    with the token its client still holds, and counts against ``max_detached_sessions`` again
    (it did not: one over the bound per such resume, an audit), the oldest going."""
    hooks, gate = Hooks(), Gate()
    kw = hooks.kwargs()
    kw["on_resume"] = gate
    server = Server([Demo()], config=ServerConfig(max_detached_sessions=1), **kw)
    session, r2, w1 = await lost_and_claimed(server, gate)
    other = Raw(server)
    wo = await other.hello()
    await other.lose()  # detached meanwhile: the only one in the table now
    await hooks.wait_for("on_detach", wo["sid"])
    await r2.client.close()  # the resume's new connection is lost during on_resume
    gate.gate.set()
    await hooks.wait_for("on_disconnect", wo["sid"])  # evicted: the bound holds
    assert server.detached_sessions == 1 and server.stats["detached_evicted"] == 1
    assert server.resumable.waiting(session) and session.expiry is not None
    r3 = Raw(server)
    w3 = await r3.hello(resume=r3.proof(w1))  # the first token still works: it was never welcomed
    assert w3["resumed"] is True and w3["sid"] == w1["sid"] and session in server.sessions
    await server.shutdown(grace=0)


async def test_a_resume_cancelled_in_on_resume_leaves_the_session_waiting() -> None:
    """The resume's task cancelled inside ``on_resume`` (its connection's teardown) while the
    server goes on: the session waits again for its client, resumable with the same token (it
    was left in neither the live set nor the detached table)."""
    hooks, gate = Hooks(), Gate()
    kw = hooks.kwargs()
    kw["on_resume"] = gate
    server = Server([Demo()], **kw)
    session, _, w1 = await lost_and_claimed(server, gate)
    assert gate.task is not None
    gate.task.cancel()

    async def waiting() -> None:
        while not server.resumable.waiting(session):
            await asyncio.sleep(0)

    await asyncio.wait_for(waiting(), TIMEOUT)
    assert session.expiry is not None and "on_disconnect" not in hooks.names(w1["sid"])
    gate.gate.set()
    r3 = Raw(server)
    assert (await r3.hello(resume=r3.proof(w1)))["resumed"] is True
    assert session in server.sessions and session.rooms == {"arena"}
    await server.shutdown(grace=0)


@pytest.mark.parametrize("link", ["memory", "mux"])
async def test_direct_events_lost_with_the_connection_are_sent_again_when_it_resumes(link: Any) -> None:
    """A reliable ``session.send`` that the transport had taken and the client never received was
    lost with the connection, and the client resumed without being told (session 32's audit).
    Now such events are numbered: the client names the last one it handled, and the server sends
    the rest again, once each and in order."""
    hooks = Hooks()
    config = ServerConfig(heartbeat=HeartbeatConfig(interval=0.02, timeout=0.2))
    async with pair([Demo()], link=link, client_config=FAST, server_config=config, **hooks.kwargs()) as p:
        got: list[int] = []
        reports: list[kcprpc.Recovered] = []
        p.client.on(Tick, lambda t: got.append(t.n))
        p.client.on(kcprpc.Recovered, reports.append)
        (sess,) = p.server.sessions
        for n in range(5):
            sess.send(Tick(n=n))
        await p.client.health()
        assert got == [0, 1, 2, 3, 4] and sess.direct is not None and len(sess.direct.entries) == 5
        p.client.lifecycle.link.send_ack()  # (its timer would, ACK_DELAY later)
        await p.client.health()
        assert not sess.direct.entries and sess.direct.bytes == 0  # acknowledged: forgotten
        back = asyncio.Event()
        p.client.on_reconnect = lambda _: back.set()
        p.refuse = True
        p.blackhole()  # taken by the transport from now on, never delivered
        for n in range(5, 10):
            sess.send(Tick(n=n))
        await hooks.wait_for("on_detach", sess.id)
        sess.send(Tick(n=10))  # held while detached
        p.refuse = False
        await asyncio.wait_for(back.wait(), TIMEOUT)
        sess.send(Tick(n=11))
        await p.client.health()
        assert got == list(range(12)) and p.client.resumes == 1
        assert [(r.key, r.recovered, r.replayed, r.missed) for r in reports] == [("session", True, 6, 0)]
        assert p.server.stats["direct_replayed"] == 6 and p.server.stats["direct_missed"] == 0
