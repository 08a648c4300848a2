"""The mux's named states: the transition tables themselves, and the core walking through them.

Each stream of a :class:`MuxCore` is in one :class:`StreamState`; the session is in one
:class:`SessionState`. These tests pin the tables (what each state allows) and check that the core
moves streams only along them, including the ends that come from outside the FIN exchange (abort,
session death) and the peer events a state does not allow (dropped and counted).
"""

from __future__ import annotations

import pytest

from kcprpc.mux import MuxClosedError, MuxConfig, MuxCore, MuxStreamClosedError, MuxUsageError
from kcprpc.mux.core import StreamEnded, StreamRecord, StreamReleased
from kcprpc.mux.frame import CMD_FIN, decode_frames, encode_frame
from kcprpc.mux.state import (
    FIN_PENDING,
    FIN_UNSENT,
    LIVE,
    PEER_SENDING,
    READ_EOF,
    SESSION_TRANSITIONS,
    STREAM_TRANSITIONS,
    WRITABLE,
    SessionEvent,
    SessionState,
    StreamEvent,
    StreamState,
    next_stream_state,
)

S = StreamState
E = StreamEvent
TERMINAL = (S.CLOSED, S.RESET, S.DEAD)


def pair(cfg: MuxConfig | None = None) -> tuple[MuxCore, MuxCore]:
    cfg = cfg or MuxConfig()
    return MuxCore(cfg, client=True), MuxCore(cfg, client=False)


def move(src: MuxCore, dst: MuxCore) -> None:
    while data := src.data_to_send():
        dst.receive_data(data, 0)


def opened(client: MuxCore, server: MuxCore) -> tuple[StreamRecord, StreamRecord]:
    """A stream opened by the client, and the server's record of it."""
    c = client.open_stream()
    move(client, server)
    s = server.get_stream(c.stream_id)
    assert s is not None
    server.events()
    return c, s


# -- the tables ------------------------------------------------------------------------------------


def test_state_sets_derived_from_the_table() -> None:
    assert set(WRITABLE) == {S.OPEN, S.HALF_CLOSED_REMOTE}
    assert set(PEER_SENDING) == {S.OPEN, S.CLOSING_LOCAL, S.HALF_CLOSED_LOCAL}
    assert set(FIN_PENDING) == {S.CLOSING_LOCAL, S.CLOSING}
    assert set(FIN_UNSENT) == {S.OPEN, S.HALF_CLOSED_REMOTE, S.CLOSING_LOCAL, S.CLOSING}
    assert set(LIVE) == set(S) - set(TERMINAL)
    assert set(READ_EOF) == {S.HALF_CLOSED_REMOTE, S.CLOSING, S.CLOSED}


def test_terminal_states_allow_only_the_idempotent_local_closes() -> None:
    for state in TERMINAL:
        allowed = {e for e in E if (state, e) in STREAM_TRANSITIONS}
        assert allowed == {E.CLOSE, E.ABORT}, state
        assert STREAM_TRANSITIONS[(state, E.CLOSE)] is state
        assert STREAM_TRANSITIONS[(state, E.ABORT)] is S.RESET


def test_every_state_is_reachable_from_open_and_the_peer_fin_leads_to_eof() -> None:
    seen = {S.OPEN}
    todo = [S.OPEN]
    while todo:
        state = todo.pop()
        for e in E:
            nxt = STREAM_TRANSITIONS.get((state, e))
            if nxt is not None and nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    assert seen == set(S)
    for (state, event), nxt in STREAM_TRANSITIONS.items():
        if event is E.RECV_FIN:
            assert state in PEER_SENDING and nxt in READ_EOF
        if event is E.SESSION_END:
            assert state in LIVE and nxt is (S.CLOSED if state in READ_EOF else S.DEAD)


def test_a_local_event_the_state_forbids_raises_naming_stream_state_and_event() -> None:
    with pytest.raises(MuxUsageError, match=r"stream 7 is open: fin-sent is not allowed"):
        next_stream_state(S.OPEN, E.FIN_SENT, 7)
    assert next_stream_state(S.HALF_CLOSED_REMOTE, E.CLOSE, 7) is S.CLOSING


def test_session_table_is_total_and_closed_absorbs() -> None:
    for state in SessionState:
        for event in SessionEvent:
            if event in (SessionEvent.OPEN_STREAM, SessionEvent.WRITE):
                assert ((state, event) in SESSION_TRANSITIONS) == (state is SessionState.OPEN)
            else:
                assert (state, event) in SESSION_TRANSITIONS
    for event in (SessionEvent.CLOSE, SessionEvent.TERMINATE):
        assert SESSION_TRANSITIONS[(SessionState.CLOSED, event)] is SessionState.CLOSED


# -- the core walking the tables -------------------------------------------------------------------


def test_local_close_first_walks_closing_local_half_closed_local_closed() -> None:
    client, server = pair()
    c, s = opened(client, server)
    client.send(c, b"x" * 10)
    client.close_stream(c)
    assert c.state is S.CLOSING_LOCAL  # FIN waits behind the 10 bytes
    move(client, server)
    assert c.state is S.HALF_CLOSED_LOCAL
    assert s.state is S.HALF_CLOSED_REMOTE
    assert server.read(s) == b"x" * 10 and s.at_eof
    server.send(s, b"reply")  # the server's direction is still open
    server.close_stream(s)
    assert s.state is S.CLOSING  # our FIN waits behind "reply"
    move(server, client)
    assert s.state is S.CLOSED  # FIN both ways: out of the table
    assert server.get_stream(s.stream_id) is None
    assert c.state is S.CLOSED and client.num_streams == 0
    assert client.read(c) == b"reply" and c.at_eof
    assert StreamReleased(c.stream_id) in client.events()


