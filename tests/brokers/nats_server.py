"""A real ``nats-server -js`` for the tests: JetStream on, its own store in a temp dir, a free
port on 127.0.0.1. It waits until the server answers, can be stopped and restarted on the same
port (the store kept, or wiped: the history is lost) and is stopped at the end."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

NATS_SERVER = shutil.which("nats-server") or "nats-server"  # .ci/run installs it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsServer:
    """One ``nats-server`` process with JetStream (``url``: where it listens)."""

    def __init__(
        self, store: Path | None = None, port: int | None = None, ready_timeout: float = 10.0
    ) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="kcprpc-nats-") if store is None else None
        self.store = Path(self._tmp.name) / "js" if self._tmp is not None else store
        self.port = port or free_port()
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.store.parent / f"nats-{self.port}.log"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> NatsServer:
        """Start the server and wait (bounded) until it accepts connections with JetStream on."""
        if self.running:
            return self
        self.store.mkdir(parents=True, exist_ok=True)
        args = [NATS_SERVER, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.store)]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + self.ready_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited ({self.proc.returncode}): {self._tail()}")
            if self._ready():
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"nats-server not ready in {self.ready_timeout} s: {self._tail()}")
            time.sleep(0.02)  # polling a process we started; no event to wait on

    def _ready(self) -> bool:
        # ready when the client port answers with INFO and the log says JetStream is up
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                if not s.recv(5).startswith(b"INFO"):
                    return False
        except OSError:
            return False
        return "Server is ready" in self._tail(100_000)

    def _tail(self, n: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s); the store is kept."""
        p = self.proc
        self.proc = None
        if p is None or p.poll() is not None:
            return
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)

    def restart(self, *, wipe: bool = False) -> NatsServer:
        """Stop, then start on the same port; ``wipe``: delete the JetStream store first (lost data)."""
        self.stop()
        if wipe:
            shutil.rmtree(self.store, ignore_errors=True)
        return self.start()

    def close(self) -> None:
        """Stop and remove the temp dir."""
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["NATS_SERVER", "NatsServer", "free_port"]

if __name__ == "__main__":  # manual check: python tests/brokers/nats_server.py
    with NatsServer() as srv:
        print("ready", srv.url, os.getpid())
