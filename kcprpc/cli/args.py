"""The command line's own parsing: a parser whose errors are one line, and the ``argparse`` types
of the flags (numbers, ports, ``HOST:PORT``). The example programs use them too."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from kcprpc.cli.runner import EXIT_USAGE
from kcprpc.errors import UsageError


class ArgumentParser(argparse.ArgumentParser):
    """``argparse`` with one-line errors: ``PROG: error: MESSAGE (PROG --help: the usage)`` and
    exit code 2, instead of the usage text followed by the error (the examples use it too)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (`{self.prog} --help` shows the usage)\n")


def _number(kind: Callable[[str], Any], text: str, ok: Callable[[Any], bool], what: str) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value != value or not ok(value):  # NaN fails too
        raise argparse.ArgumentTypeError(f"{text} is not {what}")
    return value


def positive_float(text: str) -> float:
    """``argparse`` type: a number of seconds (or a rate) above 0."""
    return float(_number(float, text, lambda v: 0 < v < float("inf"), "a number above 0"))


def nonnegative_float(text: str) -> float:
    """``argparse`` type: a number of seconds, 0 or more."""
    return float(_number(float, text, lambda v: 0 <= v < float("inf"), "a number of 0 or more"))


def positive_int(text: str) -> int:
    """``argparse`` type: a count of 1 or more."""
    return int(_number(int, text, lambda v: v >= 1, "a whole number of 1 or more"))


def port_number(text: str) -> int:
    """``argparse`` type: a UDP port, 0 (any free port) to 65535."""
    return int(_number(int, text, lambda v: 0 <= v <= 65535, "a port (0..65535; 0: any free port)"))


def host_port(text: str) -> tuple[str, int]:
    """``argparse`` type: ``HOST:PORT`` (``[::1]:PORT`` for IPv6)."""
    try:
        return parse_address(text)
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parse_address(text: str, after: Sequence[str] = ()) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6). ``after`` are the positional arguments that followed
    it: when the first is a port number, the message says to join them (the older ``HOST PORT`` form)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        if ":" not in text and after and after[0].isdigit():
            raise UsageError(
                f"'{text} {after[0]}': use HOST:PORT ({text}:{after[0]}); the address is one argument"
            )
        raise UsageError(f"{text!r}: expected HOST:PORT (e.g. 127.0.0.1:9000)")
    return host.strip("[]"), int(port)
