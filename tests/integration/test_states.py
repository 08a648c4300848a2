"""Named states: every change the KCP session, the secure connection and the client handshake make
is in its transition table, and an illegal one is an assertion (a bug), never a silent change."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

import kcp
from kcp.demo import echo
from kcp.secure import HandshakeConfig
from kcp.secure.connection import CONNECTION_TRANSITIONS, ConnectionState
from kcp.secure.handshake import CLIENT_TRANSITIONS, ClientState, SecureClient
from kcp.secure.testing import run_handshake
from kcp.session import SESSION_TRANSITIONS, KCPSession, SessionState

TIMEOUT = 10.0


def _spy(monkeypatch: pytest.MonkeyPatch, cls: Any, read: Any) -> list[tuple[Any, Any]]:
    """Record every (old, new) state change ``cls`` objects make (through their ``_set_state``)."""
    seen: list[tuple[Any, Any]] = []
    original = cls._set_state

    def spy(self: Any, new: Any) -> None:
        old = read(self)
        original(self, new)  # raises on an illegal change: then nothing changed, nothing recorded
        seen.append((old, new))

    monkeypatch.setattr(cls, "_set_state", spy)
    return seen


async def test_session_states_follow_the_table() -> None:
    # KCPSession is a native class in the compiled build (its methods cannot be patched): its
    # states are read after each step instead of spied on
    accepted: list[KCPSession] = []

    async def on_accept(s: KCPSession) -> None:
        accepted.append(s)
        await echo(s)

    async with await kcp.listen("127.0.0.1", 0, on_accept=on_accept) as lis:
        lingering = await kcp.dial("127.0.0.1", lis.address[1])
        states = [lingering.state]
        assert lingering.state is SessionState.OPEN
        lingering.write(bytes(200_000))  # unacknowledged data: close() lingers
        lingering.close()
        states.append(lingering.state)
        assert lingering.state is SessionState.CLOSING and lingering.is_closing() and not lingering.closed
        await asyncio.wait_for(lingering.wait_closed(), TIMEOUT)
        states.append(lingering.state)
        assert lingering.state is SessionState.CLOSED
        seen = _changes(states)

        aborted = await kcp.dial("127.0.0.1", lis.address[1])
        states = [aborted.state]
        aborted.write(b"x")
        assert await asyncio.wait_for(aborted.readexactly(1), TIMEOUT) == b"x"
        aborted.abort()
        states.append(aborted.state)
        assert aborted.state is SessionState.CLOSED
        aborted.close()  # nothing left to do: no transition
        states.append(aborted.state)
        seen += _changes(states)
        with pytest.raises(AssertionError, match="illegal transition"):
            aborted._set_state(SessionState.OPEN)
        assert aborted.state is SessionState.CLOSED  # the illegal change did not happen
    assert seen == [
        (SessionState.OPEN, SessionState.CLOSING),
        (SessionState.CLOSING, SessionState.CLOSED),
        (SessionState.OPEN, SessionState.CLOSED),  # abort
    ]
    assert len(accepted) == 2 and all(s.state is SessionState.CLOSED for s in accepted)  # the listener's
    assert all(new in SESSION_TRANSITIONS[old] for old, new in seen)


def _changes(states: list[Any]) -> list[tuple[Any, Any]]:
    """The (old, new) changes in a sequence of observed states."""
    return [(a, b) for a, b in itertools.pairwise(states) if a is not b]


def test_secure_connection_and_client_states_follow_their_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    # SecureConnection is a native class in the compiled build (its methods cannot be patched):
    # its states are read after each step instead of spied on
    client_seen = _spy(monkeypatch, SecureClient, lambda c: c.state)
    run = run_handshake(HandshakeConfig(passphrase="states"), HandshakeConfig(passphrase="states"))
    assert run.client.state is ClientState.ESTABLISHED and run.client_conn is not None
    assert client_seen == [
        (ClientState.IDLE, ClientState.INITIATING),
        (ClientState.INITIATING, ClientState.ESTABLISHED),
    ]
    conn = run.client_conn
    assert run.server_conn is not None and run.server_conn.state is ConnectionState.OPEN
    states = [conn.state]
    assert conn.state is ConnectionState.OPEN and conn.is_open
    conn.close(0, "bye", run.now)
    states.append(conn.state)
    assert conn.state is ConnectionState.CLOSED and not conn.is_open
    conn.close(0, "again", run.now)  # closing twice is no transition (CLOSED -> CLOSED would raise)
    states.append(conn.state)
    conn_seen = _changes(states)
    assert conn_seen == [(ConnectionState.OPEN, ConnectionState.CLOSED)]
    with pytest.raises(AssertionError, match="illegal transition"):
        conn._set_state(ConnectionState.OPEN)
    assert conn.state is ConnectionState.CLOSED  # the illegal change did not happen

    failed = run_handshake(
        HandshakeConfig(passphrase="one"), HandshakeConfig(passphrase="other"), max_ms=20_000
    )
    assert failed.client.state is ClientState.FAILED and failed.client.error is not None
    assert client_seen[-1] == (ClientState.INITIATING, ClientState.FAILED)
    for old, new in client_seen:
        assert new in CLIENT_TRANSITIONS[old]
    for old, new in conn_seen:
        assert new in CONNECTION_TRANSITIONS[old]
    assert ClientState.ESTABLISHED == "established"  # str-valued: logs and old comparisons still read
