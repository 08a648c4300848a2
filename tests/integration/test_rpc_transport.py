"""kcprpc's transport description: ``connect(key=|transport=)`` and ``Server(key=|transport=)``.

What a user can still get wrong is a :class:`kcprpc.UsageError` naming the problem, raised when the
client or server is made (before any I/O); :func:`kcprpc.config.effective_transport` completes a
transport in one place (the anonymous PSK, the mux version offered, the handshake timeout); and what
was asked for reaches KCP over loopback (FEC, MTU, windows, the mux version, socket options).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

import pytest
from test_rpc_support import Demo, Req

import kcprpc
from kcp.secure import SecureConfig, generate_keypair
from kcprpc import (
    ClientConfig,
    CompatWire,
    IOOptions,
    MuxConfig,
    RpcError,
    SecureWire,
    SessionConfig,
    Status,
    Transport,
    UsageError,
)
from kcprpc.config import ANONYMOUS_PSK, RPC_MUX_CONFIG, effective_transport

TIMEOUT = 20.0
KEY = "transport description"


def _session(client: kcprpc.Client) -> Any:
    link = client.lifecycle.link
    assert link is not None
    return link.conn.datagrams  # type: ignore[attr-defined]  # the kcp.KCPSession under the mux


# -- misuse: a clear UsageError, at once ------------------------------------------------------------


def test_key_and_transport_together_are_refused_naming_both() -> None:
    t = Transport(SecureWire(key=KEY))
    with pytest.raises(UsageError, match=r"kcprpc\.connect: give key= or transport=, not both"):
        kcprpc.connect("127.0.0.1", 1, key=KEY, transport=t)
    with pytest.raises(UsageError, match=r"kcprpc\.Server: give key= or transport=, not both"):
        kcprpc.Server([], "127.0.0.1", 0, key=KEY, transport=t)


def test_a_transport_of_the_wrong_type_is_refused() -> None:
    with pytest.raises(UsageError, match=r"transport= must be a kcprpc\.Transport, not SecureWire"):
        kcprpc.connect("127.0.0.1", 1, transport=SecureWire(key=KEY))  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=r"transport= must be a kcprpc\.Transport, not dict"):
        kcprpc.Server([], "127.0.0.1", 0, transport={"mode": "compat"})  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=r"Transport\.wire must be a CompatWire or SecureWire, not str"):
        Transport("secure")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=r"Transport\.mux must be a MuxConfig, not SessionConfig"):
        Transport(mux=SessionConfig())  # type: ignore[arg-type]


def test_a_bad_key_shorthand_is_a_kcprpc_usage_error() -> None:
    with pytest.raises(UsageError, match="32-byte PSK"):
        kcprpc.connect("127.0.0.1", 1, key=b"short")
    with pytest.raises(UsageError, match="must not be empty"):
        kcprpc.Server([], "127.0.0.1", 0, key="")


def test_server_options_given_to_connect_are_refused() -> None:
    wire = SecureWire(key=KEY, authorize=lambda token, pub, addr: None)
    with pytest.raises(UsageError, match=r"kcprpc\.connect: authorize= is a server option"):
        kcprpc.connect("127.0.0.1", 1, transport=Transport(wire))
    priv, _ = generate_keypair()  # an identity, but neither a key nor a pinned server: nothing to check
    with pytest.raises(UsageError, match=r"kcprpc\.connect: secure mode needs server_public_key="):
        kcprpc.connect("127.0.0.1", 1, transport=Transport(SecureWire(static_private_key=priv)))


def test_client_options_given_to_server_are_refused() -> None:
    _, pub = generate_keypair()
    for wire in (SecureWire(key=KEY, server_public_key=pub), SecureWire(key=KEY, token="t")):
        with pytest.raises(
            UsageError, match=r"kcprpc\.Server: server_public_key= and token= are client options"
        ):
            kcprpc.Server([], "127.0.0.1", 0, transport=Transport(wire))


def test_a_secure_config_without_the_mux_version_is_refused() -> None:
    wire = SecureWire(key=KEY).with_config(mux_versions=(1,))
    with pytest.raises(UsageError, match=r"mux_versions=\(1,\) does not hold the mux's version 2"):
        kcprpc.connect("127.0.0.1", 1, transport=Transport(wire))
    with pytest.raises(UsageError, match="mux_versions"):
        kcprpc.Server([], "127.0.0.1", 0, transport=Transport(wire))
    # the same config with a v1 mux is consistent
    assert kcprpc.Server([], transport=Transport(wire, mux=MuxConfig(version=1))).wire_mode == "secure"


def test_server_reads_its_wire_from_the_transport() -> None:
    priv, pub = generate_keypair()
    server = kcprpc.Server([], transport=Transport(SecureWire(static_private_key=priv)))
    assert (server.wire_mode, server.public_key) == ("secure", pub)
    assert server.transport.wire.static_private_key == priv
    compat = kcprpc.Server([], transport=Transport(CompatWire(crypt="aes", key="k")))
    assert (compat.wire_mode, compat.public_key) == ("compat", None)
    shorthand = kcprpc.Server([], key=KEY)
    assert shorthand.transport == Transport(SecureWire(key=KEY))
    assert kcprpc.Server([]).transport == Transport()  # secure, anonymous


# -- effective_transport: the one place that completes a transport ---------------------------------


def test_an_endpoint_with_no_key_runs_the_public_psk() -> None:
    client = effective_transport(Transport(), side="client").wire
    server = effective_transport(Transport(), side="server").wire
    assert isinstance(client, SecureWire) and isinstance(server, SecureWire)
    assert client.key == server.key == ANONYMOUS_PSK
    assert client.config is not None and client.config.reset_key is None
    assert server.config is not None and server.config.reset_key is not None  # resets stay unforgeable
    assert server.config.reset_key == effective_transport(Transport(), side="server").wire.config.reset_key  # type: ignore[union-attr]
    priv, pub = generate_keypair()
    pinned = effective_transport(Transport(SecureWire(server_public_key=pub)), side="client").wire
    assert pinned.key is None  # a pinned server authenticates: not anonymous
    identified = effective_transport(Transport(SecureWire(static_private_key=priv)), side="server").wire
    assert identified.key is None and identified.config is not None and identified.config.reset_key is None


def test_the_mux_version_is_the_one_offered() -> None:
    for version in (1, 2):
        t = Transport(SecureWire(key=KEY), mux=MuxConfig(version=version))
        for side in ("client", "server"):
            wire = effective_transport(t, side=side).wire  # type: ignore[arg-type]
            assert isinstance(wire, SecureWire) and wire.config is not None
            assert wire.config.mux_versions == (version,)


def test_connect_timeout_is_the_handshake_timeout_unless_the_wire_sets_one() -> None:
    t = Transport(SecureWire(key=KEY))
    run = effective_transport(t, side="client", handshake_timeout=0.25)
    assert run.wire.config.handshake_timeout_ms == 250  # type: ignore[union-attr]
    own = Transport(SecureWire(key=KEY).with_config(handshake_timeout_ms=1234))
    run = effective_transport(own, side="client", handshake_timeout=0.25)
    assert run.wire.config.handshake_timeout_ms == 1234  # type: ignore[union-attr]


def test_effective_transport_keeps_everything_else_and_is_idempotent() -> None:
    t = Transport(
        SecureWire(key=KEY, fec=(4, 2), config=SecureConfig(suites=("chachapoly",))),
        session=SessionConfig(mtu=1200, snd_wnd=64),
        io=IOOptions(reuse_port=True),
    )
    run = effective_transport(t, side="server")
    assert (run.session, run.io, run.mux) == (t.session, t.io, RPC_MUX_CONFIG)
    assert isinstance(run.wire, SecureWire) and run.wire.fec == (4, 2) and run.wire.key == KEY
    assert run.wire.config is not None and run.wire.config.suites == ("chachapoly",)
    assert effective_transport(run, side="server") == run
    compat = Transport(CompatWire(crypt="aes", key="k", fec=(3, 1)))
    assert effective_transport(compat, side="client") is compat  # nothing to add to kcp-go's format


# -- what was asked for reaches KCP (loopback, bounded) --------------------------------------------


async def test_secure_fec_mtu_windows_and_mux_version_are_negotiated_as_asked() -> None:
    served = Transport(
        SecureWire(key=KEY, fec=(4, 2)),
        session=SessionConfig(mtu=1200, snd_wnd=64, rcv_wnd=64),
        mux=MuxConfig(version=1),
    )
    asked = Transport(
        SecureWire(key=KEY, fec=(4, 2)),
        session=SessionConfig(mtu=1100, snd_wnd=256, rcv_wnd=256),
        mux=MuxConfig(version=1),
    )
    async with kcprpc.Server([Demo()], "127.0.0.1", 0, transport=served) as server:
        host, port = server.address  # type: ignore[misc]
        async with kcprpc.connect(host, port, transport=asked) as client:
            assert (await client.stub(Demo, timeout=TIMEOUT).hello(Req(name="n"))).text == "hello n"
            params = _session(client).secure.params
            assert (params.data_shards, params.parity_shards) == (4, 2)
            assert params.mtu == 1100  # the client's smaller proposal
            assert (params.snd_wnd, params.rcv_wnd) == (64, 64)  # capped by the server's policy
            assert params.mux_version == 1  # as both Transports' mux asked, not the default 2
            assert client.lifecycle.link.conn.mux.config.version == 1  # type: ignore[union-attr]


async def test_compat_fec_and_mtu_reach_the_session() -> None:
    t = Transport(CompatWire(crypt="aes", key="k", fec=(3, 1)), session=SessionConfig(mtu=1000))
    async with kcprpc.Server([Demo()], "127.0.0.1", 0, transport=t) as server:
        host, port = server.address  # type: ignore[misc]
        async with kcprpc.connect(host, port, transport=t) as client:
            d = client.stub(Demo, timeout=TIMEOUT)
            assert [bytes(b) for b in [await d.echo(bytes([i]) * 3000) for i in range(8)]] == [
                bytes([i]) * 3000 for i in range(8)
            ]
            local = client.transport_stats()
            assert local["fec_parity_shards"] > 0  # the server sends parity: FEC 3/1 on both ends
            assert 0 < local["mtu"] <= 1000


async def test_the_wires_handshake_timeout_beats_connect_timeout() -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:  # a server that never answers
        silent.bind(("127.0.0.1", 0))
        host, port = silent.getsockname()
        wire = Transport(SecureWire(key=KEY).with_config(handshake_timeout_ms=250))
        with pytest.raises(RpcError) as ei:
            await kcprpc.connect(host, port, transport=wire, config=ClientConfig(connect_timeout=10.0))
        assert ei.value.status is Status.UNAVAILABLE
        assert f"no answer from the server at {host}:{port} within 0.25 s" in ei.value.message


async def test_io_options_reach_the_socket() -> None:
    shared = Transport(SecureWire(key=KEY), io=IOOptions(reuse_port=True))
    async with kcprpc.Server([Demo()], "127.0.0.1", 0, transport=shared) as first:
        _, port = first.address  # type: ignore[misc]
        # SO_REUSEPORT on both: a second server binds the same port
        async with kcprpc.Server([Demo()], "127.0.0.1", port, transport=shared) as second:
            assert second.address == ("127.0.0.1", port)
        with pytest.raises(OSError):  # without it, the port is taken
            await kcprpc.Server([Demo()], "127.0.0.1", port, key=KEY).start()


async def test_connecting_where_nothing_listens_fails_at_once_saying_so() -> None:
    import socket
    import time

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(RpcError) as ei:  # connect_timeout is 5 s: this must not wait for it
        await kcprpc.connect("127.0.0.1", port, key="k", config=ClientConfig(connect_timeout=5.0))
    assert time.monotonic() - t0 < 2.0
    assert ei.value.status is Status.UNAVAILABLE
    assert f"connection refused (nothing listens on 127.0.0.1:{port})" in ei.value.message
