"""A user's wrong value is refused where it is given, naming the class, the field and the value
(an audit: a string, a float or NaN where a number or an int goes, None where a config object
goes, were accepted and failed later, deep inside, or left a server refusing every client)."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

import kcp
import kcprpc
from kcp.fieldcheck import check_port
from kcprpc import ClientConfig, HeartbeatConfig, ReconnectPolicy, ServerConfig, UsageError

NAN = math.nan

BAD: list[tuple[Callable[[], Any], str]] = [
    (lambda: ServerConfig(heartbeat=None), "ServerConfig.heartbeat must be a HeartbeatConfig, not None"),  # type: ignore[arg-type]
    (lambda: ServerConfig(max_message_size=1.5), "ServerConfig.max_message_size must be an int, not 1.5"),  # type: ignore[arg-type]
    (lambda: ServerConfig(presence=None), "ServerConfig.presence must be a PresenceConfig"),  # type: ignore[arg-type]
    (lambda: ServerConfig(gc="x"), "ServerConfig.gc must be a GcPolicy or None, not 'x'"),  # type: ignore[arg-type]
    (lambda: ServerConfig(shutdown_grace="x"), "ServerConfig.shutdown_grace must be a finite number"),  # type: ignore[arg-type]
    (
        lambda: ServerConfig(max_concurrent_calls=NAN),
        "ServerConfig.max_concurrent_calls must be an int, not nan",
    ),  # type: ignore[arg-type]
    (lambda: ServerConfig(lanes=None), "ServerConfig.lanes must be a LaneConfig"),  # type: ignore[arg-type]
    (lambda: ClientConfig(connect_timeout="x"), "ClientConfig.connect_timeout must be a finite number"),  # type: ignore[arg-type]
    (lambda: ClientConfig(max_message_size=-1), "ClientConfig.max_message_size must be positive"),
    (lambda: ClientConfig(unary_framing="bogus"), "ClientConfig.unary_framing must be 'shared' or 'stream'"),  # type: ignore[arg-type]
    (lambda: ClientConfig(reconnect="x"), "ClientConfig.reconnect must be a ReconnectPolicy or None"),  # type: ignore[arg-type]
    (lambda: ClientConfig(default_timeout=-1), "ClientConfig.default_timeout must be positive"),
    (lambda: HeartbeatConfig(interval=NAN, timeout=10), "HeartbeatConfig.interval must be a finite number"),
    (lambda: ReconnectPolicy(initial="x"), "ReconnectPolicy.initial must be a finite number"),  # type: ignore[arg-type]
    (
        lambda: ReconnectPolicy(max_attempts=-1),
        "ReconnectPolicy.max_attempts must be None (forever) or 0 or more",
    ),
    (lambda: ReconnectPolicy(jitter=5), "ReconnectPolicy needs multiplier >= 1 and 0 <= jitter <= 1"),
    (lambda: kcp.SessionConfig(nodelay="x"), "SessionConfig.nodelay must be an int, not 'x'"),  # type: ignore[arg-type]
    (lambda: kcp.SessionConfig(snd_wnd=1.5), "SessionConfig.snd_wnd must be an int, not 1.5"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("make", "message"), BAD, ids=[m for _, m in BAD])
def test_a_wrong_value_is_refused_where_it_is_given(make: Callable[[], Any], message: str) -> None:
    with pytest.raises(ValueError) as e:  # UsageError, KCPUsageError: both ValueErrors
        make()
    assert message in str(e.value)


def test_the_defaults_and_ints_for_numbers_pass() -> None:
    ServerConfig(shutdown_grace=3, heartbeat=HeartbeatConfig(interval=1, timeout=4))
    ClientConfig(connect_timeout=2, reconnect=ReconnectPolicy(initial=0, maximum=1, max_attempts=3))
    kcp.SessionConfig()


@pytest.mark.parametrize("port", [70000, -1, "abc", 1.5, True])
async def test_a_port_outside_0_65535_is_refused_not_wrapped(port: Any) -> None:
    """A port of 70,000 bound and dialed 4,464 (the resolver wraps it); -1 or "abc" gave the
    resolver's "Servname not supported"."""
    with pytest.raises(ValueError, match=r"port must be an int in 0\.\.65535"):
        check_port(port, ValueError)
    server = kcprpc.Server([], "127.0.0.1", port)
    try:  # (checked before anything is bound or started)
        with pytest.raises(ValueError, match=r"port must be an int in 0\.\.65535"):
            await server.start()
    finally:
        await server.shutdown(0)
    with pytest.raises(ValueError, match=r"port must be an int in 0\.\.65535"):
        await kcprpc.connect("127.0.0.1", port, key="k")


