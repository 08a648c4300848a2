"""A real ``redis-server`` for the tests: a free port on 127.0.0.1, its own temp dir, no persistence
(a restart loses every key, as a Redis without RDB/AOF does). It waits until the server answers
PING, can be stopped and started again on the same port, and is stopped at the end."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

REDIS_SERVER = shutil.which("redis-server") or "redis-server"  # .ci/run installs it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process (``url(db)``: where it listens)."""

    def __init__(self, port: int | None = None, ready_timeout: float = 10.0) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="kcprpc-redis-")
        self.dir = Path(self._tmp.name)
        self.port = port or free_port()
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.dir / f"redis-{self.port}.log"

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> RedisServer:
        """Start the server and wait (bounded) until it answers PING."""
        if self.running:
            return self
        args = [
            REDIS_SERVER,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "no",
            "--logfile", str(self.log),
            "--daemonize", "no",
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + self.ready_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited ({self.proc.returncode}): {self._tail()}")
            if self.ping():
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server not ready in {self.ready_timeout} s: {self._tail()}")
            time.sleep(0.01)  # polling a process we started; no event to wait on

    def command(self, *args: str, timeout: float = 2.0) -> bytes:
        """Send one command (RESP) and return the raw reply's first chunk (tests' admin use)."""
        out = f"*{len(args)}\r\n".encode() + b"".join(
            f"${len(a.encode())}\r\n".encode() + a.encode() + b"\r\n" for a in args
        )
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(out)
            return s.recv(65536)

    def ping(self) -> bool:
        try:
            return self.command("PING", timeout=0.5).startswith(b"+PONG")
        except OSError:
            return False

    def _tail(self, n: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the server (SIGKILL: nothing is saved; the port is free when this returns)."""
        p, self.proc = self.proc, None
        if p is None:
            return
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)

    def restart(self) -> None:
        """Stop and start again on the same port: every key is lost (no persistence)."""
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        self._tmp.cleanup()
