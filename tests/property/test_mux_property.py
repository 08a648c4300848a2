"""Property tests: the smux codec round-trips, and garbage or random frame sequences never raise
anything but our own error types (and never anything out of ``receive_data``)."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from kcprpc.mux import MuxConfig, MuxCore, MuxError, MuxProtocolError
from kcprpc.mux.core import StreamRecord
from kcprpc.mux.frame import CMD_FIN, CMD_NOP, CMD_PSH, CMD_SYN, CMD_UPD, SmuxFrame, SmuxFrameDecoder
from kcprpc.mux.state import LIVE

u32 = st.integers(0, 0xFFFFFFFF)


@st.composite
def valid_frames(draw: st.DrawFn, version: int) -> SmuxFrame:
    cmds = [CMD_SYN, CMD_FIN, CMD_PSH, CMD_NOP] + ([CMD_UPD] if version == 2 else [])
    cmd = draw(st.sampled_from(cmds))
    sid = draw(st.one_of(st.sampled_from([0, 1, 2, 3, 5, 0xFFFFFFFF]), u32))
    if cmd == CMD_PSH:
        data = draw(st.binary(max_size=300))
    elif cmd == CMD_UPD:
        data = struct.pack("<II", draw(u32), draw(u32))
    else:
        data = b""
    return SmuxFrame(version, cmd, sid, data)


@given(st.sampled_from([1, 2]).flatmap(lambda v: st.lists(valid_frames(v), max_size=30)), st.data())
def test_round_trip_under_any_chunking(frames: list[SmuxFrame], data: st.DataObject) -> None:
    version = frames[0].version if frames else 1
    wire = b"".join(f.encode() for f in frames)
    dec = SmuxFrameDecoder(version)
    got: list[SmuxFrame] = []
    pos = 0
    while pos < len(wire):
        step = data.draw(st.integers(1, 64))
        dec.feed(wire[pos : pos + step])
        pos += step
        got.extend(dec.decode_all())
    assert got == frames
    assert dec.buffered == 0


@given(st.sampled_from([1, 2]), st.binary(max_size=400))
def test_decoder_garbage_raises_only_protocol_error(version: int, garbage: bytes) -> None:
    dec = SmuxFrameDecoder(version)
    dec.feed(garbage)
    try:
        dec.decode_all()
    except MuxProtocolError as exc:
        assert exc.kind in ("bad_version", "bad_cmd", "bad_length")


# a header whose fields are random but biased toward plausible values, plus its payload
raw_frame = st.tuples(
    st.sampled_from([1, 2, 1, 2, 0, 3, 255]),
    st.sampled_from([0, 1, 2, 2, 2, 3, 4, 5, 200]),
    st.sampled_from([0, 1, 2, 3, 5, 7, 0xFFFFFFFF]),
    st.binary(max_size=120),
    st.booleans(),  # lie about the length?
    st.integers(0, 0xFFFF),
).map(
    lambda t: struct.pack("<BBHI", t[0], t[1], t[5] if t[4] else len(t[3]), t[2]) + t[3],
)

op = st.one_of(
    st.tuples(st.just("input"), st.lists(st.one_of(raw_frame, st.binary(max_size=40)), max_size=4)),
    st.tuples(st.just("read"), st.integers(-1, 500)),
    st.tuples(st.just("send"), st.binary(max_size=2000)),
    st.tuples(st.just("open"), st.none()),
    st.tuples(st.just("close_stream"), st.none()),
    st.tuples(st.just("abort_stream"), st.none()),
    st.tuples(st.just("flush"), st.integers(1, 5000)),
    st.tuples(st.just("timer"), st.integers(0, 20_000)),
)


@given(st.sampled_from([1, 2]), st.booleans(), st.lists(op, max_size=40), st.data())
def test_core_survives_random_frames_and_operations(
    version: int, client: bool, ops: list[tuple[str, object]], data: st.DataObject
) -> None:
    cfg = MuxConfig(
        version=version,
        max_receive_buffer=600,
        max_stream_buffer=400,
        max_frame_size=100,
        max_streams=3,
        keepalive_interval=1,
        keepalive_timeout=3,
    )
    core = MuxCore(cfg, client=client, now=0)
    now = 0
    handles = []
    for name, arg in ops:
        if name == "input":
            assert isinstance(arg, list)
            for chunk in arg:
                core.receive_data(chunk, now)  # must never raise
        elif name == "timer":
            assert isinstance(arg, int)
            now += arg
            core.handle_timer(now)
        elif name == "flush":
            assert isinstance(arg, int)
            out = core.data_to_send(arg)
            dec = SmuxFrameDecoder(version)  # whatever we send is valid smux of our version
            dec.feed(out)
            for f in dec.decode_all():
                assert f.cmd != CMD_PSH or 0 < len(f.data) <= cfg.max_frame_size
            assert dec.buffered == 0
        else:
            for ev in core.events():
                sid = getattr(ev, "stream_id", None)
                h = core.get_stream(sid) if sid is not None else None
                if h is not None:
                    handles.append(h)
            try:
                if name == "open":
                    handles.append(core.open_stream())
                elif handles:
                    h = data.draw(st.sampled_from(handles))
                    if name == "read":
                        assert isinstance(arg, int)
                        got = core.read(h, arg)
                        assert arg < 0 or len(got) <= arg
                    elif name == "send":
                        assert isinstance(arg, bytes)
                        core.send(h, arg)
                    elif name == "abort_stream":
                        core.abort_stream(h)
                    else:
                        core.close_stream(h)
            except MuxError:
                pass
        # invariants: tokens are conserved while alive; in-flight windows never go negative
        # (unread bytes of streams in the table hold tokens); the table holds exactly the handles
        # in a LIVE state
        if not core.closed:
            held = sum(s.recv_bytes for s in core._streams.values())
            assert core.bucket + held == cfg.max_receive_buffer
            assert core.num_streams <= cfg.max_streams
        for h in handles:
            assert (h.state in LIVE) == (core.get_stream(h.stream_id) is h)
    c = core.counters
    assert c["protocol_errors"] == c["bad_version"] + c["bad_cmd"] + c["bad_length"] + c["bad_upd"]
    assert c["protocol_errors"] <= 1


@given(st.sampled_from([1, 2]), st.lists(st.one_of(raw_frame, st.binary(max_size=64)), max_size=12))
def test_session_glue_never_leaks_an_exception_on_garbage(version: int, chunks: list[bytes]) -> None:
    import asyncio

    from kcprpc.mux import MuxClosedError, MuxSession
    from kcprpc.mux.testing import memory_pipe

    async def main() -> None:
        leaked: list[object] = []
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: leaked.append(ctx))
        raw, b = memory_pipe()
        sess = MuxSession(b, client=False, config=MuxConfig(version=version, max_streams=2))
        for chunk in chunks:
            raw.write(chunk)
            await asyncio.sleep(0)
        for _ in range(20):
            await asyncio.sleep(0)
        while sess._accept_queue:  # every admitted stream can be drained; then only MuxClosedError
            stream = await sess.accept_stream()
            try:
                if stream.buffered or stream.at_eof() or sess.closed:
                    await stream.read()
            except MuxClosedError:
                pass
        await sess.close()
        assert sess.closed
        assert leaked == []

    asyncio.run(main())


two_side_op = st.one_of(
    st.tuples(st.just("open"), st.booleans(), st.just(0)),
    st.tuples(st.just("send"), st.booleans(), st.integers(1, 3000)),
    st.tuples(st.just("read"), st.booleans(), st.integers(-1, 2000)),
    st.tuples(st.just("close"), st.booleans(), st.just(0)),
    st.tuples(st.just("move"), st.booleans(), st.integers(1, 5000)),
)


@given(st.sampled_from([1, 2]), st.lists(two_side_op, max_size=60), st.data())
def test_two_cores_deliver_every_stream_intact_in_order(
    version: int, ops: list[tuple[str, bool, int]], data: st.DataObject
) -> None:
    """Model check: whatever the interleaving of opens, writes, reads, closes and partial transfers
    on both sides, once everything is closed, flushed and read, each stream delivered exactly what
    was written, in order, then EOF, and every stream left both tables."""
    cfg = MuxConfig(version=version, max_receive_buffer=3000, max_stream_buffer=2000, max_frame_size=700)
    cores = (MuxCore(cfg, client=True), MuxCore(cfg, client=False))
    wires = (bytearray(), bytearray())  # bytes in flight from side i to the other side
    sent: dict[tuple[int, int], bytearray] = {}  # (writer side, stream id) -> bytes written
    got: dict[tuple[int, int], bytearray] = {}  # (reader side, stream id) -> bytes read
    known: dict[tuple[int, int], StreamRecord] = {}  # every handle either side ever had
    counter = 0

    def collect(side: int) -> None:
        for ev in cores[side].events():
            sid = getattr(ev, "stream_id", None)
            h = cores[side].get_stream(sid) if sid is not None else None
            if h is not None:
                known[(side, h.stream_id)] = h

    def read(side: int, h: StreamRecord, n: int) -> bool:
        chunk = cores[side].read(h, n)
        got.setdefault((side, h.stream_id), bytearray()).extend(chunk)
        collect(side)
        return bool(chunk)

    for name, side_flag, arg in ops:
        side = int(side_flag)
        core = cores[side]
        if name == "open":
            h = core.open_stream()
            known[(side, h.stream_id)] = h
        elif name == "move":
            wires[side].extend(core.data_to_send(arg))
            take = bytes(wires[side][:arg])
            del wires[side][:arg]
            cores[1 - side].receive_data(take, 0)
            collect(1 - side)
        else:
            live = [h for (s_, _), h in sorted(known.items()) if s_ == side and h.state in LIVE]
            if not live:
                continue
            h = data.draw(st.sampled_from(live))
            if name == "send":
                if not h.writable:
                    continue
                counter += 1
                payload = bytes([counter % 256]) * arg
                core.send(h, payload)
                sent.setdefault((side, h.stream_id), bytearray()).extend(payload)
            elif name == "read":
                read(side, h, arg)
            else:
                core.close_stream(h)
        assert not cores[0].closed and not cores[1].closed

    # close everything (including streams still arriving), flush and read until quiet
    for _ in range(10_000):
        progress = False
        for (side, _), h in sorted(known.items()):
            if h.writable:
                cores[side].close_stream(h)
            if read(side, h, -1):
                progress = True
        for side in (0, 1):
            wires[side].extend(cores[side].data_to_send())
            if wires[side]:
                cores[1 - side].receive_data(bytes(wires[side]), 0)
                wires[side].clear()
                collect(1 - side)
                progress = True
        if not progress:
            break
    assert not cores[0].closed and not cores[1].closed
    for (side, sid), written in sent.items():
        assert got.get((1 - side, sid), bytearray()) == written, f"stream {sid} from side {side}"
    for h in known.values():
        assert h.at_eof
    assert cores[0].num_streams == 0 and cores[1].num_streams == 0
    assert cores[0].bucket == cfg.max_receive_buffer and cores[1].bucket == cfg.max_receive_buffer