async def test_a_server_shut_down_does_not_start_again() -> None:
    """start() after shutdown() bound a socket whose server refused every client, and a second
    shutdown() left it open."""
    server = kcprpc.Server([], "127.0.0.1", 0)
    await server.start()
    await server.shutdown(0)
    with pytest.raises(UsageError, match="was shut down"):
        await server.start()


def test_the_cli_names_an_app_factory_that_raises(tmp_path: Any) -> None:
    """``kcprpc serve module:factory`` whose factory raises said "internal error ... (a bug)"
    and exited 70, blaming kcprpc; now the factory is named, exit 2."""
    (tmp_path / "badapp.py").write_text("def factory():\n    raise RuntimeError('boom in factory')\n")
    done = subprocess.run(
        [sys.executable, "-m", "kcprpc", "serve", "badapp:factory", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr
    assert "factory() raised RuntimeError: boom in factory" in done.stderr
    assert "internal error" not in done.stderr


@pytest.mark.parametrize("value", [{"a": 1}, 5, "hello", None])
async def test_sending_what_is_not_an_event_is_refused(value: Any) -> None:
    """``session.send({"a": 1})`` went out as an event called ``dict`` (``5``: ``int``)."""
    from kcprpc.testing import pair

    async with pair([]) as p:
        (session,) = p.server.sessions
        with pytest.raises(UsageError, match="is not an event: send an instance of a pydantic model"):
            session.send(value)
        with pytest.raises(UsageError, match="is not an event"):
            await p.server.push.to_room("r", value)


async def test_max_attempts_0_gives_up_once() -> None:
    """``ReconnectPolicy(max_attempts=0)`` (no reconnect, but tell me): ``on_give_up`` ran twice
    when the server shut down (its GOAWAY and the connection's end each started a reconnect that
    gave up at once), and "gave up reconnecting" was logged twice (an audit)."""
    import asyncio

    server = kcprpc.Server([], "127.0.0.1", 0)
    host, port = await server.start()
    cfg = ClientConfig(
        reconnect=ReconnectPolicy(max_attempts=0), heartbeat=HeartbeatConfig(interval=0.2, timeout=1.0)
    )
    client = await kcprpc.connect(host, port, config=cfg)
    calls: list[str] = []
    first, second = asyncio.Event(), asyncio.Event()

    def on_give_up(_client: Any, err: Exception) -> None:
        calls.append(str(err))
        (second if first.is_set() else first).set()

    client.on_give_up = on_give_up
    try:
        await server.shutdown(grace=0)
        await asyncio.wait_for(first.wait(), 5.0)
        with pytest.raises(TimeoutError):  # no second report (it came within a few ms)
            await asyncio.wait_for(second.wait(), 1.0)
        assert len(calls) == 1, calls
    finally:
        await client.close()


def test_server_arguments_and_service_names_are_checked_where_given() -> None:
    """``Server(Greeter())`` raised "Value after * must be an iterable", ``Server([42])`` an
    attribute error of ``int``, ``config="x"`` or a hook that is not a function failed at start
    or at every connection (INTERNAL), and a ``/`` in a service name was served but never
    callable (the wire name is ``service/method``)."""
    from examples.quickstart.service import Greeter

    cases: list[tuple[Callable[[], Any], str]] = [
        (lambda: kcprpc.Server(Greeter()), "takes a list of service instances"),  # type: ignore[arg-type]
        (lambda: kcprpc.Server([42]), "42 is not a service"),
        (lambda: kcprpc.Server([Greeter()], config="x"), "must be a kcprpc.ServerConfig, not 'x'"),  # type: ignore[arg-type]
        (lambda: kcprpc.Server([Greeter()], on_connect="x"), "Server(on_connect=...) must be a function"),  # type: ignore[arg-type]
        (lambda: kcprpc.Server([Greeter()], interceptors=[1]), "must be functions"),  # type: ignore[list-item]
    ]
    for make, message in cases:
        with pytest.raises(UsageError) as e:
            make()
        assert message in str(e.value)
    with pytest.raises(UsageError, match="a service name is a non-empty printable str without '/'"):

        class Slash(kcprpc.Service, name="a/b"):
            async def f(self) -> int:
                return 1


def test_broker_urls_and_room_settings_are_checked_where_given() -> None:
    """A malformed broker URL was taken, then failed at start with the client library's own error
    (``kcprpc serve --broker redis://...:99999`` said "internal error ... a bug"), or was reported
    as an outage (NATS); ``TickRoom(tick_hz=0)`` blamed send_hz, and a NaN ``dispose_after`` or a
    float ``max_clients`` was accepted."""
    from kcprpc.nats_broker import NatsBroker
    from kcprpc.redis_broker import RedisBroker
    from kcprpc.tick_room import TickRoom

    cases: list[tuple[Callable[[], Any], str]] = [
        (lambda: RedisBroker("garbage"), "must start with redis:// or rediss:// or unix://"),
        (lambda: RedisBroker("redis://127.0.0.1:99999/0"), "Port out of range"),
        (lambda: RedisBroker(None), "must be a non-empty str, not None"),  # type: ignore[arg-type]
        (lambda: NatsBroker("nats://a:4222,nats://b:99999"), "bad server URL 'nats://b:99999'"),
        (lambda: NatsBroker("garbage"), "must start with nats://"),
        (lambda: TickRoom("r", tick_hz=0), "tick_hz must be a positive integer, not 0"),
        (lambda: TickRoom("r", dispose_after=NAN), "dispose_after must be a finite number"),
        (lambda: TickRoom("r", max_clients=1.5), "max_clients must be an integer"),
    ]
    for make, message in cases:
        with pytest.raises(UsageError) as e:
            make()
        assert message in str(e.value)
    RedisBroker("unix:///run/redis.sock")  # a socket path has no host
    NatsBroker("nats://a:4222, tls://b:4443")


async def test_send_arguments_are_named_when_wrong() -> None:
    """``delivery="bogus"`` said "'bogus' is not a valid Delivery"; ``send(ev, key=5)`` raised
    "can only concatenate str"; ``push.join(session, 5)`` "object of type 'int' has no len()"."""
    from test_rpc_support import Tick

    from kcprpc.service import Delivery
    from kcprpc.testing import pair

    with pytest.raises(UsageError, match="delivery must be 'reliable' or 'unreliable'"):
        Delivery("bogus")
    async with pair([]) as p:
        (session,) = p.server.sessions
        with pytest.raises(UsageError, match="delivery must be 'reliable' or 'unreliable'"):
            session.send(Tick(n=1), delivery="bogus")
        with pytest.raises(UsageError, match=r"send\(key=\.\.\.\) is a str"):
            session.send(Tick(n=1), key=5)  # type: ignore[arg-type]
        # (the compiled build's push module checks the argument's type itself: a TypeError there)
        with pytest.raises((kcprpc.RpcError, TypeError), match=r"room name must have|str"):
            session.join(5)  # type: ignore[arg-type]


def test_the_other_config_objects_check_their_fields_too() -> None:
    """SecureConfig took NaN and strings for its timers and budgets (``versions=5`` failed with
    "object of type 'int' has no len()"), PresenceConfig(keys=None) and LaneConfig(lanes="x")
    failed deep inside, IOOptions(reuse_port="x") was taken."""
    from kcp.config import IOOptions
    from kcp.secure import SecureConfig
    from kcprpc.presence import PresenceConfig
    from kcprpc.send_lanes import LaneConfig
    from kcprpc.web import WebSocketOptions

    cases: list[tuple[Callable[[], Any], str]] = [
        (
            lambda: SecureConfig(half_open_timeout_ms=NAN),
            "SecureConfig.half_open_timeout_ms must be an int, not nan",
        ),  # type: ignore[arg-type]
        (lambda: SecureConfig(versions=5), "SecureConfig.versions must be a tuple, not 5"),  # type: ignore[arg-type]
        (lambda: WebSocketOptions(origins=5), "origins must be a list of origins, not 5"),  # type: ignore[arg-type]
        (lambda: PresenceConfig(keys=None), "PresenceConfig.keys must be a Sequence, not None"),  # type: ignore[arg-type]
        (lambda: LaneConfig(lanes="x"), "LaneConfig.lanes must be a tuple, not 'x'"),  # type: ignore[arg-type]
        (lambda: WebSocketOptions(web_root=5), "WebSocketOptions.web_root must be a str or a Path or None"),  # type: ignore[arg-type]
        (lambda: IOOptions(reuse_port="x"), "IOOptions.reuse_port must be True or False, not 'x'"),  # type: ignore[arg-type]
    ]
    for make, message in cases:
        with pytest.raises(ValueError) as e:
            make()
        assert message in str(e.value)
    # what was always taken still is: a str or a list of origins, a list of lanes
    from kcprpc.send_lanes import DEFAULT_LANES

    assert WebSocketOptions(origins="https://a.example").origins == ("https://a.example",)
    assert LaneConfig(lanes=list(DEFAULT_LANES)).lane("state").name == "state"


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        ({"half_open_timeout_ms": 0}, "SecureConfig.half_open_timeout_ms must be >= 1, not 0"),
        ({"cookie_rotate_ms": -5}, "SecureConfig.cookie_rotate_ms must be >= 1, not -5"),
        ({"retry_rate": -1}, "SecureConfig.retry_rate must be >= 0"),
        ({"replay_cache": -1}, "SecureConfig.replay_cache must be >= 1"),
        ({"reset_rate": -1}, "SecureConfig.reset_rate must be >= 0 (0: no stateless resets), not -1"),
        ({"path_probe_interval_ms": 0}, "SecureConfig.path_probe_interval_ms must be >= 1, not 0"),
        ({"path_probe_attempts": 0}, "SecureConfig.path_probe_attempts must be >= 1, not 0"),
        ({"amplification_factor": -1}, "SecureConfig.amplification_factor must be >= 0"),
        # these two were refused as "half-open limits" and "rekey limits", naming no field
        ({"max_half_open": 0}, "SecureConfig.max_half_open must be >= 1, not 0"),
        ({"key_grace_ms": -1}, "SecureConfig.key_grace_ms must be >= 0, not -1"),
        ({"handshake_retry_max_ms": 0}, "SecureConfig.handshake_retry_max_ms must be >= 1, not 0"),
        ({"max_window": 70000}, "SecureConfig.max_window must be 1..65535, not 70000"),
    ],
)
def test_secure_config_numbers_are_checked_by_name(knobs: dict[str, Any], message: str) -> None:
    """A negative or zero timer or budget of SecureConfig was taken (a half-open timeout of 0
    expired every handshake, a negative replay_cache raised KeyError at the first initiation,
    path_probe_interval_ms=0 sent every probe at once and gave the new path up), and two messages
    named no field."""
    from kcp.secure import SecureConfig, SecureUsageError

    with pytest.raises(SecureUsageError) as e:
        SecureConfig(**knobs)
    assert message in str(e.value)