def test_peer_close_first_then_local_close_with_pending_data_walks_closing() -> None:
    client, server = pair()
    c, s = opened(client, server)
    client.close_stream(c)
    move(client, server)
    assert s.state is S.HALF_CLOSED_REMOTE
    server.send(s, b"tail")
    server.close_stream(s)
    assert s.state is S.CLOSING  # the peer's FIN came; ours waits behind "tail"
    assert server.get_stream(s.stream_id) is s
    out = server.data_to_send()
    assert s.state is S.CLOSED and server.get_stream(s.stream_id) is None
    frames, _ = decode_frames(out, 1)
    assert [(f.cmd, f.data) for f in frames] == [(2, b"tail"), (CMD_FIN, b"")]


def test_write_after_close_raises_naming_the_state_and_close_is_idempotent() -> None:
    client, server = pair()
    c, _ = opened(client, server)
    client.send(c, b"queued")
    client.close_stream(c)
    client.close_stream(c)  # idempotent: one FIN
    with pytest.raises(
        MuxStreamClosedError, match=r"stream 3 was closed for writing \(it is closing-local\)"
    ):
        client.send(c, b"more")
    frames, _ = decode_frames(client.data_to_send(), 1)
    assert [f.cmd for f in frames].count(CMD_FIN) == 1
    assert client.counters["fin_out"] == 1


def test_duplicate_fin_from_the_peer_is_dropped_and_counted() -> None:
    client, server = pair()
    c, s = opened(client, server)
    fin = encode_frame(1, CMD_FIN, c.stream_id)
    server.receive_data(fin, 0)
    assert server.events() == [StreamEnded(c.stream_id)]
    server.receive_data(fin, 0)
    assert server.events() == []  # no second StreamEnded
    assert s.state is S.HALF_CLOSED_REMOTE
    assert server.counters["duplicate_fin"] == 1 and server.counters["fin_in"] == 2
    assert not server.closed


def test_session_death_ends_each_live_stream_by_what_was_read_of_the_peer() -> None:
    client, server = pair()
    a, sa = opened(client, server)
    b, sb = opened(client, server)
    client.send(a, b"unread")
    client.close_stream(b)
    move(client, server)
    assert (sa.state, sb.state) == (S.OPEN, S.HALF_CLOSED_REMOTE)
    server.connection_lost(None)
    assert server.state is SessionState.CLOSED
    assert (sa.state, sb.state) == (S.DEAD, S.CLOSED)
    assert server.read(sa) == b"unread"  # DEAD: buffered data first ...
    with pytest.raises(MuxClosedError, match="EOF"):
        server.read(sa)  # ... then the session's error
    assert server.read(sb) == b"" and sb.at_eof  # CLOSED: the peer's FIN came before the death
    server.close_stream(sa)  # still allowed, changes nothing
    assert sa.state is S.DEAD


def test_abort_resets_from_any_state_and_reads_then_raise() -> None:
    client, server = pair()
    c, s = opened(client, server)
    client.close_stream(c)
    move(client, server)
    server.abort_stream(s)
    assert s.state is S.RESET and server.get_stream(s.stream_id) is None
    with pytest.raises(MuxStreamClosedError, match="aborted"):
        server.read(s)
    with pytest.raises(MuxStreamClosedError, match=r"\(it is reset\)"):
        server.send(s, b"x")
    server.abort_stream(s)  # idempotent
    assert server.counters["fin_out"] == 1 and server.counters["streams_released"] == 1


def test_abort_while_the_bucket_is_empty_gives_every_token_back() -> None:
    """Input held back behind an empty bucket may carry more data for the stream being aborted:
    the stream leaves the table before its tokens come back, so that data is dropped as for an
    unknown stream instead of landing in the aborted stream's buffer and keeping tokens forever."""
    client, server = pair(MuxConfig(max_receive_buffer=100, max_stream_buffer=100))
    c, s = opened(client, server)
    client.send(c, b"a" * 100)
    move(client, server)
    client.send(c, b"b" * 50)
    move(client, server)
    assert server.bucket == 0 and server.buffered_input == 58  # one PSH held back
    server.abort_stream(s)
    assert server.bucket == 100  # 50 of these were lost before
    assert server.counters["dropped_unknown_stream"] == 1 and server.counters["bytes_in"] == 100
    assert server.wants_read


def test_session_close_walks_closing_then_closed() -> None:
    client, server = pair()
    c, s = opened(client, server)
    server.close()
    assert server.state is SessionState.CLOSING
    assert s.state is S.HALF_CLOSED_LOCAL  # FIN queued and, nothing pending, sent
    with pytest.raises(MuxClosedError, match="session is closing"):
        server.open_stream()
    late = client.open_stream()  # the peer may still open one; we may not write to it
    move(client, server)
    s2 = server.get_stream(late.stream_id)
    assert s2 is not None and s2.state is S.OPEN
    with pytest.raises(MuxClosedError, match="session is closing"):
        server.send(s2, b"x")
    server.terminate()
    assert server.state is SessionState.CLOSED and server.closed
    with pytest.raises(MuxClosedError, match="closed locally"):
        server.send(s2, b"x")
    assert c.state is S.OPEN  # the client has seen nothing yet
