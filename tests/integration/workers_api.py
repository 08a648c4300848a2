"""``kcprpc.serve_workers`` from Python, for tests/integration/test_workers.py: the app is a closure
(fork runs it in each worker), on 127.0.0.1 and a free port.

``python tests/integration/workers_api.py [--no-route]`` prints ``PORT <n> PIDS <a>,<b>`` once both
workers serve, and serves until SIGTERM; ``--no-route`` leaves secure packets to the kernel's
address hash (what migrating across workers breaks without the CBPF router).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import kcprpc
from tests.integration.workers_app import KEY, Who


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-route", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    greeting = "built in the worker"  # the closure's state: fork carries it, no import by name

    def factory() -> kcprpc.Server:
        assert greeting
        return kcprpc.Server([Who()], key=KEY)

    def ready(server: kcprpc.Server, address: tuple[str, int], pids: list[int]) -> None:
        print(f"PORT {address[1]} PIDS {','.join(map(str, pids))}", flush=True)

    return kcprpc.serve_workers(
        factory, 2, host="127.0.0.1", port=0, grace=1.0, route_by_cid=not args.no_route, on_ready=ready
    )


if __name__ == "__main__":
    sys.exit(main())