def test_secure_config_zero_where_zero_means_something() -> None:
    from kcp.secure import SecureConfig

    SecureConfig(
        retry_rate=0, retry_threshold=0, reset_rate=0, hint_rate=0, amplification_factor=0, key_grace_ms=0
    )


def test_state_sync_and_view_arguments_are_checked_where_given() -> None:
    """``StateSync(M, 5)`` raised "object of type 'int' has no len()", ``max_baselines="x"`` a
    comparison TypeError; ``max_baselines=1.5``, NaN or True, ``part_size=100.5`` were taken;
    ``StateView`` took any name (5, "", 300 characters: its acks then failed) and NaN bounds;
    ``SyncSender`` took all of them and failed the first join of every room."""
    from pydantic import BaseModel

    from kcprpc.state import StateService, StateSync, StateView, SyncSender

    class Model(BaseModel):
        x: int = 0

    cases: list[tuple[Callable[[], Any], str]] = [
        (lambda: StateSync(Model, 5), "StateSync: name must be a str of 1 to 128 characters, not 5"),  # type: ignore[arg-type]
        (
            lambda: StateSync(Model, max_baselines="x"),
            "StateSync: max_baselines must be an int >= 1, not 'x'",
        ),  # type: ignore[arg-type]
        (
            lambda: StateSync(Model, max_baselines=1.5),
            "StateSync: max_baselines must be an int >= 1, not 1.5",
        ),  # type: ignore[arg-type]
        (
            lambda: StateSync(Model, max_baselines=True),
            "StateSync: max_baselines must be an int >= 1, not True",
        ),
        (lambda: StateSync(Model, part_size=100.5), "StateSync: part_size (bytes) must be an int >= 64"),  # type: ignore[arg-type]
        (lambda: StateSync(Model, max_parts=NAN), "StateSync: max_parts must be an int >= 1, not nan"),  # type: ignore[arg-type]
        (
            lambda: StateSync(Model, groups=0),
            'StateSync: groups must be "auto" or an int from 1 to 256, not 0',
        ),
        (lambda: StateView(Model, 5), "StateView: name must be a str of 1 to 128 characters, not 5"),  # type: ignore[arg-type]
        (lambda: StateView(Model, ""), "StateView: name must be a str of 1 to 128 characters, not ''"),
        (
            lambda: StateView(Model, "n" * 200),
            "StateView: name must be a str of 1 to 128 characters, not 'nnn",
        ),
        (
            lambda: StateView(Model, max_baselines="x"),
            "StateView: max_baselines must be an int >= 1, not 'x'",
        ),  # type: ignore[arg-type]
        (lambda: StateView(Model, max_entities=NAN), "StateView: max_entities must be an int >= 1, not nan"),  # type: ignore[arg-type]
        (lambda: StateView(Model, max_nodes=0), "StateView: max_nodes must be an int >= 1, not 0"),
        (
            lambda: SyncSender(Model, StateService(), name=5),
            "SyncSender: name must be a str, a template of {room}",
        ),  # type: ignore[arg-type]
        (lambda: SyncSender(Model, StateService(), name="{x}"), "SyncSender: name must be a str, a template"),
        (
            lambda: SyncSender(Model, StateService(), max_baselines=0),
            "SyncSender: max_baselines must be an int >= 1",
        ),
        (lambda: SyncSender(Model, StateService(), interest=5), "SyncSender: interest must be a function"),  # type: ignore[arg-type]
    ]
    for make, message in cases:
        with pytest.raises(UsageError) as e:
            make()
        assert message in str(e.value)
    StateSync(Model, "s", max_baselines=1, part_size=64, max_parts=1, groups=3)
    StateView(Model, "s", max_baselines=1, max_entities=1, max_nodes=1)
    SyncSender(Model, StateService(), name="game:{room}", groups="auto")


