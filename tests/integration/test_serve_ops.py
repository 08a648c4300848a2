"""``kcprpc serve`` configured as a container runs it: everything from ``KCPRPC_*`` variables, JSON
logs on stderr, the metrics endpoint scraped over HTTP, SIGTERM ends it with exit code 0."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import kcprpc
from examples.quickstart.service import Greeter, HelloRequest

ROOT = Path(__file__).resolve().parents[2]
BOUND = 15.0
APP = """
import contextlib, logging
import kcprpc
from examples.quickstart.service import Greeter

@contextlib.asynccontextmanager
async def lifespan(server):
    logging.getLogger("ops_app").info("ready", extra={"udp_port": server.address[1]})
    yield

app = kcprpc.Server([Greeter()], lifespan=lifespan, key="ops secret")
"""


def healthcheck_command() -> list[str]:
    """The Dockerfile's HEALTHCHECK command (a JSON array after ``CMD``)."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.startswith("HEALTHCHECK"))
    cmd: list[str] = json.loads(line.split(" CMD ", 1)[1])
    assert cmd[0] == "python"
    return [sys.executable, *cmd[1:]]


def fetch(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=BOUND) as r:
        return r.status, r.read().decode()


async def test_serve_from_environment_with_metrics_and_json_logs(tmp_path: Path) -> None:
    (tmp_path / "ops_app.py").write_text(APP)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
        "KCPRPC_APP": "ops_app:app",
        "KCPRPC_PORT": "0",
        "KCPRPC_METRICS": "127.0.0.1:0",
        "KCPRPC_LOG_FORMAT": "json",
        "KCPRPC_LOG_LEVEL": "info",
        "KCPRPC_GRACE": "30",  # the command line's --grace 1 wins
    }
    srv = subprocess.Popen(
        [sys.executable, "-m", "kcprpc", "serve", "--grace", "1"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert srv.stdout is not None and srv.stderr is not None
        banner: list[str] = []
        while len(banner) < 10 and not any("metrics:" in line for line in banner):
            banner.append(await asyncio.wait_for(asyncio.to_thread(srv.stdout.readline), BOUND))
        assert "quickstart.Greeter" in banner[0], banner
        port = int(banner[0].rsplit(":", 1)[1])
        metrics = next(line for line in banner if "metrics:" in line).split()[1]
        assert metrics.startswith("http://127.0.0.1:") and metrics.endswith("/metrics")
        url = metrics.removesuffix("/metrics")
        assert await asyncio.to_thread(fetch, url + "/healthz") == (200, "serving\n")
        # the image's HEALTHCHECK, as Docker runs it (KCPRPC_METRICS names the port)
        probe = {**os.environ, "KCPRPC_METRICS": url.removeprefix("http://")}
        check = await asyncio.to_thread(
            subprocess.run, healthcheck_command(), env=probe, capture_output=True, timeout=BOUND, check=False
        )
        assert check.returncode == 0, check.stderr
        async with kcprpc.connect("127.0.0.1", port, key="ops secret") as client:
            greeter = client.stub(Greeter, timeout=BOUND)
            for _ in range(3):
                await greeter.hello(HelloRequest(name="ops"))
        _, text = await asyncio.to_thread(fetch, metrics)
        samples = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
        assert float(samples["kcprpc_server_calls_ok_total"]) >= 3
        assert float(samples["kcprpc_secure_handshakes_total"]) >= 1
        srv.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(srv.wait, BOUND) == 0
        check = await asyncio.to_thread(
            subprocess.run, healthcheck_command(), env=probe, capture_output=True, timeout=BOUND, check=False
        )
        assert check.returncode != 0  # nothing serves /healthz any more: unhealthy
        records = [json.loads(line) for line in srv.stderr.read().splitlines()]  # every line is JSON
        ready = next(r for r in records if r["message"] == "ready")
        assert ready["logger"] == "ops_app" and ready["level"] == "INFO" and ready["udp_port"] == port
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()
        for f in (srv.stdout, srv.stderr):
            if f is not None:
                f.close()


def run_serve(*argv: str, prelude: str = "pass") -> subprocess.CompletedProcess[str]:
    code = f"import sys; {prelude}; from kcprpc.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, "serve", "examples.quickstart.service:app", "--port", "0", *argv],
        cwd=ROOT, capture_output=True, text=True, timeout=BOUND, check=False,
    )  # fmt: skip


def test_metrics_port_taken_or_extra_missing_is_one_line() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = run_serve("--metrics", f"127.0.0.1:{port}")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith(f"kcprpc: --metrics: cannot listen on 127.0.0.1:{port}: "), r.stderr
    r = run_serve("--metrics", "127.0.0.1:0", prelude="sys.modules['prometheus_client'] = None")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr == (
        "kcprpc: the metrics endpoint needs prometheus-client: pip install 'kcprpc[metrics]'\n"
    )
