"""``kcprpc serve``'s operational configuration: ``KCPRPC_*`` variables (command line > environment
> the app's settings, bad values named), ``--log-format json``, ``--broker URL``."""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

import kcprpc
from kcprpc import CompatWire, Server, SessionConfig, Transport
from kcprpc.broker_url import BROKER_SCHEMES, broker_from_url
from kcprpc.cli import build_parser, main
from kcprpc.cli.env import NotGiven, apply_env, env_table
from kcprpc.cli.serve import make_server
from kcprpc.errors import UsageError
from kcprpc.logconfig import JsonFormatter, configure_logging


def serve_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser: argparse.ArgumentParser = sub.choices["serve"]
    return parser


def parse(*argv: str, env: dict[str, str] | None = None) -> argparse.Namespace:
    return apply_env(build_parser().parse_args(["serve", *argv]), env or {})


def app() -> Server:
    wire = CompatWire(crypt="aes", key="k", fec=(10, 3))
    return Server([], "10.0.0.1", 1, transport=Transport(wire, session=SessionConfig(mtu=1300)))


# ---------------------------------------------------------------------------------- environment
def test_every_serve_option_has_a_variable() -> None:
    rows = {var: flag for var, flag, _ in env_table(serve_parser())}
    for var, flag in [("KCPRPC_APP", "app"), ("KCPRPC_HOST", "--host"), ("KCPRPC_PORT", "--port"),
                      ("KCPRPC_GRACE", "--grace"), ("KCPRPC_LOG_LEVEL", "--log-level"),
                      ("KCPRPC_LOG_FORMAT", "--log-format"), ("KCPRPC_METRICS", "--metrics"),
                      ("KCPRPC_BROKER", "--broker"), ("KCPRPC_KEY", "--key"), ("KCPRPC_WIRE", "--wire"),
                      ("KCPRPC_DATASHARD", "--datashard"), ("KCPRPC_MTU", "--mtu"),
                      ("KCPRPC_STATIC_KEY", "--static-key"), ("KCPRPC_LEAD_COPIES", "--lead-copies")]:  # fmt: skip
        assert rows.pop(var) == flag
    assert "KCPRPC_TOKEN" not in rows and "KCPRPC_SERVER_KEY" not in rows and "KCPRPC_HELP" not in rows
    # every option of the parser but those is in the table: derived, not listed twice
    dests = {a.dest for a in serve_parser()._actions} - {"help", "token", "server_key"}
    assert len(env_table(serve_parser())) == len(dests)
    assert "[env KCPRPC_PORT]" in " ".join(serve_parser().format_help().split())


def test_command_line_beats_environment_beats_app() -> None:
    env = {"KCPRPC_PORT": "7001", "KCPRPC_HOST": "0.0.0.0", "KCPRPC_MTU": "1200", "KCPRPC_GRACE": "2.5",
           "KCPRPC_LOG_LEVEL": "INFO", "KCPRPC_CRYPT": "salsa20", "KCPRPC_KEY": "s", "KCPRPC_APP": "m:app"}  # fmt: skip
    args = parse("--port", "7002", env=env)
    assert (args.app, args.port, args.host, args.grace, args.log_level) == (
        "m:app",
        7002,
        "0.0.0.0",
        2.5,
        "info",
    )
    server = make_server(app, args)
    assert (server.host, server.port) == ("0.0.0.0", 7002)
    assert server.transport.wire == CompatWire(crypt="salsa20", key="s", fec=(10, 3))  # FEC: the app's
    assert server.transport.session.mtu == 1200  # the environment's, over the app's 1300
    # nothing in the environment: the defaults, and the app's own settings
    args = parse("m:app")
    assert (args.port, args.grace, args.log_level, args.log_format, args.metrics) == (
        None,
        5.0,
        "warning",
        "text",
        None,
    )
    server = make_server(app, args)
    assert (server.host, server.port, server.transport) == ("10.0.0.1", 1, app().transport)
    # an empty variable is as good as unset
    assert parse("m:app", env={"KCPRPC_PORT": " "}).port is None


def test_make_server_resolves_the_environment_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KCPRPC_PORT", "7003")
    args = build_parser().parse_args(["serve", "m:app"])
    assert isinstance(args.port, NotGiven)
    assert make_server(app, args).port == 7003 and args.port == 7003
    assert apply_env(args, {"KCPRPC_PORT": "1"}).port == 7003  # resolved once


