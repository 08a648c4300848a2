"""Resume over real secure-mode KCP on loopback: the proof is bound to the Noise handshake hash of
the connection it arrives on, so a proof made for one connection is refused on another; compat
mode has no channel binding and issues no token."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

from test_rpc_support import Demo, Req

import kcprpc
from kcprpc import CompatWire, SecureWire, Transport
from kcprpc import codec as c
from kcprpc.net import MuxConnection, dial
from kcprpc.resume import resume_proof

TIMEOUT = 10.0
KEY = "resume secure passphrase"


async def hello(conn: MuxConnection, **body: Any) -> dict[str, Any]:
    """HELLO on a new control stream of ``conn``; the WELCOME's body."""
    ctrl = await conn.open_stream()
    ctrl.write(c.encode_frame(c.HELLO, 0, {"v": 1, "md": {}, **body}))
    dec = c.FrameDecoder()
    while True:
        data = await asyncio.wait_for(ctrl.read(65536), TIMEOUT)
        assert data, "the server closed the connection"
        for ftype, _, frame in dec.feed(data):
            if ftype == c.WELCOME:
                assert isinstance(frame, dict)
                return frame


def claim(welcome: dict[str, Any], binding: bytes | None) -> dict[str, Any]:
    assert binding is not None
    return {"sid": welcome["sid"], "proof": resume_proof(welcome["resume"]["token"], welcome["sid"], binding)}


async def test_the_proof_is_bound_to_the_noise_handshake_hash() -> None:
    server = kcprpc.Server([Demo()], "127.0.0.1", 0, key=KEY)
    host, port = await server.start()
    wire = Transport(SecureWire(key=KEY))
    try:
        first = await dial(host, port, wire)
        w1 = await hello(first)
        (session,) = server.sessions
        assert first.session is not None and first.session.secure is not None
        binding = first.channel_binding
        assert binding == bytes(first.session.secure.handshake_hash) and len(binding) == 32
        assert session.conn.channel_binding == binding  # both ends know it
        await first.abort()  # lost, no goodbye: the session detaches
        detached = asyncio.Event()
        server.on_detach = lambda _: detached.set()
        await asyncio.wait_for(detached.wait(), TIMEOUT)
        captured = await dial(host, port, wire)  # a proof made for the first connection, replayed here
        assert captured.channel_binding not in (None, binding)
        wc = await hello(captured, resume=claim(w1, binding))
        assert wc["resumed"] is False and wc["resume_error"] == "resume refused"
        owner = await dial(host, port, wire)
        wo = await hello(owner, resume=claim(w1, owner.channel_binding))
        assert wo["resumed"] is True and wo["sid"] == w1["sid"]
        assert server.stats["resumes_refused"] == 1 and server.stats["sessions_resumed"] == 1
        assert session.conn.channel_binding == owner.channel_binding  # it runs on the new connection
        for conn in (captured, owner):
            await conn.close()
    finally:
        await server.shutdown(grace=0)


async def test_a_client_resumes_over_secure_kcp() -> None:
    from kcprpc.testing import pair

    cfg = kcprpc.ClientConfig(
        heartbeat=kcprpc.HeartbeatConfig(interval=0.05, timeout=2.0),
        reconnect=kcprpc.ReconnectPolicy(initial=0.01, maximum=0.05),
    )
    async with pair([Demo()], link="kcp", transport=Transport(SecureWire(key=KEY)), client_config=cfg) as p:
        await p.client.stub(Demo, timeout=TIMEOUT).join(Req(name="arena"))
        sid = p.client.session_id
        back = asyncio.Event()
        p.client.on_reconnect = lambda _: back.set()
        await p.drop()
        await asyncio.wait_for(back.wait(), TIMEOUT)
        assert p.client.session_id == sid and p.client.resumes == 1 and p.client.rooms == {"arena"}


async def test_compat_mode_issues_no_token() -> None:
    wire = Transport(CompatWire(crypt="aes", key=KEY))
    server = kcprpc.Server([Demo()], "127.0.0.1", 0, transport=wire)
    host, port = await server.start()
    try:
        conn = await dial(host, port, wire)
        assert conn.channel_binding is None
        w = await hello(conn)
        assert "resume" not in w
        await conn.close()
    finally:
        await server.shutdown(grace=0)
