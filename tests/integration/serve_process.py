"""``kcprpc serve`` in a subprocess for the tests: its output read line by line with a bounded wait,
its port taken from the banner, and a SIGTERM stop that returns the exit code and the rest of the
output. Used as a context manager, it kills the server if a test fails first."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import TracebackType

START_TIMEOUT_S = 20.0


class ServeProcess:
    """``python -m kcprpc serve APP --port 0 FLAGS``, with ``extra_path`` put on its PYTHONPATH."""

    def __init__(self, app: str, *flags: str, extra_path: Path | None = None) -> None:
        env = dict(os.environ)
        if extra_path is not None:
            env["PYTHONPATH"] = f"{extra_path}{os.pathsep}{env.get('PYTHONPATH', '')}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kcprpc", "serve", app, "--port", "0", *flags],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )  # fmt: skip
        self.lines: list[str] = []  # every line read so far, stripped
        self._out: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._out.put(line.strip())
        self._out.put(None)  # end of output

    def next_line(self, timeout: float = START_TIMEOUT_S) -> str:
        """The next line of output; AssertionError if none comes in time or the server ended."""
        try:
            line = self._out.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output for {timeout} s; so far: {self.lines}") from None
        assert line is not None, f"serve ended early: {self.lines}"
        self.lines.append(line)
        return line

    def expect(self, prefix: str, timeout: float = START_TIMEOUT_S) -> str:
        """Read up to the first line starting with ``prefix`` and return it."""
        while not (line := self.next_line(timeout)).startswith(prefix):
            pass
        return line

    def port(self) -> int:
        """The port from the banner ("kcprpc serving ... on HOST:PORT"), read when not yet seen."""
        banner = next((x for x in self.lines if x.startswith("kcprpc serving")), None)
        if banner is None:
            banner = self.expect("kcprpc serving")
        return int(banner.rsplit(":", 1)[1])

    def stop(self, timeout: float = START_TIMEOUT_S) -> tuple[int, list[str]]:
        """SIGTERM; the exit code and the lines printed after those already read."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout)
        self._reader.join(timeout)
        rest: list[str] = []
        while (line := self._out.get_nowait()) is not None:
            rest.append(line)
        self.lines += rest
        return self.proc.returncode, rest

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
