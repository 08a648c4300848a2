"""Connect errors over real loopback sockets: each case is distinct, as fast as the protocol can
tell, and names what to check, in ``kcp.dial``'s errors, in kcprpc's ``RpcError`` and in the CLI
(which says on stderr what it waits for, and stays quiet when the server answers at once).

Every wait is bounded (``asyncio.wait_for``, subprocess timeouts); the "no answer" cases use a
bound UDP socket that never answers, with a short timeout.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

from test_rpc_support import Demo

import kcp
import kcprpc
from kcp.secure import (
    HandshakeKeyMismatch,
    HandshakeNoAnswer,
    HandshakeRefused,
    HandshakeUnreachable,
    HandshakeWireMismatch,
    Reason,
    SecureConfig,
    generate_keypair,
)
from kcp.wirehint import HintCode, WireMismatch
from kcprpc import ClientConfig, CompatWire, RpcError, SecureWire, Status, Transport

ROOT = Path(__file__).resolve().parents[2]
BOUND = 10.0  # no case may take longer than this (a hang fails, it does not stall the suite)
SLOW = SecureConfig(handshake_timeout_ms=10_000)  # the cases that must not wait for the timeout
PRIV, PUB = generate_keypair()
_, OTHER_PUB = generate_keypair()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A bound UDP socket that never answers (not even ICMP: something listens)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on (the host answers ICMP port unreachable)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
async def secure_listener() -> AsyncIterator[kcp.Listener]:
    lis = await kcp.listen("127.0.0.1", 0, kcp.SecureWire(key="right", static_private_key=PRIV))
    async with lis:
        yield lis


@pytest.fixture
async def compat_listener() -> AsyncIterator[kcp.Listener]:
    lis = await kcp.listen("127.0.0.1", 0, kcp.CompatWire())
    async with lis:
        yield lis


async def _dial_error(port: int, wire: kcp.Wire) -> tuple[BaseException, float]:
    t0 = time.monotonic()
    with pytest.raises(Exception) as ei:
        await asyncio.wait_for(kcp.dial("127.0.0.1", port, wire), BOUND)
    return ei.value, time.monotonic() - t0


async def _connect_error(port: int, **kw: Any) -> tuple[RpcError, float]:
    t0 = time.monotonic()
    with pytest.raises(RpcError) as ei:
        await asyncio.wait_for(kcprpc.connect("127.0.0.1", port, **kw), BOUND)
    return ei.value, time.monotonic() - t0


# ---------------------------------------------------------------------------------- port refused


async def test_port_refused_at_once(closed_port: int) -> None:
    err, took = await _dial_error(closed_port, kcp.SecureWire(key="k", config=SLOW))
    assert isinstance(err, HandshakeUnreachable) and isinstance(err, ConnectionRefusedError)
    assert str(err) == f"handshake failed: connection refused (nothing listens on 127.0.0.1:{closed_port})"
    assert took < 2.0
    rpc, took = await _connect_error(closed_port, key="k", config=ClientConfig(connect_timeout=10))
    assert rpc.status is Status.UNAVAILABLE and "connection refused" in rpc.message and took < 2.0


# ------------------------------------------------------------------------------------- no answer


async def test_no_answer_says_so_after_the_timeout(silent_port: int) -> None:
    wire = kcp.SecureWire(key="k", config=SecureConfig(handshake_timeout_ms=300, handshake_retry_ms=100))
    err, took = await _dial_error(silent_port, wire)
    assert isinstance(err, HandshakeNoAnswer)
    assert str(err) == (
        f"handshake failed: no answer from the server at 127.0.0.1:{silent_port} within 0.3 s: "
        "is the server running and reachable over UDP (address, port, firewall)?"
    )
    assert 0.25 < took < 3.0


@pytest.mark.parametrize("mode", ["secure", "compat"])
async def test_no_answer_over_kcprpc_names_the_address(silent_port: int, mode: str) -> None:
    wire = SecureWire(key="k") if mode == "secure" else CompatWire()
    rpc, took = await _connect_error(
        silent_port, transport=Transport(wire), config=ClientConfig(connect_timeout=0.3)
    )
    assert rpc.status is Status.UNAVAILABLE
    assert (
        f"no answer from {'the server at ' if mode == 'secure' else ''}127.0.0.1:{silent_port} "
        in rpc.message
    )
    assert "within 0.3 s" in rpc.message and "reachable over UDP" in rpc.message
    assert took < 3.0


# ------------------------------------------------------------------------------------- wrong key


@pytest.mark.parametrize(
    ("wire", "code", "text"),
    [
        (dict(key="wrong"), HintCode.WRONG_KEY, "could not verify our handshake (check the passphrase/PSK"),
        (dict(server_public_key=OTHER_PUB), HintCode.WRONG_KEY, "could not verify our handshake"),
        (dict(key="right", server_public_key=PUB), None, "PSK mismatch"),  # the existing one-RTT case
    ],
)
async def test_wrong_key_fails_well_under_the_handshake_timeout(
    secure_listener: kcp.Listener, wire: dict[str, Any], code: HintCode | None, text: str
) -> None:
    port = secure_listener.address[1]
    if code is None:  # right pinned key, other PSK than the server's
        wire = dict(key="not right", server_public_key=PUB)
    err, took = await _dial_error(port, kcp.SecureWire(config=SLOW, **wire))
    assert isinstance(err, HandshakeKeyMismatch), err
    assert text in str(err) and f"127.0.0.1:{port}" in str(err)
    assert took < 1.0  # the timeout is 10 s
    assert len(secure_listener) == 0


async def test_a_key_mode_the_server_cannot_run_is_named() -> None:
    async with await kcp.listen("127.0.0.1", 0, kcp.SecureWire(key="pw")) as psk_only:
        err, took = await _dial_error(psk_only.address[1], kcp.SecureWire(server_public_key=PUB, config=SLOW))
        assert isinstance(err, HandshakeKeyMismatch) and took < 1.0
        assert "has no static key to pin: dial it with its passphrase/PSK" in str(err)
    async with await kcp.listen("127.0.0.1", 0, kcp.SecureWire(static_private_key=PRIV)) as key_only:
        err, took = await _dial_error(key_only.address[1], kcp.SecureWire(key="pw", config=SLOW))
        assert isinstance(err, HandshakeKeyMismatch) and took < 1.0
        assert "accepts no passphrase/PSK-only handshakes: pin its public key" in str(err)


async def test_wrong_key_over_kcprpc_is_unauthenticated_at_once() -> None:
    async with kcprpc.Server([Demo()], "127.0.0.1", 0, key="right") as server:
        port = server.address[1]  # type: ignore[index]
        rpc, took = await _connect_error(port, key="wrong", config=ClientConfig(connect_timeout=10))
        assert rpc.status is Status.UNAUTHENTICATED and took < 1.0
        assert rpc.message.startswith(f"secure handshake failed: wrong key: the server at 127.0.0.1:{port} ")
        async with kcprpc.connect("127.0.0.1", port, key="right") as client:  # the right key still works
            assert await asyncio.wait_for(client.health(), BOUND) == "SERVING"


async def test_a_server_with_hints_off_stays_silent() -> None:
    quiet = kcp.SecureWire(key="right", config=SecureConfig(hint_rate=0))
    async with await kcp.listen("127.0.0.1", 0, quiet) as lis:
        wire = kcp.SecureWire(
            key="wrong", config=SecureConfig(handshake_timeout_ms=300, handshake_retry_ms=100)
        )
        err, _ = await _dial_error(lis.address[1], wire)
        assert isinstance(err, HandshakeNoAnswer)
        assert lis.stats["secure_hints_sent"] == 0 and lis.stats["secure_bad_mac1"] >= 1


# -------------------------------------------------------------------------------- wrong wire mode


async def test_secure_client_to_a_compat_listener(compat_listener: kcp.Listener) -> None:
    port = compat_listener.address[1]
    err, took = await _dial_error(port, kcp.SecureWire(key="k", config=SLOW))
    assert isinstance(err, HandshakeWireMismatch) and took < 1.0
    assert str(err) == (
        f"handshake failed: wrong wire mode: the server at 127.0.0.1:{port} speaks kcp-go's wire "
        "(compat), not the secure wire: dial it with kcp.CompatWire (kcprpc: Transport(CompatWire(...)); "
        "CLI: --wire compat)"
    )
    assert compat_listener.stats["wire_hints_sent"] >= 1 and len(compat_listener) == 0


@pytest.mark.parametrize(
    ("crypt", "conv"),
    [
        ("none", None),
        ("aes", None),
        # without encryption a datagram starts with its conv: even one that looks like a secure type
        ("none", 0x123456C1),  # an "initiation" of another version
        ("none", 0x120101C1),  # ... of version 1, an unknown pattern
        ("none", 0x020201C1),  # ... NNpsk0 with AES-GCM: a bad mac1 (the server says "wrong key")
        ("none", 0x123456C2),
        ("none", 0x123456C4),  # like a hint, but longer than any hint
    ],
)
async def test_compat_client_to_a_secure_listener(
    secure_listener: kcp.Listener, crypt: str, conv: int | None
) -> None:
    port = secure_listener.address[1]
    session = await kcp.dial("127.0.0.1", port, kcp.CompatWire(crypt=crypt, key="x"), conv=conv)
    events: list[object] = []
    session.add_event_callback(events.append)
    session.write(bytes(400))  # the first datagram (as large as an initiation): answered with a hint
    await asyncio.wait_for(session.wait_closed(), BOUND)
    assert session.close_reason.startswith(
        f"wrong wire mode: the server at 127.0.0.1:{port} speaks the secure"
    )
    assert [type(e) for e in events] == [WireMismatch]
    assert session.endpoint_counters.wire_hints_received == 1
    assert secure_listener.stats["secure_hints_sent"] >= 1


@pytest.mark.parametrize("first", [0xC8, 0xC9])
async def test_a_default_conv_never_looks_like_a_transport_packet(
    secure_listener: kcp.Listener, first: int
) -> None:
    # a random conv whose first byte is a secure transport type would get a stateless reset, not a
    # hint, and the dial would end as "no answer": compat_conv moves it off those two values
    def rng(n: int) -> bytes:
        return bytes([first]) + os.urandom(n - 1)

    session = await kcp.dial("127.0.0.1", secure_listener.address[1], kcp.CompatWire(), rng=rng)
    assert session.conv & 0xFF == first ^ 0x10
    session.write(bytes(400))
    await asyncio.wait_for(session.wait_closed(), BOUND)
    assert session.close_reason.startswith("wrong wire mode:") and "speaks the secure" in session.close_reason
    assert session.endpoint_counters.wire_hints_received == 1


async def test_wrong_wire_mode_over_kcprpc_both_ways() -> None:
    async with kcprpc.Server([Demo()], "127.0.0.1", 0, key="k") as secure:
        port = secure.address[1]  # type: ignore[index]
        compat = Transport(CompatWire(crypt="aes", key="x"))
        rpc, took = await _connect_error(port, transport=compat, config=ClientConfig(connect_timeout=10))
        assert rpc.status is Status.FAILED_PRECONDITION and took < 1.0
        assert rpc.message == (
            f"wrong wire mode: the server at 127.0.0.1:{port} speaks the secure wire, not kcp-go's: dial it "
            "with kcp.SecureWire (kcprpc: the default wire; CLI: --wire secure)"
        )
    async with kcprpc.Server([Demo()], "127.0.0.1", 0, transport=Transport(CompatWire())) as compat:
        port = compat.address[1]  # type: ignore[index]
        rpc, took = await _connect_error(port, key="k", config=ClientConfig(connect_timeout=10))
        assert rpc.status is Status.FAILED_PRECONDITION and took < 1.0
        assert "speaks kcp-go's wire (compat), not the secure wire" in rpc.message
        async with kcprpc.connect("127.0.0.1", port, transport=Transport(CompatWire())) as client:
            assert await asyncio.wait_for(client.health(), BOUND) == "SERVING"  # the right mode works


# ---------------------------------------------------------------------------- refused parameters


async def test_refused_parameters_name_the_parameter_both_values_and_what_to_check() -> None:
    wire = kcp.SecureWire(key="k", config=SecureConfig(min_mtu=1300))
    async with await kcp.listen("127.0.0.1", 0, wire) as lis:
        port = lis.address[1]
        t0 = time.monotonic()
        with pytest.raises(HandshakeRefused) as ei:
            await asyncio.wait_for(
                kcp.dial(
                    "127.0.0.1",
                    port,
                    kcp.SecureWire(key="k", config=SLOW),
                    session=kcp.SessionConfig(mtu=1000),
                ),
                BOUND,
            )
        assert ei.value.code == Reason.PARAMS_REFUSED and time.monotonic() - t0 < 1.0
        assert str(ei.value) == (
            f"handshake refused by the server at 127.0.0.1:{port}: params refused: MTU 1000 is below the "
            "server's minimum 1300 (make the client's transport settings fit the server's policy)"
        )
        rpc, _ = await _connect_error(
            port, transport=Transport(SecureWire(key="k"), session=kcp.SessionConfig(mtu=1000))
        )
        assert rpc.status is Status.FAILED_PRECONDITION
        assert rpc.message == "secure " + str(ei.value)


# ------------------------------------------------------------------------------------------- CLI


async def _cli(*argv: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kcprpc", *argv, cwd=ROOT,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_says_what_it_waits_for_then_the_error(silent_port: int) -> None:
    code, out, err = await _cli("ping", f"127.0.0.1:{silent_port}", "--key", "k", "--connect-timeout", "2.5")
    assert code == 64 + int(Status.UNAVAILABLE)
    assert out == ""  # scripts parse stdout
    lines = err.splitlines()
    assert lines[0] == f"waiting for the secure handshake with 127.0.0.1:{silent_port} (1 s of 2.5 s)..."
    assert lines[1] == f"waiting for the secure handshake with 127.0.0.1:{silent_port} (2 s of 2.5 s)..."
    assert lines[2].startswith(
        f"UNAVAILABLE: secure handshake failed: no answer from the server at 127.0.0.1:{silent_port}"
    )
    assert len(lines) == 3


async def test_cli_is_quiet_when_the_server_answers_and_fast_on_a_wrong_key() -> None:
    async with kcprpc.Server([Demo()], "127.0.0.1", 0, key="k") as server:
        port = server.address[1]  # type: ignore[index]
        code, out, err = await _cli("ping", f"127.0.0.1:{port}", "--key", "k", "-c", "1")
        assert code == 0, err
        assert "SERVING" in out and err == ""
        t0 = time.monotonic()
        code, out, err = await _cli("ping", f"127.0.0.1:{port}", "--key", "wrong", "--connect-timeout", "10")
        assert code == 64 + int(Status.UNAUTHENTICATED) and out == ""
        assert (
            err.startswith("UNAUTHENTICATED: secure handshake failed: wrong key: ") and "waiting" not in err
        )
        assert time.monotonic() - t0 < 8.0  # the interpreter's start-up, not the 10 s connect timeout


# ------------------------------------------------------------------------------------- fallbacks


@pytest.mark.parametrize("mode", ["secure", "compat"])
async def test_fallbacks_connect_to_the_first_node_that_answers(
    closed_port: int, silent_port: int, mode: str
) -> None:
    """``kcprpc.connect(fallbacks=)``: a refused port and a silent one are passed over, in order,
    and the third address serves; every call then goes there."""
    wire = SecureWire(key="k") if mode == "secure" else CompatWire()
    server = kcprpc.Server([Demo()], "127.0.0.1", 0, transport=Transport(wire))
    _, port = await server.start()
    try:
        t0 = time.monotonic()
        client = await asyncio.wait_for(
            kcprpc.connect(
                "127.0.0.1", closed_port, transport=Transport(wire), config=ClientConfig(connect_timeout=0.3),
                fallbacks=[("127.0.0.1", silent_port), ("127.0.0.1", port)],
            ),
            BOUND,
        )  # fmt: skip
        try:
            assert time.monotonic() - t0 < 5.0  # the silent node costs one connect_timeout
            assert await client.stub(Demo, timeout=5).add(2, 3) == 5
            assert len(server.sessions) == 1
        finally:
            await client.close()
    finally:
        await server.shutdown(grace=0)


async def test_fallbacks_all_down_fail_with_the_last_nodes_error(closed_port: int) -> None:
    rpc, took = await _connect_error(closed_port, key="k", fallbacks=[("127.0.0.1", closed_port)])
    assert rpc.status is Status.UNAVAILABLE and "connection refused" in rpc.message and took < 2.0


def test_fallbacks_must_be_host_port_pairs() -> None:
    with pytest.raises(kcprpc.UsageError, match=r"fallbacks are \(host, port\) pairs, not '127.0.0.1:9000'"):
        kcprpc.connect("127.0.0.1", 9000, key="k", fallbacks=["127.0.0.1:9000"])  # type: ignore[list-item]
