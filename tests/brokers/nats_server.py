"""A real ``nats-server -js`` for the tests: JetStream on, its own store in a temp dir, a free
port on 127.0.0.1. It waits until the server answers, can be stopped and restarted on the same
port (the store kept, or wiped: the history is lost) and is stopped at the end."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from server_process import ServerProcess, free_port

NATS_SERVER = shutil.which("nats-server") or "nats-server"  # .ci/run installs it


class NatsServer(ServerProcess):
    """One ``nats-server`` process with JetStream (``url``: where it listens)."""

    name = "nats-server"
    poll = 0.02

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

    def start(self) -> NatsServer:
        """Start the server and wait (bounded) until it accepts connections with JetStream on."""
        if self.running:
            return self
        self.store.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self._launch(log)
        return self

    def _args(self) -> list[str]:
        return [NATS_SERVER, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.store)]

    def _ready(self) -> bool:
        # ready when the client port answers with INFO and the log says JetStream is up
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                if not s.recv(5).startswith(b"INFO"):
                    return False
        except OSError:
            return False
        return "Server is ready" in self._tail(100_000)

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

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["NATS_SERVER", "NatsServer", "free_port"]

if __name__ == "__main__":  # manual check: python tests/brokers/nats_server.py
    with NatsServer() as srv:
        print("ready", srv.url, os.getpid())
