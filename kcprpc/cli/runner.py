"""Running one ``kcprpc`` command: its exit code, its one-line error report, its event loop.

Errors go to stderr as one line, ``STATUS_NAME: message``; the exit code is ``64 + status code``
(as grpcurl does), ``2`` for a usage error (bad arguments, a malformed document; ``kcprpc: message``),
``1`` when ``idl check`` finds a breaking change, and ``70`` for an unexpected error (a bug; one
line too, ``KCPRPC_TRACEBACK=1`` shows the traceback).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import select
import signal
import sys
from typing import Any

from kcprpc.cli.render import jsonable
from kcprpc.errors import RpcError, UsageError
from kcprpc.status import Status

EXIT_USAGE = 2
EXIT_INTERNAL = 70  # EX_SOFTWARE: an unexpected error (a bug), reported in one line
EXIT_BREAKING = 1
STATUS_EXIT_BASE = 64


def exit_code(status: Status) -> int:
    """The process exit code for a call that ended with ``status``."""
    return 0 if status is Status.OK else STATUS_EXIT_BASE + int(status)


class CliError(Exception):
    """A failure the command reports as ``STATUS: message`` and exits with."""

    def __init__(self, status: Status, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details


def _report(status: Status, message: str, details: Any = None) -> int:
    print(f"{status.name}: {message}", file=sys.stderr)
    if details is not None:
        with contextlib.suppress(Exception):
            print(json.dumps(jsonable(details), indent=2, ensure_ascii=False), file=sys.stderr)
    return exit_code(status)


def run_command(args: argparse.Namespace) -> int:
    """Run a command of the parser (:func:`kcprpc.cli.build_parser`); never lets a traceback out
    for expected failures."""
    from kcprpc.idl.schema import DocumentError

    try:
        if not getattr(args, "is_async", False):
            return int(args.func(args))
        return _run_async(args.func(args))
    except CliError as e:
        return _report(e.status, e.message, e.details)
    except RpcError as e:
        return _report(e.status, e.message or e.status.name, e.details)
    except DocumentError as e:
        print(f"kcprpc: {e}", file=sys.stderr)
        return EXIT_USAGE
    except UsageError as e:
        print(f"kcprpc: {e}", file=sys.stderr)
        return EXIT_USAGE
    except TimeoutError:
        return _report(Status.DEADLINE_EXCEEDED, "timed out")
    except BrokenPipeError as e:
        if _stdout_gone():  # `kcprpc call ... | head`: the reader left, the server did nothing wrong
            return EXIT_BROKEN_PIPE
        return _report(Status.UNAVAILABLE, str(e) or type(e).__name__)
    except (ConnectionError, OSError) as e:
        return _report(Status.UNAVAILABLE, str(e) or type(e).__name__)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # a bug: still one line, and the way to see the traceback
        if os.environ.get("KCPRPC_TRACEBACK"):
            raise
        print(
            f"kcprpc: internal error: {type(e).__name__}: {e} "
            "(a bug: KCPRPC_TRACEBACK=1 shows the traceback for a report)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


EXIT_BROKEN_PIPE = 141
"""The exit status when standard output was closed under the command (128 + SIGPIPE, as a
command killed by the signal has), without a message: ``kcprpc call ... | head -2``."""


def _stdout_gone() -> bool:
    """True when standard output is a pipe whose reader left (its write end polls as an error);
    it is then pointed at /dev/null, so that Python's own flush at exit prints nothing."""
    try:
        fd = sys.stdout.fileno()
        poll = select.poll()
        poll.register(fd, select.POLLOUT)
        gone = any(mask & select.POLLERR for _, mask in poll.poll(0))
    except (AttributeError, OSError, ValueError):  # not a file, or no poll() on this platform
        return False
    if gone:
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)
    return gone


def run_loop(coro: Any) -> int:
    """Run ``coro`` to completion on uvloop (asyncio's loop when uvloop is missing); its int result."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return int(asyncio.run(coro))
    return int(uvloop.run(coro))


def _run_async(coro: Any) -> int:
    async def main() -> int:
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(coro)
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, task.cancel)
        try:
            return int(await task)
        except asyncio.CancelledError:
            return 130

    return run_loop(main())
