"""The sans-I/O mux core: ids, framing, token bucket, v2 windows, keepalive, FIN, hostile input.

Time is injected (``now`` in ms); nothing here runs an event loop.
"""

from __future__ import annotations

import pytest

from kcprpc.mux import MuxClosedError, MuxConfig, MuxCore, MuxStreamClosedError, MuxUsageError
from kcprpc.mux.core import (
    ConnectionTerminated,
    DataReceived,
    StreamEnded,
    StreamOpened,
    StreamReleased,
    WindowUpdated,
)
from kcprpc.mux.errors import MuxKeepaliveTimeoutError
from kcprpc.mux.frame import (
    CMD_FIN,
    CMD_NOP,
    CMD_PSH,
    CMD_SYN,
    CMD_UPD,
    INITIAL_PEER_WINDOW,
    SmuxFrame,
    decode_frames,
    encode_frame,
    encode_upd,
)


def frames(wire: bytes, version: int = 1) -> list[SmuxFrame]:
    out, rest = decode_frames(wire, version)
    assert rest == b""
    return out


def pair(cfg: MuxConfig | None = None) -> tuple[MuxCore, MuxCore]:
    cfg = cfg or MuxConfig()
    return MuxCore(cfg, client=True), MuxCore(cfg, client=False)


def move(src: MuxCore, dst: MuxCore, now: int = 0) -> int:
    """Move everything src has to send into dst; return the byte count."""
    total = 0
    while data := src.data_to_send():
        total += len(data)
        dst.receive_data(data, now)
    return total


def settle(a: MuxCore, b: MuxCore, now: int = 0) -> None:
    while move(a, b, now) + move(b, a, now):
        pass


def test_stream_ids_follow_smux_parity() -> None:
    client, server = pair()
    # smux starts nextStreamID at 1 (client) or 0 (server) and adds 2 before each use
    assert [client.open_stream().stream_id for _ in range(3)] == [3, 5, 7]
    assert [server.open_stream().stream_id for _ in range(3)] == [2, 4, 6]


def test_open_sends_syn_and_peer_gets_stream_opened() -> None:
    client, server = pair()
    st = client.open_stream()
    wire = client.data_to_send()
    assert frames(wire) == [SmuxFrame(1, CMD_SYN, 3)]
    server.receive_data(wire, 0)
    assert server.events() == [StreamOpened(3)]
    assert server.get_stream(3) is not None
    assert client.get_stream(st.stream_id) is st


def test_payload_split_at_max_frame_size() -> None:
    cfg = MuxConfig(max_frame_size=1000)
    client, _ = pair(cfg)
    st = client.open_stream()
    client.data_to_send()
    client.send(st, b"a" * 2500)
    got = frames(client.data_to_send())
    assert [(f.cmd, len(f.data)) for f in got] == [(CMD_PSH, 1000), (CMD_PSH, 1000), (CMD_PSH, 500)]


def test_small_writes_are_coalesced_into_one_frame() -> None:
    client, _ = pair()
    st = client.open_stream()
    client.data_to_send()
    for i in range(10):
        client.send(st, bytes([i]) * 3)
    (f,) = frames(client.data_to_send())
    assert f.data == b"".join(bytes([i]) * 3 for i in range(10))


def test_round_robin_between_streams() -> None:
    cfg = MuxConfig(max_frame_size=100)
    client, _ = pair(cfg)
    a, b = client.open_stream(), client.open_stream()
    client.data_to_send()
    client.send(a, b"a" * 300)
    client.send(b, b"b" * 300)
    got = frames(client.data_to_send())
    assert [f.stream_id for f in got] == [3, 5, 3, 5, 3, 5]


