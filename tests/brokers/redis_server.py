"""A real ``redis-server`` for the tests: a free port on 127.0.0.1, its own temp dir, no persistence
(a restart loses every key, as a Redis without RDB/AOF does). It waits until the server answers
PING, can be stopped and started again on the same port, and is stopped at the end."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from server_process import ServerProcess, free_port

REDIS_SERVER = shutil.which("redis-server") or "redis-server"  # .ci/run installs it


class RedisServer(ServerProcess):
    """One ``redis-server`` process (``url(db)``: where it listens)."""

    def __init__(self, port: int | None = None, ready_timeout: float = 10.0) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="kcprpc-redis-")
        self.dir = Path(self._tmp.name)
        self.port = port or free_port()
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.dir / f"redis-{self.port}.log"

    name = "redis-server"

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> RedisServer:
        """Start the server and wait (bounded) until it answers PING."""
        if not self.running:
            self._launch()
        return self

    def _args(self) -> list[str]:
        return [
            REDIS_SERVER,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "no",
            "--logfile", str(self.log),
            "--daemonize", "no",
        ]  # fmt: skip

    def command(self, *args: str, timeout: float = 2.0) -> bytes:
        """Send one command (RESP) and return the raw reply's first chunk (tests' admin use)."""
        out = f"*{len(args)}\r\n".encode() + b"".join(
            f"${len(a.encode())}\r\n".encode() + a.encode() + b"\r\n" for a in args
        )
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(out)
            return s.recv(65536)

    def client_ids(self, name: str, kind: str = "pubsub") -> list[str]:
        """The ids of the connections of type ``kind`` named ``name`` (CLIENT LIST), to CLIENT KILL."""
        listing = self.command("CLIENT", "LIST", "TYPE", kind).decode()
        return [
            f["id"]
            for line in listing.splitlines()
            if (f := dict(kv.split("=", 1) for kv in line.split() if "=" in kv)).get("name") == name
        ]

    def ping(self) -> bool:
        try:
            return self.command("PING", timeout=0.5).startswith(b"+PONG")
        except OSError:
            return False

    def _ready(self) -> bool:
        return self.ping()

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


__all__ = ["REDIS_SERVER", "RedisServer", "free_port"]