@pytest.mark.parametrize(
    ("var", "value", "says"),
    [
        ("KCPRPC_PORT", "abc", "'abc' is not a number (--port)"),
        ("KCPRPC_PORT", "70000", "is not a port"),
        ("KCPRPC_GRACE", "-1", "0 or more (--grace)"),
        ("KCPRPC_LOG_LEVEL", "loud", "expected one of debug, info, warning, error (--log-level)"),
        ("KCPRPC_LOG_FORMAT", "xml", "expected one of text, json (--log-format)"),
        ("KCPRPC_METRICS", "9464", "expected HOST:PORT"),
        ("KCPRPC_MTU", "big", "not a valid --mtu value"),
        ("KCPRPC_WIRE", "tcp", "expected one of secure, compat (--wire)"),
    ],
)
def test_bad_values_name_the_variable(var: str, value: str, says: str) -> None:
    with pytest.raises(UsageError) as e:
        parse("m:app", env={var: value})
    assert str(e.value).startswith(f"{var}={value!r}: ") and says in str(e.value)


def test_bad_variable_exits_2_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KCPRPC_PORT", "http")
    assert main(["serve", "examples.quickstart.service:app"]) == 2
    err = capsys.readouterr().err
    assert err == "kcprpc: KCPRPC_PORT='http': 'http' is not a number (--port)\n"
    monkeypatch.delenv("KCPRPC_PORT")
    assert main(["serve"]) == 2
    assert "KCPRPC_APP" in capsys.readouterr().err


def test_flag_without_value_from_environment() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--reuse", action="store_true")
    from kcprpc.cli.env import defer_defaults

    defer_defaults(p)
    assert apply_env(p.parse_args([]), {"KCPRPC_REUSE": "yes"}).reuse is True
    assert apply_env(p.parse_args([]), {"KCPRPC_REUSE": "0"}).reuse is False
    assert apply_env(p.parse_args([]), {}).reuse is False
    assert (
        apply_env(p.parse_args(["--reuse"]), {"KCPRPC_REUSE": "off"}).reuse is True
    )  # the command line wins
    with pytest.raises(UsageError, match=r"KCPRPC_REUSE='maybe': expected one of 1/true/yes/on"):
        apply_env(p.parse_args([]), {"KCPRPC_REUSE": "maybe"})


# ---------------------------------------------------------------------------------- logging
@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    saved = root.level, list(root.handlers)
    yield root
    root.handlers[:] = saved[1]
    root.setLevel(saved[0])


def test_json_lines(root_logger: logging.Logger) -> None:
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    log = logging.getLogger("kcprpc.server")
    log.debug("not shown")
    log.info("session %s closed", "ab12", extra={"session": "ab12", "peer": ("127.0.0.1", 9)})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("handler %s raised", "x.Y/z")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert list(first)[:4] == ["time", "level", "logger", "message"]
    assert first["level"] == "INFO" and first["logger"] == "kcprpc.server"
    assert first["message"] == "session ab12 closed"
    assert first["session"] == "ab12" and first["peer"] == ["127.0.0.1", 9]
    assert first["time"].endswith("Z") and first["time"][10] == "T" and len(first["time"]) == 24
    assert "exc" not in first
    assert second["level"] == "ERROR" and "ValueError: boom" in second["exc"]
    assert "\n" not in lines[1]  # the traceback is inside the one line


def test_json_formatter_writes_what_json_cannot_hold_as_text() -> None:
    record = logging.LogRecord("kcp.secure", logging.WARNING, __file__, 1, "refused %s", ("x",), None)
    record.reason = object()
    out = json.loads(JsonFormatter().format(record))
    assert out["message"] == "refused x" and out["reason"].startswith("<object object")


def test_text_format_and_bad_values(root_logger: logging.Logger) -> None:
    out = io.StringIO()
    configure_logging("warning", "text", stream=out)
    logging.getLogger("kcprpc.client").warning("hello")
    assert out.getvalue().rstrip().endswith(" WARNING kcprpc.client: hello")
    with pytest.raises(UsageError, match="log format 'xml'"):
        configure_logging("info", "xml")
    with pytest.raises(UsageError, match="log level 'loud'"):
        configure_logging("loud")
    assert kcprpc.configure_logging is configure_logging


# ---------------------------------------------------------------------------------- --broker URL
def test_memory_broker_url() -> None:
    assert isinstance(broker_from_url("memory://"), kcprpc.MemoryBroker)
    with pytest.raises(UsageError, match="memory:// takes nothing"):
        broker_from_url("memory://somewhere")
    for bad in ("", "redis", "http://x:1", "kafka://k:9092"):
        with pytest.raises(UsageError, match="expected one of memory://, redis://"):
            broker_from_url(bad)
    with pytest.raises(UsageError) as e:
        broker_from_url("amqp://user:secret@h/")
    assert "secret" not in str(e.value)  # credentials are not echoed