def test_data_read_and_fin_half_close() -> None:
    client, server = pair()
    st = client.open_stream()
    client.send(st, b"request")
    client.close_stream(st)
    wire = client.data_to_send()
    # FIN comes after the data written before close()
    assert [f.cmd for f in frames(wire)] == [CMD_SYN, CMD_PSH, CMD_FIN]
    with pytest.raises(MuxStreamClosedError):
        client.send(st, b"more")
    server.receive_data(wire, 0)
    assert server.events() == [StreamOpened(3), DataReceived(3, 7), StreamEnded(3)]
    sst = server.get_stream(3)
    assert sst is not None
    assert not sst.at_eof  # buffered data is still there
    assert server.read(sst, 3) == b"req"
    assert server.read(sst) == b"uest"
    assert sst.at_eof
    assert server.read(sst) == b""
    # the server can still answer on its half, and the client can still read
    server.send(sst, b"response")
    server.close_stream(sst)
    move(server, client)
    assert StreamReleased(3) in server.events()
    assert client.read(st) == b"response"
    assert st.at_eof
    assert client.num_streams == 0 and server.num_streams == 0


def test_fin_waits_behind_unsent_data() -> None:
    cfg = MuxConfig(max_frame_size=10)
    client, _ = pair(cfg)
    st = client.open_stream()
    client.send(st, b"x" * 25)
    client.close_stream(st)
    got = frames(client.data_to_send())
    assert [f.cmd for f in got] == [CMD_SYN, CMD_PSH, CMD_PSH, CMD_PSH, CMD_FIN]


