"""The package root exports the public transport API and nothing that does not resolve."""

from __future__ import annotations

import kcp
import kcp.crypt
import kcp.engine


def test_every_exported_name_resolves() -> None:
    assert sorted(kcp.__all__) == sorted(set(kcp.__all__))
    for name in kcp.__all__:
        assert getattr(kcp, name) is not None, name


def test_engine_and_crypt_names_are_the_modules_own() -> None:
    assert kcp.KCP is kcp.engine.KCP
    assert kcp.getconv is kcp.engine.getconv
    assert kcp.derive_key is kcp.crypt.derive_key
    assert kcp.new_crypt is kcp.crypt.new_crypt
    out: list[bytes] = []
    engine = kcp.KCP(0x01020304, out.append)
    engine.nodelay(1, 10, 2, 1)  # nc=1: no congestion window, the first flush sends
    assert engine.send(b"hello") == 5  # bytes queued, as ikcp
    engine.flush(0)
    assert [kcp.getconv(d) for d in out] == [0x01020304]


def test_dial_and_listen_take_the_transport_description_and_no_old_keywords() -> None:
    import inspect

    dial = inspect.signature(kcp.dial).parameters
    listen = inspect.signature(kcp.listen).parameters
    assert list(dial) == ["host", "port", "wire", "session", "io", "conv", "rng"]
    assert list(listen) == [
        "host", "port", "wire", "session", "io", "max_sessions", "max_sessions_per_address", "backlog",
        "admission", "on_accept", "rng", "gc",
        "sock",  # a bound socket instead of host:port (a worker's: kcp.reuseport, kcprpc.workers)
        "sources",  # a tally of sessions per address shared with other listeners (kcprpc's web ones)
    ]  # fmt: skip
    assert dial["wire"].default == kcp.CompatWire() == listen["wire"].default
    assert not hasattr(kcp, "RemoteProtocolError")
