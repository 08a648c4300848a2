"""Runs the code blocks of one documentation page, in order, as a reader would, and prints one JSON
line per block: ``{"where", "ok", "error", "output"}``. Started by tests/docs/test_docs.py, inside
a network namespace of its own when the machine allows one (``unshare --net``): the servers the
docs start on 127.0.0.1:9000 and the like cannot meet another run's.

``python tests/docs/docs_runner.py PAGE [--bring-loopback-up]``

* Python blocks of a page share one namespace (each block sees what the previous ones defined).
  A block with a top-level ``await`` runs on the page's event loop; the others run in a worker
  thread (so ``asyncio.run(...)`` in a block works) while that loop keeps serving.
* Shell blocks: each command line runs with ``bash -c`` in a scratch folder, with the installed
  ``kcprpc`` on PATH and the checkout on PYTHONPATH, and must exit 0 within its time without a
  traceback. A ``kcprpc serve`` line (after any ``NAME=value`` assignments: ``KCPRPC_PORT=9000
  kcprpc serve ...``) runs in the background, as in a second terminal: the next line runs once it
  printed its banner, and it gets SIGINT when the block ends (and must exit 0).
* Fixtures (``<!-- docs-test: with NAME -->``) come from tests/docs/docs_fixtures.py.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import fcntl
import io
import json
import linecache
import os
import re
import signal
import socket
import struct
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from docblocks import Block, parse, shell_commands  # noqa: E402
from docs_fixtures import FIXTURES, Ctx  # noqa: E402

COMMAND_TIMEOUT = 60.0
BLOCK_TIMEOUT = 60.0
BANNER_TIMEOUT = 30.0


def loopback_up() -> None:
    """Bring ``lo`` up in a fresh network namespace (SIOCGIFFLAGS / SIOCSIFFLAGS, IFF_UP)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14s", b"lo", 0, b"")
        flags = struct.unpack("16sH14s", fcntl.ioctl(s.fileno(), 0x8913, req))[1]
        fcntl.ioctl(s.fileno(), 0x8914, struct.pack("16sH14s", b"lo", flags | 0x1, b""))


def shell_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("KCPRPC_TRACEBACK", None)
    return env


async def run_command(cmd: str, cwd: Path, log: io.StringIO) -> None:
    proc = await asyncio.create_subprocess_exec(
        "bash", "-c", cmd, cwd=cwd, env=shell_env(), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), COMMAND_TIMEOUT)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise AssertionError(f"`{cmd}` did not finish within {COMMAND_TIMEOUT:g} s") from None
    log.write(f"$ {cmd}\n{out.decode(errors='replace')}{err.decode(errors='replace')}")
    if proc.returncode != 0 or b"Traceback" in err:
        raise AssertionError(f"`{cmd}` exited {proc.returncode}:\n{err.decode(errors='replace')}")


_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def serve_command(cmd: str) -> str | None:
    """``cmd`` as ``exec``-able shell when it is a ``kcprpc serve`` line (``NAME=value`` assignments
    before it go through ``env``), else None."""
    words = cmd.split()
    n = 0
    while n < len(words) and _ASSIGNMENT.match(words[n]):
        n += 1
    if words[n : n + 2] != ["kcprpc", "serve"]:
        return None
    return f"exec env {cmd}" if n else f"exec {cmd}"


async def start_server(cmd: str, cwd: Path, log: io.StringIO) -> asyncio.subprocess.Process:
    shell = serve_command(cmd)
    assert shell is not None
    proc = await asyncio.create_subprocess_exec(
        "bash", "-c", shell, cwd=cwd, env=shell_env(), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), BANNER_TIMEOUT)
    except TimeoutError:
        line = b""
    if not line.startswith(b"kcprpc serving "):
        proc.kill()
        _, err = await proc.communicate()
        raise AssertionError(f"`{cmd}` did not start serving:\n{line.decode()}{err.decode(errors='replace')}")
    log.write(f"$ {cmd} &\n{line.decode()}")
    return proc


async def stop_server(cmd: str, proc: asyncio.subprocess.Process, log: io.StringIO) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGINT)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 20)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"`{cmd}` did not stop on SIGINT") from None
    log.write(out.decode(errors="replace") + err.decode(errors="replace"))
    if proc.returncode != 0 or b"Traceback" in err:
        raise AssertionError(f"`{cmd}` exited {proc.returncode} on SIGINT:\n{err.decode(errors='replace')}")


async def run_shell(block: Block, cwd: Path, log: io.StringIO) -> None:
    servers: list[tuple[str, asyncio.subprocess.Process]] = []
    try:
        for cmd in shell_commands(block.text):
            if serve_command(cmd) is not None:
                servers.append((cmd, await start_server(cmd, cwd, log)))
            else:
                await run_command(cmd, cwd, log)
    finally:
        for cmd, proc in reversed(servers):
            await stop_server(cmd, proc, log)


async def run_python(block: Block, ns: dict[str, Any], log: io.StringIO) -> None:
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    lines = block.text.splitlines(keepends=True)
    linecache.cache[block.where] = (len(block.text), None, lines, block.where)  # tracebacks show the line
    code = compile(block.text, block.where, "exec", flags=flags)
    with contextlib.redirect_stdout(log):
        if code.co_flags & 0x80:  # CO_COROUTINE: a top-level await; run on this loop
            result = eval(code, ns)
            await asyncio.wait_for(result, BLOCK_TIMEOUT)
        else:
            loop = asyncio.get_running_loop()
            await asyncio.wait_for(loop.run_in_executor(None, exec, code, ns), BLOCK_TIMEOUT)


async def run_page(page: str) -> int:
    blocks = [b for b in parse(Path(page), (ROOT / page).read_text(encoding="utf-8")) if b.mode == "run"]
    ns: dict[str, Any] = {"__name__": "__docs__"}
    failed = 0
    with tempfile.TemporaryDirectory(prefix="kcprpc-docs-") as tmp:
        cwd = Path(tmp)
        for block in blocks:
            log = io.StringIO()
            error = ""
            try:
                unknown = [f for f in block.fixtures if f not in FIXTURES]
                if unknown:
                    raise AssertionError(
                        f"no fixture named {', '.join(unknown)} in tests/docs/docs_fixtures.py"
                    )
                async with contextlib.AsyncExitStack() as stack:
                    ctx = Ctx(cwd, ns)
                    for name in block.fixtures:
                        await stack.enter_async_context(FIXTURES[name](ctx))
                    if block.kind == "shell":
                        await run_shell(block, cwd, log)
                    else:
                        await run_python(block, ns, log)
            except Exception as e:
                failed += 1
                if isinstance(e, AssertionError):
                    error = str(e)
                else:
                    tb = traceback.extract_tb(e.__traceback__)
                    lines = [f"  line {f.lineno}: {f.line}" for f in tb if f.filename == block.where]
                    if tb and tb[-1].filename != block.where:
                        lines.append(f"  raised at {tb[-1].filename}:{tb[-1].lineno}: {tb[-1].line}")
                    error = f"{type(e).__name__}: {e}\n" + "\n".join(lines)
            print(json.dumps({"where": block.where, "ok": not error, "error": error,
                              "output": log.getvalue()[-4000:]}), flush=True)  # fmt: skip
    return 1 if failed else 0


def main() -> int:
    args = sys.argv[1:]
    if "--bring-loopback-up" in args:
        args.remove("--bring-loopback-up")
        loopback_up()
    return asyncio.run(run_page(args[0]))


if __name__ == "__main__":
    sys.exit(main())
