"""The process-wide mux counters (kcprpc.mux.totals): live sessions read in place, an ended
session folded in exactly once, the open-sessions and open-streams gauges."""

from __future__ import annotations

import asyncio
import gc

import pytest

from kcprpc.mux.core import COUNTER_NAMES
from kcprpc.mux.testing import memory_pair
from kcprpc.mux.totals import mux_totals, session_opened

BOUND = 5.0


async def test_totals_follow_sessions_and_fold_once() -> None:
    gc.collect()  # sessions of earlier tests whose loop is gone leave now, not halfway through this one
    before = mux_totals()
    client, server = memory_pair()
    stream = await client.open_stream()
    stream.write(b"x" * 1000)
    await stream.drain()
    peer = await asyncio.wait_for(server.accept_stream(), BOUND)
    assert await asyncio.wait_for(peer.readexactly(1000), BOUND) == b"x" * 1000
    live = mux_totals()
    assert live["sessions_open"] == before["sessions_open"] + 2
    assert live["streams_open"] == before["streams_open"] + 2
    assert live["bytes_out"] - before["bytes_out"] >= 1000
    assert live["bytes_in"] - before["bytes_in"] >= 1000
    assert (
        live["syn_out"] - before["syn_out"] == 1
        and live["streams_accepted"] - before["streams_accepted"] == 1
    )
    await client.close()
    await asyncio.wait_for(server.wait_closed(), BOUND)
    ended = mux_totals()
    assert ended["sessions_open"] == before["sessions_open"]
    assert ended["streams_open"] == before["streams_open"]
    assert (
        ended["bytes_out"] - before["bytes_out"]
        == client.counters["bytes_out"] + server.counters["bytes_out"]
    )
    assert ended["syn_out"] - before["syn_out"] == 1  # counted while live, kept once ended
    client._fold_counters()  # a second fold changes nothing
    assert mux_totals() == ended


def test_an_owner_never_closed_is_folded_when_collected() -> None:
    gc.collect()
    before = mux_totals()

    class Owner:  # stands for a session dropped without close()
        pass

    owner = Owner()
    counters = dict.fromkeys(COUNTER_NAMES, 0)
    session_opened(owner, counters)
    counters["frames_out"] = 7
    counters["streams_opened"] = 1
    live = mux_totals()
    assert (live["sessions_open"], live["streams_open"]) == (
        before["sessions_open"] + 1,
        before["streams_open"] + 1,
    )
    del owner
    gc.collect()
    after = mux_totals()
    assert after["sessions_open"] == before["sessions_open"]
    assert after["frames_out"] - before["frames_out"] == 7  # kept, not lost with its owner


def test_a_session_s_counters_read_as_a_mapping_of_their_names() -> None:
    from kcprpc.mux.counters import MuxCounters

    c = MuxCounters()
    c.frames_out += 3
    c.bad_cmd += 1
    c.bytes_in += 100
    assert c["frames_out"] == 3 and c["bad_cmd"] == 1 and c["bytes_in"] == 100
    assert dict(c) == c.snapshot() and list(c) == list(COUNTER_NAMES) and len(c) == len(COUNTER_NAMES)
    assert dict(c)["frames_out"] == 3 and sum(dict(c).values()) == 104
    assert "frames_out" in c and "nope" not in c
    for bad in ("nope", "add", "__init__"):  # only counters: no other attribute reads
        with pytest.raises(KeyError):
            c[bad]
