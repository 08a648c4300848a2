"""Start and stop real kcptun processes (kcp-go + smux in Go) on 127.0.0.1 for live interop tests.

kcptun ships two programs (Debian package ``kcptun``: ``kcptun-server``, ``kcptun-client``):

* ``kcptun-server -l UDP_ADDR -t TCP_TARGET``: accepts KCP sessions, runs an smux server on each and
  forwards every accepted smux stream to a new TCP connection to the target;
* ``kcptun-client -l TCP_ADDR -r UDP_SERVER``: accepts TCP connections, dials the server over KCP
  (one session) and opens one smux stream per TCP connection.

:class:`Kcptun` runs one of them with a :class:`PeerOptions`, on a free port, waits until the port is
bound (read from ``/proc/net``, bounded in time), and always kills the process on exit. Every
wait is bounded; the process's log is kept for failure messages.
"""

from __future__ import annotations

import asyncio
import csv
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

SERVER = "kcptun-server"
CLIENT = "kcptun-client"
INSTALL_HINT = "install it with `apt-get install kcptun` (Debian/Ubuntu package, kcptun 20210922)"
START_TIMEOUT = 5.0
STOP_TIMEOUT = 2.0


class KcptunMissingError(RuntimeError):
    """The kcptun binaries are not installed."""


class KcptunError(RuntimeError):
    """A kcptun process did not start or died; the message carries its log."""


def binary(name: str) -> str:
    """Path of ``name`` (``kcptun-server``/``kcptun-client``); ``$KCPTUN_SERVER``/``$KCPTUN_CLIENT``
    override. Raises :class:`KcptunMissingError` if it cannot be found."""
    env = os.environ.get("KCPTUN_SERVER" if name == SERVER else "KCPTUN_CLIENT")
    path = shutil.which(env or name)
    if path is None:
        raise KcptunMissingError(f"{env or name} not found on PATH; {INSTALL_HINT}")
    return path