def test_v1_token_bucket_pauses_parsing_and_resumes_on_read() -> None:
    cfg = MuxConfig(max_receive_buffer=1000, max_stream_buffer=1000, max_frame_size=400)
    client, server = pair(cfg)
    st = client.open_stream()
    client.send(st, b"q" * 3000)
    move(client, server)
    sst = server.get_stream(3)
    assert sst is not None
    # smux checks the bucket before each header: 400+400+400 crosses 1000, then parsing stops
    assert sst.readable == 1200
    assert not server.wants_read
    assert server.buffered_input == 3000 - 1200 + 8 * (3000 // 400 + 1 - 3)
    assert server.counters["recv_paused"] == 1
    data = server.read(sst, 500)  # returns 500 tokens: bucket 300 > 0, parsing resumes
    assert len(data) == 500
    assert sst.readable == 1200 - 500 + 400  # exactly one more frame taken: bucket now -100
    assert server.bucket == -100 and not server.wants_read
    total = len(data)
    while total < 3000:
        total += len(server.read(sst))
    assert total == 3000
    assert server.wants_read
    assert server.bucket == 1000


def test_v2_upd_on_first_read_and_every_half_window() -> None:
    cfg = MuxConfig(version=2, max_stream_buffer=1000, max_receive_buffer=100000, max_frame_size=100)
    client, server = pair(cfg)
    st = client.open_stream()
    client.send(st, b"d" * 1500)
    move(client, server)
    sst = server.get_stream(3)
    assert sst is not None
    server.read(sst, 10)  # first read: UPD(consumed=10, window=max_stream_buffer)
    assert frames(server.data_to_send(), 2) == [SmuxFrame(2, CMD_UPD, 3, encode_upd(2, 3, 10, 1000)[8:])]
    server.read(sst, 480)  # 480 < 500 since the last UPD: nothing
    assert server.data_to_send() == b""
    server.read(sst, 20)  # incr reaches 500 = max_stream_buffer / 2
    assert frames(server.data_to_send(), 2)[0].upd == (510, 1000)


def test_v2_sender_respects_peer_window_and_resumes_on_upd() -> None:
    cfg = MuxConfig(version=2, max_stream_buffer=1000, max_receive_buffer=1 << 20)
    client, server = pair(cfg)
    st = client.open_stream()
    client.send(st, b"w" * (INITIAL_PEER_WINDOW + 5000))
    move(client, server)
    # before any UPD the sender assumes smux's initial 256 KiB window
    assert st.send_buffered == 5000
    assert st.send_window() == 0
    assert client.data_to_send() == b""
    sst = server.get_stream(3)
    assert sst is not None
    server.read(sst, 100)  # UPD(consumed=100, window=1000): in flight 262044 > 1000: still closed
    move(server, client)
    assert WindowUpdated(3) in client.events()
    assert client.data_to_send() == b""
    drained = 100
    while drained < INITIAL_PEER_WINDOW:
        drained += len(server.read(sst, 10000))
        move(server, client)
    # everything sent has been read: the window (1000) is open again
    assert st.send_window() == 1000
    wire = client.data_to_send()
    assert sum(len(f.data) for f in frames(wire, 2)) == 1000
    assert st.send_buffered == 4000


def test_v2_upd_acknowledging_unsent_bytes_kills_session() -> None:
    client, _server = pair(MuxConfig(version=2))
    st = client.open_stream()
    client.send(st, b"abc")
    client.data_to_send()
    client.receive_data(encode_upd(2, 3, 10, 65536), 0)
    assert client.closed
    assert client.counters["bad_upd"] == 1
    assert client.counters["protocol_errors"] == 1
    assert "consumed more" in str(client.error)


def test_keepalive_nop_and_timeout() -> None:
    cfg = MuxConfig(keepalive_interval=10, keepalive_timeout=30)
    c = MuxCore(cfg, client=True, now=0)
    assert c.next_timer() == 10_000
    c.handle_timer(10_000)
    assert frames(c.data_to_send()) == [SmuxFrame(1, CMD_NOP, 0)]
    c.handle_timer(20_000)
    c.receive_data(encode_frame(1, CMD_NOP, 0), 25_000)  # something arrived in the first period
    c.handle_timer(30_000)  # NOP and the first timeout check fall due together
    assert not c.closed
    assert c.next_timer() == 40_000
    assert len(frames(c.data_to_send())) == 2
    c.handle_timer(40_000)
    c.handle_timer(50_000)
    assert not c.closed
    c.handle_timer(60_000)  # a whole timeout period in silence
    assert c.closed
    assert isinstance(c.error, MuxKeepaliveTimeoutError)
    assert c.counters["keepalive_timeouts"] == 1
    assert c.next_timer() is None
    assert isinstance(c.events()[-1], ConnectionTerminated)


def test_keepalive_nop_is_skipped_when_other_frames_went_out() -> None:
    """Any frame tells the peer we live (all smux checks): a NOP only fills a silent interval."""
    cfg = MuxConfig(keepalive_interval=10, keepalive_timeout=30)
    client, server = pair(cfg)
    st = client.open_stream()
    for t in range(5_000, 60_001, 5_000):  # data every 5 s, keepalive due every 10 s
        client.send(st, b"x")
        move(client, server, t)
        for s in (client, server):
            s.handle_timer(t)
        move(server, client, t)
    assert client.counters["nop_out"] == 0  # its data did the NOP's work
    assert not server.closed and not client.closed  # and the peer's keepalive check saw it
    assert server.counters["nop_out"] > 0  # the server, which sends nothing else, still sends NOPs
    client.handle_timer(70_000)  # a silent interval: the NOP goes out again
    assert client.counters["nop_out"] == 1


def test_keepalive_does_not_kill_when_our_own_bucket_is_empty() -> None:
    cfg = MuxConfig(keepalive_interval=1, keepalive_timeout=1, max_receive_buffer=100, max_stream_buffer=100)
    client, server = pair(cfg)
    st = client.open_stream()
    client.send(st, b"x" * 200)
    move(client, server, 0)
    assert not server.wants_read
    server.handle_timer(1000)  # data arrived in this period
    server.handle_timer(2000)  # silence, but we are the ones not reading
    assert not server.closed
    sst = server.get_stream(3)
    assert sst is not None
    server.read(sst)
    server.handle_timer(3000)
    assert server.closed


def test_keepalive_disabled() -> None:
    c = MuxCore(MuxConfig(keepalive_disabled=True), client=True)
    assert c.next_timer() is None
    c.handle_timer(10**9)
    assert not c.closed and c.data_to_send() == b""


def test_max_streams_refuses_with_fin_and_counts() -> None:
    _client, server = pair(MuxConfig(max_streams=2))
    wire = b"".join(encode_frame(1, CMD_SYN, sid) for sid in (3, 5, 7, 9))
    server.receive_data(wire, 0)
    assert server.events() == [StreamOpened(3), StreamOpened(5)]
    assert server.counters["streams_refused"] == 2
    assert frames(server.data_to_send()) == [SmuxFrame(1, CMD_FIN, 7), SmuxFrame(1, CMD_FIN, 9)]
    with pytest.raises(MuxUsageError, match="max_streams"):
        server.open_stream()
    # data for the refused stream is dropped and counted, the session lives on
    server.receive_data(encode_frame(1, CMD_PSH, 7, b"zz"), 0)
    assert server.counters["dropped_unknown_stream"] == 1
    assert not server.closed


def test_duplicate_syn_ignored_and_unknown_fin_upd_ignored() -> None:
    server = MuxCore(MuxConfig(version=2), client=False)
    server.receive_data(encode_frame(2, CMD_SYN, 3) * 2, 0)
    assert server.counters["duplicate_syn"] == 1
    server.receive_data(encode_frame(2, CMD_FIN, 99) + encode_upd(2, 99, 0, 0), 0)
    assert not server.closed
    assert server.events() == [StreamOpened(3)]


def test_data_after_peer_fin_is_dropped() -> None:
    server = MuxCore(MuxConfig(), client=False)
    server.receive_data(encode_frame(1, CMD_SYN, 3) + encode_frame(1, CMD_FIN, 3), 0)
    server.receive_data(encode_frame(1, CMD_PSH, 3, b"late"), 0)
    assert server.counters["dropped_after_fin"] == 1
    st = server.get_stream(3)
    assert st is not None and st.at_eof


@pytest.mark.parametrize(
    ("wire", "counter"),
    [
        (bytes.fromhex("0200000003000000"), "bad_version"),
        (bytes.fromhex("0107000003000000"), "bad_cmd"),
        (bytes.fromhex("0100050003000000") + b"12345", "bad_length"),
    ],
)
def test_garbage_kills_session_with_reason_and_counter(wire: bytes, counter: str) -> None:
    server = MuxCore(MuxConfig(), client=False)
    server.receive_data(encode_frame(1, CMD_SYN, 3) + encode_frame(1, CMD_PSH, 3, b"ok"), 0)
    server.receive_data(wire, 0)  # never raises
    assert server.closed
    assert server.counters[counter] == 1
    assert server.counters["protocol_errors"] == 1
    assert "protocol error" in str(server.error)
    events = server.events()
    assert isinstance(events[-1], ConnectionTerminated)
    st = server.get_stream(3)
    assert st is None  # the table is gone, but a handle held by the glue can drain
    server.receive_data(b"more garbage", 0)  # ignored after death


def test_dead_session_drains_buffer_then_raises() -> None:
    client, server = pair()
    st = client.open_stream()
    client.send(st, b"tail")
    move(client, server)
    sst = server.get_stream(3)
    assert sst is not None
    server.connection_lost(None)
    assert server.read(sst) == b"tail"
    with pytest.raises(MuxClosedError, match="EOF"):
        server.read(sst)
    with pytest.raises(MuxClosedError):
        server.send(sst, b"x")
    with pytest.raises(MuxClosedError):
        server.open_stream()


def test_transport_eof_with_its_reason_names_it() -> None:
    """A transport that says why it ended (a KCP session closed by its peer) has its reason in the
    session's error, which a connect failing at that moment reports."""
    _client, server = pair()
    server.connection_lost(None, "closed by peer: server busy: too many sessions from one address")
    assert (
        str(server.error) == "session closed: closed by peer: server busy: too many sessions from one address"
    )
    with pytest.raises(MuxClosedError, match="server busy"):
        server.open_stream()


def test_dead_session_after_fin_reads_eof_not_error() -> None:
    client, server = pair()
    st = client.open_stream()
    client.send(st, b"all")
    client.close_stream(st)
    move(client, server)
    sst = server.get_stream(3)
    assert sst is not None
    server.connection_lost(ConnectionResetError("boom"))
    assert "boom" in str(server.error)
    assert server.read(sst) == b"all"
    assert server.read(sst) == b""


def test_local_close_fins_every_stream() -> None:
    client, _server = pair()
    a, b = client.open_stream(), client.open_stream()
    client.send(a, b"1")
    client.close()
    wire = client.data_to_send()
    assert [(f.cmd, f.stream_id) for f in frames(wire)] == [
        (CMD_SYN, 3),
        (CMD_SYN, 5),
        (CMD_FIN, 5),
        (CMD_PSH, 3),
        (CMD_FIN, 3),
    ]
    with pytest.raises(MuxClosedError):
        client.open_stream()
    client.terminate()
    assert client.closed and "locally" in str(client.error)
    del b


def test_stream_id_exhaustion() -> None:
    c = MuxCore(MuxConfig(), client=True)
    c._next_id = 0xFFFFFFFF  # the last odd id has been used
    with pytest.raises(MuxClosedError, match="exhausted"):
        c.open_stream()


def test_open_skips_id_squatted_by_peer() -> None:
    client = MuxCore(MuxConfig(), client=True)
    client.receive_data(encode_frame(1, CMD_SYN, 3), 0)  # a hostile peer used our parity
    assert client.open_stream().stream_id == 5


def test_release_returns_tokens_of_unread_data() -> None:
    cfg = MuxConfig(max_receive_buffer=1000, max_stream_buffer=1000)
    client, server = pair(cfg)
    st = client.open_stream()
    client.send(st, b"u" * 600)
    client.close_stream(st)
    move(client, server)
    assert server.bucket == 400
    sst = server.get_stream(3)
    assert sst is not None
    server.close_stream(sst)  # FIN both ways: the stream leaves the table, tokens come back
    assert server.bucket == 1000
    assert server.read(sst) == b"u" * 600  # still readable from the handle
    assert server.bucket == 1000


def test_large_single_write_is_framed_in_linear_time_and_intact() -> None:
    client, server = pair(
        MuxConfig(max_frame_size=1000, max_receive_buffer=1 << 30, max_stream_buffer=1 << 20)
    )
    st = client.open_stream()
    big = bytes(range(256)) * 40_000  # 10 MB in one write: 10 000 frames
    client.send(st, big)
    client.send(st, b"tail")
    move(client, server)
    sst = server.get_stream(3)
    assert sst is not None
    assert server.counters["frames_in"] == 1 + 10_241
    assert server.read(sst) == big + b"tail"


def test_partial_reads_across_frame_pieces() -> None:
    client, server = pair(MuxConfig(max_frame_size=7))
    st = client.open_stream()
    data = bytes(range(100))
    for i in range(0, 100, 13):  # 13-byte writes, 7-byte frames: pieces never line up with reads
        client.send(st, data[i : i + 13])
        move(client, server)
    sst = server.get_stream(3)
    assert sst is not None
    got = bytearray()
    for n in (1, 5, 6, 7, 8, 20, 3, 50):
        got += server.read(sst, n)
    assert bytes(got) == data
    assert sst.readable == 0


def test_tiny_frame_flood_is_merged_and_edge_triggered() -> None:
    server = MuxCore(MuxConfig(), client=False)
    server.receive_data(encode_frame(1, CMD_SYN, 3), 0)
    server.events()
    server.receive_data(b"".join(encode_frame(1, CMD_PSH, 3, bytes([i % 256])) for i in range(20_000)), 0)
    st = server.get_stream(3)
    assert st is not None
    assert st.readable == 20_000
    assert len(st.recv) <= 20_000 // 4096 + 2  # merged, not one deque entry per byte
    assert server.events() == [DataReceived(3, 1)]  # one wake-up: the buffer was empty before
    assert server.read(st) == bytes(i % 256 for i in range(20_000))


def test_syn_flood_refusals_do_not_grow_the_output_queue_without_bound() -> None:
    server = MuxCore(MuxConfig(max_streams=1), client=False)
    server.receive_data(b"".join(encode_frame(1, CMD_SYN, 2 * i + 3) for i in range(10_000)), 0)
    assert server.counters["streams_refused"] == 9_999
    assert len(server.data_to_send()) <= 4096 * 8
    assert not server.closed


def test_abort_drops_everything_sends_fin_and_frees_tokens() -> None:
    cfg = MuxConfig(max_receive_buffer=1000, max_stream_buffer=1000)
    client, server = pair(cfg)
    st = client.open_stream()
    client.send(st, b"a" * 700)
    move(client, server)
    sst = server.get_stream(3)
    assert sst is not None
    server.send(sst, b"unsent")
    assert server.bucket == 300
    server.abort_stream(sst)
    assert server.bucket == 1000
    assert server.num_streams == 0
    assert StreamReleased(3) in server.events()
    assert frames(server.data_to_send()) == [SmuxFrame(1, CMD_FIN, 3)]  # queued data dropped, FIN sent
    with pytest.raises(MuxStreamClosedError, match="aborted"):
        server.read(sst)
    with pytest.raises(MuxStreamClosedError):
        server.send(sst, b"x")
    server.abort_stream(sst)  # idempotent
    client.send(st, b"late")
    move(client, server)
    assert server.counters["dropped_unknown_stream"] == 1


def test_unread_gives_bytes_back_without_granting_window_for_them() -> None:
    """A reader that took more than it may hold puts the rest back: it is read again first, holds its
    receive tokens again, and the UPD that goes out counts only the bytes kept (built at send time)."""
    cfg = MuxConfig(version=2, max_stream_buffer=1000, max_receive_buffer=5000, max_frame_size=100)
    client, server = pair(cfg)
    st = client.open_stream()
    client.send(st, bytes(range(200)) * 5)
    move(client, server)
    sst = server.get_stream(3)
    assert sst is not None and server.bucket == 4000
    got = server.read(sst, 700)
    assert server.bucket == 4700
    server.unread(sst, got[300:])  # keep 300, give 400 back
    assert sst.recv_bytes == 700 and server.bucket == 4300
    assert frames(server.data_to_send(), 2)[0].upd == (300, 1000)  # not 700
    assert server.read(sst, 1000) == got[300:] + (bytes(range(200)) * 5)[700:]
    assert server.bucket == 5000
    # unread after a partial read of the head piece keeps the order
    client.send(st, b"abcdef")
    move(client, server)
    head = server.read(sst, 2)
    server.unread(sst, head)
    assert server.read(sst, 10) == b"abcdef"
    # v1 has no UPD: only the tokens move
    client1, server1 = pair(MuxConfig(version=1, max_receive_buffer=5000, max_stream_buffer=1000))
    st1 = client1.open_stream()
    client1.send(st1, b"x" * 100)
    move(client1, server1)
    sst1 = server1.get_stream(3)
    assert sst1 is not None
    server1.unread(sst1, server1.read(sst1, 60))
    assert server1.bucket == 4900 and sst1.recv_bytes == 100 and server1.data_to_send() == b""


@pytest.mark.parametrize("version", [1, 2])
def test_frame_now_is_what_the_queue_would_send_and_declines_when_it_cannot(version: int) -> None:
    cfg = MuxConfig(version=version, max_frame_size=100, max_stream_buffer=300)
    fast, queued = pair(cfg)[0], pair(cfg)[0]
    for core in (fast, queued):
        core.open_stream()
        core.data_to_send()  # the SYN
    sf, sq = fast.get_stream(3), queued.get_stream(3)
    assert sf is not None and sq is not None
    for payload in (b"event", b"x" * 100):
        wire = fast.frame_now(sf, payload)
        queued.send(sq, payload)
        assert wire is not None and wire == queued.data_to_send()  # the same bytes...
        assert fast.counters.snapshot() == queued.counters.snapshot()  # ... and counters
        if version == 2:
            assert sf.num_written == sq.num_written
    assert fast.frame_now(sf, b"x" * 101) is None  # more than one frame
    assert fast.frame_now(sf, b"") is None
    fast.send(sf, b"queued")
    assert fast.frame_now(sf, b"later") is None  # behind stream data: it queues
    fast.data_to_send()
    other = fast.open_stream()
    assert fast.frame_now(sf, b"later") is None  # behind a control frame (the SYN) too
    fast.data_to_send()
    assert other.stream_id != sf.stream_id and fast.frame_now(sf, b"now") is not None
    if version == 2:
        sf.peer_window = 0  # the peer's window is shut: it waits in the queue for an UPD
        assert fast.frame_now(sf, b"w") is None
    fast.close_stream(sf)
    assert fast.frame_now(sf, b"after FIN") is None