def test_room_registry_arguments_are_checked_where_given() -> None:
    """``RoomRegistry(5)`` was taken and failed every first join (``int`` is not callable);
    ``max_name_length=0`` refused every room name, ``"x"`` raised a comparison TypeError at the
    first join; ``max_rooms=1.5``, ``create_burst=2.5`` and ``sender=5`` were taken."""
    from kcprpc.tick_room import RoomRegistry, TickRoom

    cases: list[tuple[Callable[[], Any], str]] = [
        (lambda: RoomRegistry(5), "RoomRegistry: factory must make a room from its name"),  # type: ignore[arg-type]
        (lambda: RoomRegistry(None), "RoomRegistry: factory must make a room from its name"),  # type: ignore[arg-type]
        (
            lambda: RoomRegistry(TickRoom, max_name_length=0),
            "RoomRegistry: max_name_length must be an int >= 1, not 0",
        ),
        (
            lambda: RoomRegistry(TickRoom, max_name_length="x"),
            "RoomRegistry: max_name_length must be an int >= 1",
        ),  # type: ignore[arg-type]
        (
            lambda: RoomRegistry(TickRoom, max_rooms=1.5),
            "RoomRegistry: max_rooms must be an int >= 1, not 1.5",
        ),  # type: ignore[arg-type]
        (lambda: RoomRegistry(TickRoom, create_burst=2.5), "RoomRegistry: create_burst must be an int >= 1"),  # type: ignore[arg-type]
        (lambda: RoomRegistry(TickRoom, create_rate=NAN), "RoomRegistry: create_rate must be a number > 0"),
        (
            lambda: RoomRegistry(TickRoom, sender=5),
            "RoomRegistry: sender must be a function server -> StateSender",
        ),  # type: ignore[arg-type]
    ]
    for make, message in cases:
        with pytest.raises(UsageError) as e:
            make()
        assert message in str(e.value)
    RoomRegistry(lambda name: TickRoom(name), max_name_length=1, sender=None)


