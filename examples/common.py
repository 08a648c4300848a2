"""Small helpers shared by the example programs: argument types, one-line errors, the run loop."""

from __future__ import annotations

import sys
from collections.abc import Coroutine, Mapping
from typing import Any, NoReturn

from pydantic import BaseModel, ValidationError

import kcprpc
from kcprpc.cli.args import (
    ArgumentParser,
    host_port,
    nonnegative_float,
    port_number,
    positive_float,
    positive_int,
)
from kcprpc.cli.runner import run_loop

__all__ = [
    "ArgumentParser",
    "exit_with",
    "field_type",
    "host_port",
    "nonnegative_float",
    "port_number",
    "positive_float",
    "positive_int",
    "print_figures",
]


def print_figures(figures: Mapping[str, Any], width: int = 16) -> None:
    """One ``name value`` line per figure (floats with two decimals)."""
    for k, v in figures.items():
        print(f"{k:{width}} {v:.2f}" if isinstance(v, float) else f"{k:{width}} {v}")


def field_type(model: type[BaseModel], field: str, kind: Any = str) -> Any:
    """An ``argparse`` type that checks a value with the request model's own rule for ``field``
    (e.g. ``HelloRequest.name``: 1 to 64 characters), so a bad value is a one-line usage error
    rather than a validation traceback later."""
    import argparse

    def check(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            what = {int: "a whole number", float: "a number"}.get(kind, getattr(kind, "__name__", "valid"))
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        try:
            model.__pydantic_validator__.validate_assignment(model.model_construct(), field, value)
        except ValidationError as e:
            msg = e.errors()[0]["msg"]
            raise argparse.ArgumentTypeError(f"{text!r}: {msg[:1].lower()}{msg[1:]}") from None
        return value

    check.__name__ = field
    return check


def exit_with(main: Coroutine[Any, Any, int]) -> NoReturn:
    """Run an example's main coroutine (on uvloop when installed) and exit with its result. A
    failure the user can fix (the server is unreachable, a port is taken, a call is refused) ends
    in one line, ``error: ...``, and exit code 1; Ctrl-C exits 130."""
    try:
        code = run_loop(main)
    except KeyboardInterrupt:
        sys.exit(130)
    except kcprpc.RpcError as e:
        hint = " (is the server running, with the same key?)" if e.status is kcprpc.Status.UNAVAILABLE else ""
        print(f"error: {e}{hint}", file=sys.stderr)
        sys.exit(1)
    except (kcprpc.UsageError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    sys.exit(code)
