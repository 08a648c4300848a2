"""``kcprpc serve``'s web flags (kcprpc.cli.web): parsed from the command line and from
``KCPRPC_*`` variables (the repeatable --web-origin as a comma-separated list), and the
combinations that make no sense refused with a UsageError."""

from __future__ import annotations

import argparse

import pytest

from kcprpc.cli import build_parser
from kcprpc.cli.env import apply_env
from kcprpc.cli.web import check_web_args
from kcprpc.errors import UsageError


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
        (("--web-origin", "http://a:1"), "need --ws"),
        (("--web-root", "site"), "need --ws"),
        (("--ws", "127.0.0.1:0", "--workers", "2"), "--workers"),
    ],
)
def test_what_makes_no_sense_is_refused(argv: tuple[str, ...], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        check_web_args(parse(*argv))
