"""Start a greeter server on loopback KCP (secure mode with a passphrase, FEC 10/3), call it, print, exit."""

from __future__ import annotations

import time

import kcprpc
from examples.common import ArgumentParser, exit_with, field_type
from examples.quickstart.service import CountRequest, Greeter, HelloRequest

# secure mode: the passphrase is the PSK; FEC 10/3 (the client proposes it, the server allows it)
TRANSPORT = kcprpc.Transport(kcprpc.SecureWire(key="quickstart secret", fec=(10, 3)))


async def main(name: str, count: int) -> int:
    server = kcprpc.Server([Greeter()], "127.0.0.1", 0, transport=TRANSPORT)
    host, port = await server.start()
    print(f"server listening on kcp://{host}:{port} (secure, fec 10/3)")
    try:
        async with kcprpc.connect(host, port, transport=TRANSPORT) as client:
            greeter = client.stub(Greeter, timeout=5.0)

            t0 = time.perf_counter()
            reply = await greeter.hello(HelloRequest(name=name))
            print(f"unary  hello -> {reply.message!r} in {(time.perf_counter() - t0) * 1000:.2f} ms")

            got = [c.n async for c in greeter.count(CountRequest(to=count))]
            print(f"stream count -> {got}")

            try:
                await greeter.hello({"name": ""})  # type: ignore[arg-type]
            except kcprpc.RpcError as e:
                print(f"bad request -> {e.status.name}: {e.details[0]['msg']}")

            print(f"health -> {await client.health()}")
    finally:
        await server.shutdown(grace=1.0)
    return 0


def run() -> None:
    ap = ArgumentParser(prog="python -m examples.quickstart", description=__doc__)
    ap.add_argument("--name", type=field_type(HelloRequest, "name"), default="kcprpc", help="1 to 64 characters")
    ap.add_argument("--count", type=field_type(CountRequest, "to", int), default=5, help="1 to 1000")
    args = ap.parse_args()
    exit_with(main(args.name, args.count))


if __name__ == "__main__":
    run()
