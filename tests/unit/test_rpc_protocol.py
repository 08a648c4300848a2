"""The RPC protocol core, unit by unit: each frame's decode refuses malformed bodies, the
connection state moves only along its transition table, and the server and client protocol
objects answer what the wire spec (docs/wire-format/rpc.md) says."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

import kcprpc
from kcprpc import Status, codec
from kcprpc.protocol import frames as fr
from kcprpc.protocol.client import (
    CallAborted,
    ClientProtocol,
    ClosedByServer,
    ConnectRefused,
    Draining,
    Replied,
    Trailed,
    Welcomed,
)
from kcprpc.protocol.server import HelloAccepted, HelloRefused, ServerLimits, ServerProtocol, StartCall
from kcprpc.protocol.state import TRANSITIONS, ConnState, IllegalTransition, check_transition
from kcprpc.service import service_spec


class Req(BaseModel):
    n: int = 0


class Svc(kcprpc.Service, name="u.Svc"):
    async def unary(self, req: Req) -> Req:
        return req


METHODS = {m.wire_name: (m, getattr(Svc(), m.attr)) for m in service_spec(Svc).methods.values()}
UNARY = service_spec(Svc).methods["unary"].wire_name


@pytest.mark.parametrize(
    ("ftype", "body"),
    [
        (codec.HELLO, [1]),
        (codec.HELLO, {"v": 1, "md": [1]}),
        (codec.HELLO, {"v": 1, "restore": "x"}),
        (codec.WELCOME, "hi"),
        (codec.CALL, ["m", None, None, 1]),
        (codec.CALL, [1, None, None, 1, None]),
        (codec.CALL, ["m", None, None, "1", None]),
        (codec.CALL, {"method": "m"}),
        (codec.HEADERS, [1]),
        (codec.TRAILER, [0]),
        (codec.TRAILER, None),
        (codec.REPLY, [1, 2]),
        (codec.REPLY, [1, [], None]),
        (codec.EVENT, ["e", 1, None, None]),
        (codec.EVENT, [1, 1, None, None, None]),
        (codec.NOTIFY, ["m"]),
        (codec.NOTIFY, [None, 1, None]),
        (codec.PING, []),
        (codec.PONG, ["x"]),
        (codec.GOAWAY, []),
        (codec.ROOMS, [True]),
        (codec.ROOMS, [True, 5]),
        (codec.EVENT_ACK, 0),
        (codec.EVENT_ACK, 2**32),
        (codec.EVENT_ACK, True),
        (codec.EVENT_ACK, [5]),
    ],
)
def test_malformed_bodies_are_refused(ftype: int, body: Any) -> None:
    f = fr.decode(ftype, 3, body)
    assert isinstance(f, fr.Malformed) and f.ftype == ftype and f.call_id == 3


def test_well_formed_frames_decode_to_their_class() -> None:
    assert fr.decode(codec.CALL, 7, ["a/b", {"k": 1}, 5000, 1, {"x": 1}]) == fr.Call(
        7, "a/b", {"k": 1}, 5000, 1, {"x": 1}
    )
    assert fr.decode(codec.CALL, 7, ["a/b", "md?", -3, 0, None]) == fr.Call(7, "a/b", None, None, 0, None)
    assert fr.decode(codec.REPLY, 2, [1, None, {"t": 1}]) == fr.Reply(2, 1, None, {"t": 1})
    assert fr.decode(codec.TRAILER, 2, [99, "x"]) == fr.Trailer(2, 99, "x", None, None)
    assert fr.decode(codec.EVENT, 0, ["e", 1, "topic:t", 3, 1]) == fr.Event("e", 1, "topic:t", 3, 1)
    assert fr.decode(codec.PING, 0, [5, 1.5]) == fr.Ping(5, 1.5)
    assert fr.decode(codec.END, 4, "ignored") == fr.End(4)
    assert fr.decode(200, 4, None) == fr.Unknown(200, 4)
    assert fr.decode(codec.MSG, 4, codec.OVERSIZED) == fr.Rejected(codec.MSG, 4, codec.OVERSIZED)
    assert fr.decode(codec.HELLO, 0, {"v": 1}) == fr.Hello(1, {}, None)  # md is optional


def test_tping_round_trips_in_hello_and_welcome_and_reads_only_true() -> None:
    hello = fr.Hello(1, {"a": "b"}, None, None, True)
    assert hello.encode() == codec.encode_frame(codec.HELLO, 0, {"v": 1, "md": {"a": "b"}, "tping": True})
    assert fr.decode(codec.HELLO, 0, {"v": 1, "tping": True}).transport_ping is True
    assert fr.decode(codec.HELLO, 0, {"v": 1, "tping": 1}).transport_ping is False  # only true counts
    assert fr.decode(codec.HELLO, 0, {"v": 1}).transport_ping is False  # an older client
    assert b"tping" not in fr.Hello(1, {}, None).encode()
    assert fr.decode(codec.WELCOME, 0, {"v": 1, "tping": True}).transport_ping is True  # type: ignore[union-attr]
    assert fr.decode(codec.WELCOME, 0, {"v": 1, "tping": "yes"}).transport_ping is None  # type: ignore[union-attr]
    assert fr.decode(codec.WELCOME, 0, {"v": 1}).transport_ping is None  # type: ignore[union-attr]


def test_frames_encode_byte_identical_to_the_codec() -> None:
    assert fr.Call(7, "a/b", None, 100, 1, b"\x00").encode() == codec.encode_frame(
        codec.CALL, 7, ["a/b", None, 100, 1, b"\x00"]
    )
    assert fr.encode_reply(3, {"ok": True}) == codec.encode_frame(codec.REPLY, 3, [{"ok": True}, None, None])
    assert fr.Event("e", 1, None, None, None).encode() == codec.encode_frame(
        codec.EVENT, 0, ["e", 1, None, None, None]
    )
    assert fr.encode_trailer(2, Status.NOT_FOUND, "x") == codec.encode_frame(
        codec.TRAILER, 2, [5, "x", None, None]
    )


def test_transition_table() -> None:
    for old, news in TRANSITIONS.items():
        for new in ConnState:
            if new in news:
                assert check_transition(old, new) is new
            else:
                with pytest.raises(IllegalTransition):
                    check_transition(old, new)
    assert TRANSITIONS[ConnState.CLOSED] == frozenset()  # closed is final
    assert ConnState.READY not in TRANSITIONS[ConnState.DRAINING]  # a drain is never undone


def _server(max_metadata_size: int = 16) -> tuple[ServerProtocol, dict[str, int]]:
    counters: dict[str, int] = {}
    return ServerProtocol(
        METHODS, ServerLimits(max_concurrent_calls=1, max_metadata_size=max_metadata_size), counters
    ), counters


def _state(proto: ServerProtocol | ClientProtocol) -> ConnState:
    return proto.state  # read through a call: mypy narrows the attribute after an assert


def _trailer(out: Any) -> tuple[int, Any]:
    [(ftype, _cid, body)] = codec.FrameDecoder().feed(out)
    assert ftype == codec.TRAILER
    return Status(body[0]), body[1]


def test_server_states_and_admission() -> None:
    proto, counters = _server()
    ctl = proto.open_stream()
    call = [UNARY, None, None, codec.FLAG_END, {"n": 1}]
    assert _trailer(ctl.receive(codec.CALL, 1, call)) == (Status.UNAVAILABLE, "no handshake")
    assert isinstance(ctl.receive(codec.HELLO, 0, {"v": 1}), HelloAccepted)
    assert proto.state is ConnState.HANDSHAKE and ctl.is_control
    assert ctl.receive(codec.HELLO, 0, {"v": 1}) is None and counters["bad_frames"] == 1  # a second HELLO
    proto.welcome({"v": 1})
    assert _state(proto) is ConnState.READY
    start = ctl.receive(codec.CALL, 1, call)
    assert isinstance(start, StartCall) and start.request == {"n": 1} and start.call_id == 1
    ctl.opened(1, "handle")
    assert ctl.receive(codec.CALL, 1, call) is None  # its id is taken: dropped, counted
    assert counters["calls_refused"] == 0
    assert _trailer(ctl.receive(codec.CALL, 2, call))[0] is Status.RESOURCE_EXHAUSTED  # max 1
    assert counters["calls_refused"] == 1  # every refusal is counted
    ctl.closed(1, False)
    assert proto.active_calls == 0
    assert _trailer(ctl.receive(codec.CALL, 3, ["x/y", None, None, 1, None]))[0] is Status.UNIMPLEMENTED
    # an unknown method's name is cut in the answer: a megabyte of name was a megabyte of trailer,
    # four times that for control characters (an audit)
    code, message = _trailer(ctl.receive(codec.CALL, 3, ["\x00" * 100_000, None, None, 1, None]))
    assert code is Status.UNIMPLEMENTED and len(message) < 600 and "100000 characters" in message
    assert _trailer(ctl.receive(codec.CALL, 3, ["x/y"]))[0] is Status.INVALID_ARGUMENT
    assert _trailer(ctl.receive(codec.CALL, 3, codec.OVERSIZED))[0] is Status.RESOURCE_EXHAUSTED
    assert _trailer(ctl.receive(codec.CALL, 3, codec.DECODE_REFUSED)) == (
        Status.RESOURCE_EXHAUSTED,
        codec.DECODE_REFUSED.reason,
    )
    proto.goaway(Status.UNAVAILABLE, "bye")
    assert _state(proto) is ConnState.DRAINING
    assert _trailer(ctl.receive(codec.CALL, 4, call)) == (Status.UNAVAILABLE, "server shutting down")
    proto.close()
    proto.close()  # idempotent
    assert _state(proto) is ConnState.CLOSED


def test_server_refuses_large_or_malformed_hello() -> None:
    proto, counters = _server()
    out = proto.open_stream().receive(codec.HELLO, 0, {"v": 1, "md": {"k": "x" * 100}})
    assert isinstance(out, HelloRefused) and out.code is Status.RESOURCE_EXHAUSTED
    assert counters["hellos_refused"] == 1
    proto, counters = _server()
    out = proto.open_stream().receive(codec.HELLO, 0, ["not", "a", "map"])
    assert isinstance(out, HelloRefused) and out.code is Status.INVALID_ARGUMENT


def test_server_refuses_hello_metadata_that_takes_too_much_decoded() -> None:
    """The session keeps its metadata decoded: 16 KiB of empty lists (1 byte each packed) was a
    megabyte of objects per session, and the detached sessions were charged its packed size."""
    proto, counters = _server(max_metadata_size=1024)
    out = proto.open_stream().receive(codec.HELLO, 0, {"v": 1, "md": {"m": [[] for _ in range(1000)]}})
    assert isinstance(out, HelloRefused) and out.code is Status.RESOURCE_EXHAUSTED
    assert "decoded" in out.message and counters["hellos_refused"] == 1
    proto, counters = _server(max_metadata_size=1024)
    out = proto.open_stream().receive(codec.HELLO, 0, {"v": 1, "md": {"token": "x" * 1000}})
    assert isinstance(out, HelloAccepted) and counters["hellos_refused"] == 0


def test_server_answers_ping_with_pong_and_keeps_the_rtt() -> None:
    proto, _ = _server()
    out = proto.open_stream().receive(codec.PING, 0, [9, 2500])
    assert out == codec.encode_frame(codec.PONG, 0, [9]) and proto.rtt_ms == 2.5


def test_client_states_and_call_frames() -> None:
    counters: dict[str, int] = {}
    proto = ClientProtocol(64, counters)
    cid = proto.next_id()
    assert cid == 1
    with pytest.raises(Exception, match="larger than max_message_size"):
        proto.call("h", cid, "a/b", None, None, True, "x" * 100)
    assert cid not in proto.calls
    proto.call("h", cid, "a/b", None, None, True, None)
    out = proto.receive(codec.WELCOME, 0, {"v": 1, "sid": "s1", "hb": 1000})
    assert isinstance(out, Welcomed) and out.welcome.session_id == "s1" and proto.state is ConnState.READY
    assert proto.receive(codec.WELCOME, 0, {"v": 1}) is None and counters["bad_frames"] == 1
    assert proto.receive(codec.REPLY, cid, [1, None, None]) == Replied("h", 1, None, None)
    ended = proto.receive(codec.TRAILER, cid, [5, "gone", None, None])
    assert isinstance(ended, Trailed) and ended.error is not None and ended.error.status is Status.NOT_FOUND
    assert proto.receive(codec.TRAILER, cid, [0, ""]) == Trailed("h", None, None)
    aborted = proto.receive(codec.REPLY, cid, codec.OVERSIZED)
    assert (
        isinstance(aborted, CallAborted)
        and aborted.cancel
        and aborted.error.status is Status.RESOURCE_EXHAUSTED
    )
    malformed = proto.receive(codec.REPLY, cid, "nope")
    assert isinstance(malformed, CallAborted) and not malformed.cancel
    proto.done(cid)
    assert proto.receive(codec.REPLY, cid, [1, None, None]) is None and counters["stale_frames"] == 1
    assert isinstance(proto.receive_datagram(codec.GOAWAY, 0, [8, "slow"]), ClosedByServer)
    assert isinstance(proto.receive(codec.GOAWAY, 0, [14, "drain"]), Draining)
    assert _state(proto) is ConnState.DRAINING
    assert proto.receive(codec.GOAWAY, 0, [14, "drain"]) is None  # once


def test_client_goaway_before_welcome_refuses_the_connect() -> None:
    proto = ClientProtocol(4096, {})
    assert proto.receive_datagram(codec.GOAWAY, 0, [16, "no"]) is None  # a datagram cannot refuse
    out = proto.receive(codec.GOAWAY, 0, [16, "bad token"])
    assert isinstance(out, ConnectRefused) and out.error.status is Status.UNAUTHENTICATED
    assert out.error.message == "bad token"
