"""Property tests of the sans-I/O RPC protocol objects, driven directly (no asyncio, no sockets):
random, garbage, truncated and out-of-order frame sequences never raise out of them, never grow
their state past the limits, and every frame they cannot use is counted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

import kcprpc
from kcprpc import codec
from kcprpc.protocol import frames as fr
from kcprpc.protocol.client import (
    CallAborted,
    ClientProtocol,
    HeadersReceived,
    Replied,
    Streamed,
    Trailed,
)
from kcprpc.protocol.server import (
    CallCancel,
    CallEnd,
    CallMessage,
    ClientLeaving,
    HelloAccepted,
    HelloRefused,
    ServerLimits,
    ServerProtocol,
    StartCall,
    StartNotify,
)
from kcprpc.protocol.state import TRANSITIONS, ConnState
from kcprpc.service import service_spec


class Req(BaseModel):
    n: int = 0


class Svc(kcprpc.Service, name="p.Svc"):
    async def unary(self, req: Req) -> Req:
        return req

    async def watch(self, req: Req) -> AsyncIterator[Req]:
        yield req

    async def upload(self, reqs: AsyncIterator[Req]) -> int:
        return 0

    @kcprpc.rpc.notify
    async def poke(self, req: Req) -> None: ...


SPEC = service_spec(Svc)
METHODS = {m.wire_name: (m, getattr(Svc(), m.attr)) for m in SPEC.methods.values()}
NAMES = [*METHODS, "p.Svc/nope", ""]
LIMITS = ServerLimits(
    max_concurrent_calls=4, max_subscriptions=2, max_metadata_size=64, max_concurrent_notifications=2
)

leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)  # NaN round-trips, but NaN != NaN would fail the equality
    | st.text(max_size=8)
    | st.binary(max_size=8)
)
values = st.recursive(
    leaf,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=10,
)
markers = st.sampled_from([codec.OVERSIZED, codec.UNDECODABLE, codec.DECODE_REFUSED, codec.BUFFER_REFUSED])
cids = st.sampled_from([0, 1, 2, 3, 4, 5, 0xFFFFFFFF])
# well-shaped bodies of every type, so that sequences reach deep states, mixed with garbage
shaped = st.one_of(
    st.tuples(st.just(codec.HELLO), st.just(0), st.fixed_dictionaries({"v": st.just(1)}, optional={"md": values})),
    st.tuples(
        st.just(codec.CALL),
        cids,
        st.tuples(st.sampled_from(NAMES), values, st.integers(-5, 10_000) | st.none(), st.integers(0, 3), values).map(list),
    ),
    st.tuples(st.sampled_from([codec.MSG, codec.END, codec.CANCEL]), cids, values),
    st.tuples(st.just(codec.NOTIFY), st.just(0), st.tuples(st.sampled_from(NAMES), values, values).map(list)),
    st.tuples(st.just(codec.PING), st.just(0), st.tuples(st.integers(0, 10), st.integers(0, 10**6)).map(list)),
    st.tuples(st.just(codec.REPLY), cids, st.tuples(values, st.none(), st.none()).map(list)),
    st.tuples(st.just(codec.TRAILER), cids, st.tuples(st.integers(0, 20), st.text(max_size=5), values, st.none()).map(list)),
    st.tuples(st.just(codec.EVENT), st.just(0), st.tuples(st.text(max_size=5), values, st.text(max_size=5), st.integers(0, 9), st.integers(0, 2)).map(list)),
    st.tuples(st.just(codec.WELCOME), st.just(0), st.fixed_dictionaries({"v": st.just(1), "sid": st.text(max_size=4)})),
    st.tuples(st.just(codec.GOAWAY), st.just(0), st.tuples(st.integers(0, 20), st.text(max_size=5)).map(list)),
)  # fmt: skip
garbage = st.tuples(st.integers(0, 20), cids, values | markers)
frame_seq = st.lists(shaped | garbage, max_size=40)


@given(st.integers(0, 255), st.integers(0, 2**32 - 1), values | markers)
def test_decode_never_raises_and_types_every_frame(ftype: int, cid: int, body: Any) -> None:
    f = fr.decode(ftype, cid, body)
    if ftype not in fr.FrameType.__members__.values():
        assert isinstance(f, fr.Unknown)
    elif body is codec.OVERSIZED or body is codec.UNDECODABLE or isinstance(body, codec.Refused):
        assert isinstance(f, fr.Rejected)
    else:
        assert not isinstance(f, (fr.Unknown, fr.Rejected))


@given(shaped)
def test_decoded_frames_encode_to_a_frame_that_decodes_the_same(item: tuple[int, int, Any]) -> None:
    ftype, cid, body = item
    f = fr.decode(ftype, cid, body)
    if isinstance(f, (fr.Malformed, fr.Unknown, fr.Rejected)):
        return
    [(t2, c2, b2)] = codec.FrameDecoder().feed(f.encode())
    assert fr.decode(t2, c2, b2) == f


@settings(max_examples=150)
@given(frame_seq, st.lists(st.integers(0, 3), max_size=40), st.data())
def test_server_protocol_survives_any_sequence(
    items: list[tuple[int, int, Any]], stream_picks: list[int], data: st.DataObject
) -> None:
    counters: dict[str, int] = {}
    topics: set[str] = set()
    proto = ServerProtocol(METHODS, LIMITS, counters, topics)
    streams = [proto.open_stream() for _ in range(4)]
    open_calls: list[tuple[Any, int, bool]] = []  # (stream, cid, streaming)
    for i, (ftype, cid, body) in enumerate(items):
        st_ = streams[stream_picks[i] if i < len(stream_picks) else 0]
        before = dict(counters)
        out = st_.receive(ftype, cid, body)
        if out is None:
            pass
        elif isinstance(out, bytes):
            assert codec.FrameDecoder().feed(out)  # a whole frame
        elif isinstance(out, StartCall):
            assert out.call_id not in st_.calls
            st_.opened(out.call_id, object())
            open_calls.append((st_, out.call_id, out.spec.streams_responses))
        elif isinstance(out, HelloAccepted):
            assert st_.is_control
            if data.draw(st.booleans()):
                proto.welcome({"v": 1})
        elif isinstance(out, HelloRefused):
            assert out.goaway[4] == codec.GOAWAY
        elif isinstance(out, StartNotify):
            if data.draw(st.booleans()):
                proto.notify_done()
        elif isinstance(out, ClientLeaving):
            assert st_.is_control  # a client's GOAWAY counts only on its control stream
        else:
            assert isinstance(out, (CallMessage, CallEnd, CallCancel))
        if ftype not in fr.FrameType.__members__.values():
            assert counters["bad_frames"] == before.get("bad_frames", 0) + 1  # unknown types counted
        # the limits hold whatever arrives
        assert proto.active_calls == len(open_calls) <= LIMITS.max_concurrent_calls
        assert proto.streaming_calls <= LIMITS.max_subscriptions
        assert proto.notify_running <= LIMITS.max_concurrent_notifications
        assert sum(len(s.calls) for s in streams) == len(open_calls)
        assert sum(s.is_control for s in streams) <= 1
        if data.draw(st.booleans()) and open_calls:  # the pump ends a call
            s, c, streaming = open_calls.pop(data.draw(st.integers(0, len(open_calls) - 1)))
            s.closed(c, streaming)
        if data.draw(st.integers(0, 20)) == 0 and proto.state is not ConnState.CLOSED:
            proto.goaway(kcprpc.Status.UNAVAILABLE, "bye")
    proto.close()
    assert proto.state is ConnState.CLOSED
    for s in streams:
        assert (
            s.receive(codec.CALL, 9, [next(iter(METHODS)), None, None, 1, {}]) is not None
        )  # refused, answered


@settings(max_examples=150)
@given(frame_seq, st.lists(st.booleans(), max_size=40), st.data())
def test_client_protocol_survives_any_sequence(
    items: list[tuple[int, int, Any]], datagram: list[bool], data: st.DataObject
) -> None:
    counters: dict[str, int] = {}
    proto = ClientProtocol(4096, counters)
    proto.hello({}, None)
    handles: dict[int, object] = {}
    for _ in range(data.draw(st.integers(0, 4))):
        cid = proto.next_id()
        handles[cid] = object()
        proto.call(handles[cid], cid, "p.Svc/unary", None, None, True, {"n": 1})
    for i, (ftype, cid, body) in enumerate(items):
        as_dgram = i < len(datagram) and datagram[i]
        before = sum(counters.values())
        state = proto.state
        out = proto.receive_datagram(ftype, cid, body) if as_dgram else proto.receive(ftype, cid, body)
        assert proto.state is state or proto.state in TRANSITIONS[state]
        if isinstance(out, (Replied, Streamed, Trailed, HeadersReceived, CallAborted)):
            assert out.handle is handles.get(cid) and cid in proto.calls
            if isinstance(out, (Replied, Trailed, CallAborted)):
                proto.done(cid)  # the call ends (the pump's ClientCall does this)
        elif isinstance(out, fr.Event):
            assert ftype == codec.EVENT
        elif out is None and ftype not in fr.FrameType.__members__.values():
            assert sum(counters.values()) == before + 1  # unknown types are counted
        assert set(proto.calls) <= set(handles)  # nothing but the pump opens calls
    proto.close()
    assert proto.state is ConnState.CLOSED


@given(st.integers(0, 8))
def test_call_ids_never_zero_and_wrap(n: int) -> None:
    proto = ClientProtocol(4096, {})
    proto._next = 0xFFFFFFFF - 4  # start near the wrap
    ids = [proto.next_id() for _ in range(n)]
    assert 0 not in ids and len(set(ids)) == len(ids)


@given(st.sets(st.integers(1, 12), max_size=8), st.integers(0, 12))
def test_call_ids_after_the_wrap_skip_calls_still_in_flight(live: set[int], n: int) -> None:
    """After 2³² calls a subscription opened at the start may still run: a new call never takes
    its id (the server would drop the CALL as a duplicate, and the old call's frames would reach
    the new one)."""
    proto = ClientProtocol(4096, {})
    for cid in live:
        proto.call(object(), cid, "svc/sub", None, None, True, None)
    proto._next = 0xFFFFFFFF - 2  # near the wrap
    ids = []
    for _ in range(n):
        cid = proto.next_id()
        ids.append(cid)
        proto.call(object(), cid, "svc/m", None, None, True, None)
    assert not set(ids) & live and 0 not in ids and len(set(ids)) == len(ids)
    expected = [0xFFFFFFFE, 0xFFFFFFFF] + [i for i in range(1, 40) if i not in live]
    assert ids == expected[:n]
