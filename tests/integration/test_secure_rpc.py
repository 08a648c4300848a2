"""kcprpc calls over secure-mode KCP sessions (the RPC layer's default wire mode): the passphrase
as PSK, a pinned server key with a client token, each handshake failure as a clear RpcError,
conflicting options as UsageError; a server stream and unary calls in flight continue across a
client socket rebind (a phone switching networks) and the server sees the path change."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

import pytest
from test_rpc_support import Demo, Probe, Req

import kcprpc
from kcp.secure import PathChanged, generate_keypair
from kcprpc import ClientConfig, MuxConfig, RpcError, SecureWire, Status, Transport, UsageError
from kcprpc.net import MuxConnection, dial

TIMEOUT = 20.0
KEY = "rpc secure passphrase"


async def test_calls_continue_across_a_client_rebind() -> None:
    server = kcprpc.Server([Demo(Probe())], "127.0.0.1", 0, key=KEY)
    host, port = await server.start()
    conns: list[MuxConnection] = []

    async def connector() -> MuxConnection:
        c = await dial(host, port, Transport(SecureWire(key=KEY)))
        conns.append(c)
        return c

    hooked: list[tuple[Any, Any, Any]] = []
    server.on_path_change = lambda sess, old, new: hooked.append((sess, old, new))
    async with server, kcprpc.Client(connector) as client:
        d = client.stub(Demo, timeout=TIMEOUT)
        assert (await d.hello(Req(name="before"))).text == "hello before"
        (conn,) = conns
        session: Any = conn.datagrams  # the kcp.KCPSession under the mux
        assert session.mode == "secure"
        (srv_session,) = server._listener.listener.sessions.values()
        moves: list[Any] = []
        srv_session.add_event_callback(lambda ev: moves.append(ev) if isinstance(ev, PathChanged) else None)
        n = 3000
        texts: list[str] = []
        unary: list[asyncio.Task[Any]] = []
        async for r in d.count(Req(name="s", n=n)):
            texts.append(r.text)
            if len(texts) == n // 3:
                unary = [asyncio.create_task(d.echo(bytes([i]) * 2000)) for i in range(32)]
                old_local = session.local_address
                assert client.rebind() == session.local_address != old_local  # mid-stream, calls in flight
        assert texts == [f"s{i}" for i in range(n)]
        assert [bytes(b) for b in await asyncio.gather(*unary)] == [bytes([i]) * 2000 for i in range(32)]
        assert (await d.hello(Req(name="after"))).text == "hello after"
        assert len(moves) == 1 and srv_session.remote_address[1] == session.local_address[1]
        assert srv_session.stats["secure_path_changes"] == 1
        (rpc_session,) = server.sessions
        assert rpc_session.remote_address == srv_session.remote_address  # the RPC layer follows the move
        assert client.reconnects == 0 and len(conns) == 1  # the same connection, no redial
        # the app saw it: the server's hook, the session's and the server's counters, the stats call
        assert [(h[0], h[1][1], h[2][1]) for h in hooked] == [
            (rpc_session, old_local[1], session.local_address[1])
        ]
        assert rpc_session.path_changes == 1
        st = await client.stats()
        assert st.server["path_changes"] == 1 and st.transport["secure_path_changes"] == 1
        assert st.server["paths_validated"] == 1 and st.server["paths_failed"] == 0


def _session(client: kcprpc.Client) -> Any:
    link = client.lifecycle.link
    assert link is not None
    return link.conn.datagrams  # type: ignore[attr-defined]  # the kcp.KCPSession under the mux


async def test_secure_is_the_default_and_the_passphrase_is_the_psk() -> None:
    fec = Transport(SecureWire(key=KEY, fec=(4, 2)))
    async with kcprpc.Server([Demo()], "127.0.0.1", 0, transport=fec) as server:
        assert server.wire_mode == "secure"
        host, port = server.address  # type: ignore[misc]
        async with kcprpc.connect(host, port, transport=fec) as client:
            assert (await client.stub(Demo, timeout=TIMEOUT).hello(Req(name="k"))).text == "hello k"
            s = _session(client)
            assert s.mode == "secure" and s.secure.params.data_shards == 4
            assert s.secure.params.mux_version == 2  # the RPC layer's smux version, agreed in the handshake
            st = await client.stats()
            assert st.transport["secure_packets_opened"] > 0


async def test_no_key_at_all_is_secure_but_anonymous() -> None:
    async with kcprpc.Server([Demo()], "127.0.0.1", 0) as server:
        host, port = server.address  # type: ignore[misc]
        async with kcprpc.connect(host, port) as client:
            assert (await client.stub(Demo, timeout=TIMEOUT).hello(Req(name="a"))).text == "hello a"
            assert _session(client).mode == "secure"
        # a client with a passphrase does not reach an anonymous server (and the reverse)
        with pytest.raises(RpcError) as ei:
            await kcprpc.connect(host, port, key=KEY, config=ClientConfig(connect_timeout=0.3))
        assert ei.value.status is Status.UNAUTHENTICATED and "wrong key" in ei.value.message


async def test_wrong_passphrase_is_unauthenticated_at_once() -> None:
    async with kcprpc.Server([Demo()], "127.0.0.1", 0, key=KEY) as server:
        host, port = server.address  # type: ignore[misc]
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(RpcError) as ei:
            await kcprpc.connect(host, port, key="not the key", config=ClientConfig(connect_timeout=4))
        assert ei.value.status is Status.UNAUTHENTICATED
        assert ei.value.message == (
            f"secure handshake failed: wrong key: the server at {host}:{port} could not verify our "
            "handshake (check the passphrase/PSK, or the pinned server public key)"
        )
        assert loop.time() - t0 < 1.0  # the server's wire hint, not the 4 s timeout


async def test_pinned_server_key_token_hook_and_psk_mismatch() -> None:
    priv, pub = generate_keypair()
    seen: list[tuple[bytes, bytes | None]] = []

    def authorize(token: bytes, client_pub: bytes | None, addr: Any) -> str | None:
        seen.append((token, client_pub))
        return None if token == b"let me in" else "unknown token"

    served = SecureWire(key=KEY, static_private_key=priv, authorize=authorize)
    server = kcprpc.Server([Demo()], "127.0.0.1", 0, transport=Transport(served))
    async with server:
        host, port = server.address  # type: ignore[misc]
        cpriv, cpub = generate_keypair()

        def pinned(key: str = KEY, server_key: bytes = pub, **wire: Any) -> Transport:
            return Transport(SecureWire(key=key, server_public_key=server_key, **wire))

        async with kcprpc.connect(
            host, port, transport=pinned(static_private_key=cpriv, token="let me in")
        ) as client:
            assert (await client.stub(Demo, timeout=TIMEOUT).hello(Req(name="p"))).text == "hello p"
            assert seen[-1] == (b"let me in", cpub)
            (sess,) = server.sessions
            assert sess.peer_public_key == cpub  # the client's identity, for the app's own checks
        with pytest.raises(RpcError) as ei:
            await kcprpc.connect(host, port, transport=pinned(token="guess"))
        assert ei.value.status is Status.UNAUTHENTICATED
        assert ei.value.message == (
            f"secure handshake refused by the server at {host}:{port}: bad token: unknown token "
            "(check the client's token)"
        )
        with pytest.raises(RpcError) as ei:  # the pinned key is right, the PSK is not: one RTT
            await kcprpc.connect(host, port, transport=pinned("other", token="let me in"))
        assert ei.value.status is Status.UNAUTHENTICATED
        assert "PSK mismatch" in ei.value.message
        _, wrong_pub = generate_keypair()
        with pytest.raises(RpcError) as ei:  # a pinned key the server does not hold: bad mac1, a hint
            await kcprpc.connect(
                host, port, transport=pinned(server_key=wrong_pub), config=ClientConfig(connect_timeout=3)
            )
        assert ei.value.status is Status.UNAUTHENTICATED and "wrong key" in ei.value.message


async def test_mux_version_mismatch_is_refused_with_its_reason() -> None:
    v1 = Transport(SecureWire(key=KEY), mux=MuxConfig(version=1))
    async with kcprpc.Server([Demo()], "127.0.0.1", 0, key=KEY) as server:
        host, port = server.address  # type: ignore[misc]
        with pytest.raises(RpcError) as ei:
            await kcprpc.connect(host, port, transport=v1)
        assert ei.value.status is Status.FAILED_PRECONDITION
        assert "mux version mismatch" in ei.value.message


async def test_transport_goaway_drains_like_the_rpc_goaway() -> None:
    probe = Probe()
    async with kcprpc.Server([Demo(probe)], "127.0.0.1", 0, key=KEY) as server:
        host, port = server.address  # type: ignore[misc]
        async with kcprpc.connect(host, port, key=KEY) as client:
            d = client.stub(Demo, timeout=TIMEOUT)
            call = asyncio.ensure_future(d.slow(Req(name="x")))
            await asyncio.wait_for(probe.started.wait(), TIMEOUT)
            server._listener.listener.goaway(9, "maintenance")  # kcp level: the transport GOAWAY only
            for _ in range(1000):  # it reaches the client: new calls fail fast, none starts there
                try:
                    await d.hello(Req(name="late"))
                except RpcError as e:
                    assert e.status is Status.UNAVAILABLE
                    break
                await asyncio.sleep(0.005)
            else:
                raise AssertionError("calls kept starting after the GOAWAY")
            probe.release.set()
            assert (await call).text == "done"  # the call in flight finished
            with pytest.raises(RpcError) as ei:  # the draining listener refuses new handshakes
                await kcprpc.connect(host, port, key=KEY)
            assert ei.value.status is Status.UNAVAILABLE
            assert "server is going away (draining)" in ei.value.message


async def test_shutdown_refuses_new_handshakes_at_once() -> None:
    probe = Probe()
    server = kcprpc.Server([Demo(probe)], "127.0.0.1", 0, key=KEY)
    host, port = await server.start()
    async with kcprpc.connect(host, port, key=KEY) as client:
        call = asyncio.ensure_future(client.stub(Demo, timeout=TIMEOUT).slow(Req(name="x")))
        await asyncio.wait_for(probe.started.wait(), TIMEOUT)
        shut = asyncio.ensure_future(server.shutdown(grace=TIMEOUT))
        await asyncio.sleep(0)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(RpcError) as ei:
            await kcprpc.connect(host, port, key=KEY)
        assert ei.value.status is Status.UNAVAILABLE and "going away" in ei.value.message
        assert loop.time() - t0 < 2.0  # an answer, not the connect timeout
        probe.release.set()
        assert (await call).text == "done"
        await asyncio.wait_for(shut, TIMEOUT)


async def test_testing_pair_over_kcp_uses_the_servers_wire_settings() -> None:
    from kcprpc.testing import pair

    priv, pub = generate_keypair()
    served = Transport(SecureWire(key=KEY, static_private_key=priv, fec=(4, 2)))
    async with pair([Demo()], link="kcp", transport=served) as p:
        assert p.server.public_key == pub
        assert (await p.client.stub(Demo, timeout=TIMEOUT).hello(Req(name="t"))).text == "hello t"
        assert _session(p.client).secure.peer_static == pub  # the pinned-key handshake ran
    async with pair([Demo()]) as p:  # in memory: nothing to rebind
        with pytest.raises(UsageError, match="secure-mode"):
            p.client.rebind()
        assert p.server.public_key is None


async def test_an_async_path_change_hook_runs_once_at_a_time_per_session() -> None:
    """Each authenticated datagram from a new address is a path change, and an async
    ``on_path_change`` made one task per change, without bound (an audit: 301 tasks in 1.5 s
    from a client that hopped ports). While a session's hook still runs, later changes skip it
    (``path_hooks_skipped``); the counters still count every move."""
    gate = asyncio.Event()
    running: list[Any] = []

    async def hook(sess: Any, old: Any, new: Any) -> None:
        running.append(new)
        await gate.wait()

    server = kcprpc.Server([Demo(Probe())], "127.0.0.1", 0, key=KEY, on_path_change=hook)
    host, port = await server.start()
    async with server, kcprpc.Client(lambda: dial(host, port, Transport(SecureWire(key=KEY)))) as client:
        d = client.stub(Demo, timeout=TIMEOUT)
        for i in range(20):
            client.rebind()
            assert (await d.hello(Req(name=str(i)))).text == f"hello {i}"
        assert server.stats["path_changes"] == 20 and len(running) == 1
        assert server.stats["path_hooks_skipped"] == 19
        gate.set()
        await asyncio.sleep(0)
        client.rebind()
        await d.hello(Req(name="again"))
        assert len(running) == 2  # the hook is free again