def test_broker_flag_replaces_the_apps_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    server = make_server(lambda: Server([], "h", 1, key="k"), parse("m:app", "--broker", "memory://"))
    assert isinstance(server.push.broker, kcprpc.MemoryBroker) and server.push.server is server
    monkeypatch.setenv("KCPRPC_BROKER", "nats+x://h")
    with pytest.raises(UsageError, match=r"broker URL .nats\+x://h.: expected one of memory://"):
        make_server(lambda: Server([], "h", 1, key="k"), build_parser().parse_args(["serve", "m:app"]))


@pytest.mark.parametrize(
    ("url", "module", "cls"),
    [
        ("redis://127.0.0.1:6379/0", "kcprpc.redis_broker", "RedisBroker"),
        ("rediss://:pw@cache.example:6380/2", "kcprpc.redis_broker", "RedisBroker"),
        ("unix:///run/redis.sock", "kcprpc.redis_broker", "RedisBroker"),
        ("nats://127.0.0.1:4222", "kcprpc.nats_broker", "NatsBroker"),
        ("nats://a:4222,nats://b:4222", "kcprpc.nats_broker", "NatsBroker"),
        ("tls://nats.example:4222", "kcprpc.nats_broker", "NatsBroker"),
    ],
)
def test_broker_urls_pick_their_module(
    url: str, module: str, cls: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a stand-in module (this unit test says so): it records how the broker is made, nothing more
    made: list[tuple[str, dict[str, object]]] = []

    class Fake(kcprpc.MemoryBroker):
        def __init__(self, url: str, **options: object) -> None:
            super().__init__()
            made.append((url, options))

    monkeypatch.setitem(sys.modules, module, types.SimpleNamespace(**{cls: Fake}))
    broker = broker_from_url(url, prefix="game")
    assert isinstance(broker, Fake) and made == [(url, {"prefix": "game"})]


@pytest.mark.parametrize(("scheme", "extra"), [("redis", "redis"), ("nats", "nats")])
def test_missing_broker_module_or_library(
    scheme: str, extra: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    module, cls, _, library = BROKER_SCHEMES[scheme]
    monkeypatch.setitem(sys.modules, module, None)  # as if this kcprpc had no such module
    with pytest.raises(UsageError, match=f"needs {module}.{cls}"):
        broker_from_url(f"{scheme}://127.0.0.1:1")
    # the module is there but its client library is not: the error names the extra. (Where the
    # real module is installed it is found first, and fails on the same import.)
    monkeypatch.delitem(sys.modules, module)
    for name in [library, *(m for m in sys.modules if m.startswith(library + "."))]:
        monkeypatch.setitem(sys.modules, name, None)  # submodules an earlier test imported too
    (tmp_path / (module.rsplit(".", 1)[1] + ".py")).write_text(f"import {library}\n")
    monkeypatch.setattr(kcprpc, "__path__", [*kcprpc.__path__, str(tmp_path)])
    with pytest.raises(
        UsageError, match=rf"needs the {library} client library: pip install 'kcprpc\[{extra}\]'"
    ):
        broker_from_url(f"{scheme}://127.0.0.1:1")


# ---------------------------------------------------------------------------------- docs, image
ROOT = Path(__file__).resolve().parents[2]


def test_deploy_page_has_the_variables_table() -> None:
    from kcprpc.cli.env import env_markdown

    table = env_markdown(serve_parser())
    page = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    assert table in page, f"docs/deploy.md's table of KCPRPC_* variables is out of date; it is now:\n\n{table}"


def test_the_image_sets_only_real_variables() -> None:
    import re

    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    known = {var for var, _, _ in env_table(serve_parser())}
    named = set(re.findall(r"\b(KCPRPC_[A-Z_]+)=", dockerfile))
    assert {"KCPRPC_APP", "KCPRPC_HOST", "KCPRPC_PORT", "KCPRPC_METRICS", "KCPRPC_LOG_FORMAT"} <= named
    assert named <= known, named - known
    env = dict(re.findall(r"\b(KCPRPC_[A-Z_]+)=(\S+)", dockerfile))
    args = apply_env(build_parser().parse_args(["serve"]), env)  # the image's settings parse
    assert (args.host, args.port, args.metrics, args.log_format) == ("0.0.0.0", 9000, ("0.0.0.0", 9464), "json")
