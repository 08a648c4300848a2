"""What a client can make the server log (an audit): the application's errors that a client
decides how often to trigger (a handler whose reply cannot be encoded, a failing on_connect or
on_disconnect hook) are logged with their traceback at most 10 times a minute each, as a
handler's own exception already was; every call and connection still gets its answer."""

from __future__ import annotations

import asyncio
import logging

import pytest
from test_rpc_support import Demo, Req

import kcprpc
from kcprpc import RpcError, Status
from kcprpc.memory import connection_pair
from kcprpc.testing import pair

N = 30
BURST = 10  # the servers' limiters: 10 records a minute per kind


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info and r.name.startswith("kcprpc")]


async def test_a_reply_that_cannot_be_encoded_is_logged_a_few_times(caplog: pytest.LogCaptureFixture) -> None:
    async with pair([Demo()]) as p:
        d = p.client.stub(Demo, timeout=5.0)
        for _ in range(N):
            with pytest.raises(RpcError) as e:
                await d.bad_response(Req(name="x"))
            assert e.value.status == Status.INTERNAL
    logged = tracebacks(caplog)
    # (an earlier test in this process may have used some of the minute's share: no lower bound)
    assert len(logged) <= BURST and all("cannot serialize" in r.getMessage() for r in logged)


async def hello(server: kcprpc.Server) -> None:
    """One connection that says HELLO, reads the answer, and goes (its session is gone)."""
    from kcprpc import codec as c

    client, served = connection_pair()
    task = asyncio.ensure_future(server.handle_connection(served))
    ctrl = await client.open_stream()
    ctrl.write(c.encode_frame(c.HELLO, 0, {"v": 1, "md": {}}))
    assert await asyncio.wait_for(ctrl.read(65536), 5.0)  # WELCOME, or GOAWAY when refused
    await client.close()
    await asyncio.wait_for(task, 5.0)


@pytest.mark.parametrize("hook", ["on_connect", "on_disconnect"])
async def test_a_failing_hook_is_logged_a_few_times(hook: str, caplog: pytest.LogCaptureFixture) -> None:
    ran: list[str] = []

    def fails(session: kcprpc.ServerSession) -> None:
        ran.append(session.id)
        raise RuntimeError(f"{hook} bug")

    server = kcprpc.Server([Demo()], config=kcprpc.ServerConfig(resume_window=None), **{hook: fails})
    for _ in range(N):
        await hello(server)
    await server.shutdown(grace=0)
    assert len(ran) == N  # every connection ran it
    logged = tracebacks(caplog)
    assert len(logged) <= BURST, [r.getMessage() for r in logged]
