"""What the tests' real servers (:mod:`redis_server`, :mod:`nats_server`) share: a process on a
free port of 127.0.0.1 with its own temp dir, started and waited for (bounded) until it answers,
its log's tail in every error."""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """One server process: a subclass gives ``name``, its command line (:meth:`_args`) and its
    readiness probe (:meth:`_ready`), and sets ``port``, ``ready_timeout``, ``log`` and ``_tmp``
    (the temp dir :meth:`close` removes, if any)."""

    name = "server"
    poll = 0.01  # seconds between readiness probes
    port: int
    ready_timeout: float
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    _tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _args(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def _launch(self, stdout: IO[bytes] | int = subprocess.DEVNULL) -> None:
        """Start the process and wait (bounded by ``ready_timeout``) until :meth:`_ready`."""
        self.proc = subprocess.Popen(
            self._args(), stdout=stdout, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + self.ready_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}): {self._tail()}")
            if self._ready():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} not ready in {self.ready_timeout} s: {self._tail()}")
            time.sleep(self.poll)  # polling a process we started; no event to wait on

    def start(self) -> ServerProcess:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop and remove the temp dir."""
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def _tail(self, n: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""