def free_port(kind: int) -> int:
    """A port that was free on 127.0.0.1 a moment ago (``socket.SOCK_DGRAM`` or ``SOCK_STREAM``)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _bound(proto: str, port: int) -> bool:
    """True if ``/proc/net/<proto>`` shows a socket bound to ``port`` (TCP: in LISTEN state)."""
    want = f":{port:04X}"
    for table in (f"/proc/net/{proto}", f"/proc/net/{proto}6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) > 3 and parts[1].endswith(want) and (proto == "udp" or parts[3] == "0A"):
                return True
    return False


@dataclass(frozen=True)
class PeerOptions:
    """kcptun's command-line settings that both ends must agree on, plus the tuning we pin.

    Defaults: ``--nocomp`` (kcprpc does not implement kcptun's snappy compression), FEC off, mode
    ``fast3`` (kcprpc's default timing), mtu 1350 (kcptun's default), windows 1024 and smux v1.
    """

    crypt: str = "aes"
    key: str = "kcprpc-interop"
    mode: str = "fast3"
    mtu: int = 1350
    sndwnd: int = 1024
    rcvwnd: int = 1024
    datashard: int = 0
    parityshard: int = 0
    smuxver: int = 1
    smuxbuf: int = 4 * 1024 * 1024
    streambuf: int = 2 * 1024 * 1024
    keepalive: int = 10
    nocomp: bool = True
    extra: tuple[str, ...] = field(default=())

    def args(self) -> list[str]:
        """The command-line flags for these options."""
        out = [
            "--key", self.key,
            "--crypt", self.crypt,
            "--mode", self.mode,
            "--mtu", str(self.mtu),
            "--sndwnd", str(self.sndwnd),
            "--rcvwnd", str(self.rcvwnd),
            "--datashard", str(self.datashard),
            "--parityshard", str(self.parityshard),
            "--smuxver", str(self.smuxver),
            "--smuxbuf", str(self.smuxbuf),
            "--streambuf", str(self.streambuf),
            "--keepalive", str(self.keepalive),
            "--quiet",
        ]  # fmt: skip
        if self.nocomp:
            out.append("--nocomp")
        return out + list(self.extra)


class Kcptun:
    """One kcptun process. Use ``async with Kcptun.server(...)`` / ``Kcptun.client(...)``.

    ``port`` is the port the process listens on (UDP for the server, TCP for the client). With
    ``snmp=True`` kcptun writes kcp-go's SNMP counters every second; :meth:`snmp` reads the last row.
    """

    def __init__(
        self, role: str, target: tuple[str, int], options: PeerOptions, *, snmp: bool = False
    ) -> None:
        self.role = role
        self.target = target
        self.options = options
        self.port = 0
        self._tmp = tempfile.TemporaryDirectory(prefix="kcptun-")
        self.log_path = Path(self._tmp.name) / "kcptun.log"
        self.snmp_path = Path(self._tmp.name) / "snmp.csv" if snmp else None
        self._proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def server(cls, target_tcp_port: int, options: PeerOptions, *, snmp: bool = False) -> Kcptun:
        """kcptun-server on a free UDP port, forwarding streams to 127.0.0.1:``target_tcp_port``."""
        return cls(SERVER, ("127.0.0.1", target_tcp_port), options, snmp=snmp)

    @classmethod
    def client(cls, remote_udp_port: int, options: PeerOptions, *, snmp: bool = False) -> Kcptun:
        """kcptun-client on a free TCP port, dialling KCP to 127.0.0.1:``remote_udp_port``."""
        return cls(CLIENT, ("127.0.0.1", remote_udp_port), options, snmp=snmp)

    @property
    def address(self) -> tuple[str, int]:
        """Where the process listens."""
        return ("127.0.0.1", self.port)

    def log(self) -> str:
        """The process's log so far (stderr)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def snmp(self) -> dict[str, int]:
        """kcp-go's process-wide SNMP counters from the last row kcptun wrote ({} before the first)."""
        if self.snmp_path is None:
            raise KcptunError("started without snmp=True")
        try:
            rows = list(csv.reader(self.snmp_path.read_text().splitlines()))
        except OSError:
            return {}
        if len(rows) < 2:
            return {}
        return {k: int(v) for k, v in zip(rows[0], rows[-1], strict=False) if v.lstrip("-").isdigit()}

    async def start(self) -> Kcptun:
        """Start on a free port and wait (bounded) until the port is bound; retry a taken port."""
        exe = binary(self.role)
        proto = "udp" if self.role == SERVER else "tcp"
        last = ""
        for _ in range(3):
            self.port = free_port(socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM)
            here = f"127.0.0.1:{self.port}"
            there = f"{self.target[0]}:{self.target[1]}"
            if self.role == SERVER:
                argv = [exe, "--listen", here, "--target", there]
            else:
                argv = [exe, "--localaddr", here, "--remoteaddr", there]
            argv += self.options.args()
            if self.snmp_path is not None:
                argv += ["--snmplog", str(self.snmp_path), "--snmpperiod", "1"]
            with open(self.log_path, "wb") as log:
                self._proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            loop = asyncio.get_running_loop()
            deadline = loop.time() + START_TIMEOUT
            while self._proc.poll() is None and loop.time() < deadline:
                if _bound(proto, self.port):
                    return self
                await asyncio.sleep(0.01)  # polling the kernel's socket table, bounded by the deadline
            last = self.log()
            self.stop()
        raise KcptunError(
            f"{self.role} did not bind 127.0.0.1:{self.port} within {START_TIMEOUT} s; log:\n{last}"
        )

    def alive(self) -> bool:
        """True while the process runs."""
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        """Terminate the process (SIGTERM, then SIGKILL after a bounded wait). Idempotent."""
        proc = self._proc
        if proc is None:
            return
        self._proc = None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT)

    async def __aenter__(self) -> Kcptun:
        try:
            return await self.start()
        except BaseException:
            self.close()
            raise

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the process and remove its temporary directory."""
        self.stop()
        self._tmp.cleanup()