async def test_broker_history_settings_are_checked_where_given() -> None:
    """``MemoryBroker(history="x")`` (and Redis's, NATS's) raised "'<' not supported", 1.5 and
    True were taken; ``policies=5``, ``{"room:*": 5}`` or a str were taken and raised an
    AttributeError at the first publish of a key (a policy function returning something else
    too)."""
    from kcprpc.broker import HistoryPolicy, MemoryBroker
    from kcprpc.nats_broker import NatsBroker
    from kcprpc.redis_broker import RedisBroker

    cases: list[tuple[Callable[[], Any], str]] = [
        (lambda: MemoryBroker(history="x"), "MemoryBroker: history must be an int >= 0, not 'x'"),  # type: ignore[arg-type]
        (lambda: MemoryBroker(history=1.5), "MemoryBroker: history must be an int >= 0, not 1.5"),  # type: ignore[arg-type]
        (lambda: MemoryBroker(history_ttl="x"), "MemoryBroker: history_ttl must be a number of seconds > 0"),  # type: ignore[arg-type]
        (lambda: MemoryBroker(policies=5), "MemoryBroker: policies must be a mapping of key patterns"),  # type: ignore[arg-type]
        (lambda: MemoryBroker(policies="room:*"), "MemoryBroker: policies must be a mapping"),  # type: ignore[arg-type]
        (
            lambda: MemoryBroker(policies={"room:*": 5}),  # type: ignore[dict-item]
            "MemoryBroker: policies maps key patterns (str) to HistoryPolicy, not 'room:*' to 5",
        ),
        (lambda: RedisBroker(history="x"), "RedisBroker: history must be an int >= 0, not 'x'"),  # type: ignore[arg-type]
        (lambda: RedisBroker(policies={"a": {"size": 5}}), "RedisBroker: policies maps key patterns"),  # type: ignore[dict-item]
        (lambda: NatsBroker(history=-1), "NatsBroker: history must be an int >= 0, not -1"),
        (lambda: NatsBroker(policies=[HistoryPolicy()]), "NatsBroker: policies must be a mapping"),  # type: ignore[arg-type]
        (lambda: HistoryPolicy(size="x"), "HistoryPolicy.size must be an int, not 'x'"),  # type: ignore[arg-type]
    ]
    for make, message in cases:
        with pytest.raises(UsageError) as e:
            make()
        assert message in str(e.value)
    broker = MemoryBroker(policies=lambda key: 5)  # type: ignore[arg-type,return-value]
    with pytest.raises(UsageError, match=r"policies\('room:a'\) returned 5, not a HistoryPolicy"):
        await broker.publish("room:a", "Ev", b"x")
    small = MemoryBroker(history=0, history_ttl=2, policies={"room:*": HistoryPolicy(size=1)})
    await small.publish("room:a", "Ev", b"x")


