"""``kcprpc serve``'s web flags (kcprpc.cli.web): parsed from the command line and from
``KCPRPC_*`` variables (the repeatable --web-origin as a comma-separated list), and the
combinations that make no sense refused with a UsageError."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from kcprpc.cli import build_parser
from kcprpc.cli.env import apply_env
from kcprpc.cli.web import check_web_args, web_listeners
from kcprpc.errors import UsageError
from kcprpc.workers import WebListeners


def parse(*argv: str, env: dict[str, str] | None = None) -> argparse.Namespace:
    return apply_env(build_parser().parse_args(["serve", "m:app", *argv]), env or {})


def test_the_flags() -> None:
    a = parse(
        "--ws",
        "127.0.0.1:0",
        "--web-origin",
        "http://a:1",
        "--web-origin",
        "http://b:2",
        "--web-root",
        "site",
    )
    assert a.ws == ("127.0.0.1", 0) and a.web_origin == ["http://a:1", "http://b:2"] and a.web_root == "site"
    none = parse()
    assert none.ws is None and none.web_origin is None and none.web_root is None
    check_web_args(none)


def test_the_webtransport_flags_and_variables() -> None:
    a = parse(
        "--wt", "127.0.0.1:4433", "--wt-cert", "c.pem", "--wt-key", "k.pem", "--web-origin", "http://a:1"
    )
    assert a.wt == ("127.0.0.1", 4433) and a.wt_cert == "c.pem" and a.wt_key == "k.pem"
    check_web_args(a)  # --web-origin goes with --wt alone too
    env = {"KCPRPC_WT": "127.0.0.1:0", "KCPRPC_WT_CERT": "/c.pem", "KCPRPC_WT_KEY": "/k.pem"}
    b = parse(env=env)
    assert b.wt == ("127.0.0.1", 0) and b.wt_cert == "/c.pem" and b.wt_key == "/k.pem"
    assert parse().wt is None


def test_the_variables() -> None:
    env = {"KCPRPC_WS": "[::1]:8080", "KCPRPC_WEB_ORIGIN": "http://a:1, http://b:2", "KCPRPC_WEB_ROOT": "www"}
    a = parse(env=env)
    assert a.ws == ("::1", 8080) and a.web_origin == ["http://a:1", "http://b:2"] and a.web_root == "www"
    assert parse("--web-origin", "http://c:3", env=env).web_origin == ["http://c:3"]  # the command line wins
    with pytest.raises(UsageError, match="KCPRPC_WS"):
        parse(env={"KCPRPC_WS": "nowhere"})


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (("--web-origin", "http://a:1"), "--web-origin needs --ws HOST:PORT or --wt"),
        (("--web-root", "site"), "--web-root needs --ws"),
        (("--wt", "127.0.0.1:0", "--web-root", "site"), "--web-root needs --ws"),
        (("--wt", "127.0.0.1:0"), "--wt needs --wt-cert PEM and --wt-key PEM"),
        (("--wt", "127.0.0.1:0", "--wt-cert", "c.pem"), "--wt needs --wt-cert PEM and --wt-key PEM"),
        (("--wt-cert", "c.pem", "--wt-key", "k.pem"), "need --wt HOST:PORT"),
    ],
)
def test_what_makes_no_sense_is_refused(argv: tuple[str, ...], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        check_web_args(parse(*argv))


def test_workers_with_web_listeners_build_what_every_worker_serves(tmp_path: Path) -> None:
    web = web_listeners(
        parse("--workers", "2", "--ws", "127.0.0.1:0", "--web-origin", "http://a:1", "--web-root", str(tmp_path),
              "--wt", "127.0.0.1:0", "--wt-cert", "c.pem", "--wt-key", "k.pem")
    )  # fmt: skip
    assert web is not None and web.websocket == ("127.0.0.1", 0) and web.webtransport == ("127.0.0.1", 0)
    assert (
        web.websocket_options.origins == ("http://a:1",) and Path(web.websocket_options.web_root) == tmp_path
    )
    assert web.webtransport_options.origins == ("http://a:1",)
    assert web_listeners(parse("--workers", "2")) is None


def test_web_listeners_misuse_is_named() -> None:
    with pytest.raises(UsageError, match="webtransport needs webtransport_options"):
        WebListeners(webtransport=("127.0.0.1", 0))
    with pytest.raises(UsageError, match="websocket_options without websocket"):
        WebListeners(websocket_options=object())