def test_service_definition_mistakes_are_named() -> None:
    """``@kcprpc.rpc`` (bare or called) said "'_Rpc' object is not callable"; ``@rpc.unary("join")``
    raised an AttributeError of str; a decorated method named ``_join`` was left out of the
    service without a word; ``events=[1]``, ``events=Model`` or ``topics={"t": [1]}`` were kept
    (or raised "object is not iterable") and failed only when the interface document was made.
    A plain ``def`` is a helper and stays one; a decorated one was already refused."""
    from pydantic import BaseModel

    from kcprpc import rpc

    class Ev(BaseModel):
        x: int = 0

    def bare_rpc() -> None:
        class A(kcprpc.Service):
            @kcprpc.rpc  # type: ignore[operator]
            async def join(self) -> int:
                return 1

    def called_rpc() -> None:
        class A(kcprpc.Service):
            @kcprpc.rpc()  # type: ignore[operator]
            async def join(self) -> int:
                return 1

    def positional_name() -> None:
        class A(kcprpc.Service):
            @rpc.unary("join")  # type: ignore[call-overload]
            async def f(self) -> int:
                return 1

    def private() -> None:
        class A(kcprpc.Service):
            @rpc.unary(name="join")
            async def _join(self) -> int:
                return 1

    def sync() -> None:
        class A(kcprpc.Service):
            @rpc.unary  # type: ignore[type-var]
            def join(self) -> int:
                return 1

    def events(value: Any) -> Callable[[], None]:
        def make() -> None:
            class A(kcprpc.Service, events=value):
                async def f(self) -> int:
                    return 1

        return make

    def topics(value: Any) -> Callable[[], None]:
        def make() -> None:
            class A(kcprpc.Service, topics=value):
                async def f(self) -> int:
                    return 1

        return make

    cases: list[tuple[Callable[[], Any], str]] = [
        (
            bare_rpc,
            "@kcprpc.rpc on test_service_definition_mistakes_are_named.<locals>.bare_rpc.<locals>.A.join:",
        ),
        (called_rpc, "rpc is the namespace of the method decorators, not one: use @rpc.method"),
        (positional_name, "its wire name is a keyword: @kcprpc.rpc.unary(name='join')"),
        (private, "A._join: a method whose name starts with '_' is not served"),
        (sync, "A.join: RPC methods must be 'async def'"),
        (events([1]), "A: events holds 1, which is not an event type"),
        (events([dict]), "A: events holds <class 'dict'>, which is not an event type"),
        (events(Ev), "A: events must be a list of event types, not <class"),
        (topics({"t": [1]}), "A: topics['t'] holds 1, which is not an event type"),
        (topics(5), "A: topics must be a mapping of topic templates"),
    ]
    for make, message in cases:
        with pytest.raises(UsageError) as e:
            make()
        assert message in str(e.value)

    class Fine(kcprpc.Service, events=[Ev], topics={"t:{x}": [Ev]}):
        def helper(self) -> int:  # a plain def: not served, not an error
            return 1

        async def _private_helper(self) -> int:
            return 1

        async def join(self) -> int:
            return self.helper()

    assert list(kcprpc.service_spec(Fine).methods) == ["join"]
    assert Fine.__rpc_events__ == (Ev,) and Fine.__rpc_topics__ == {"t:{x}": (Ev,)}
