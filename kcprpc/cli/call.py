"""``kcprpc call HOST:PORT SERVICE.METHOD [JSON]``: a request (JSON, validated against the
document's schema), the response as JSON; streaming requests are JSON lines."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from kcprpc.cli.catalog import Catalog, dynamic_spec
from kcprpc.cli.connect import parse_metadata, with_client
from kcprpc.cli.render import dump_json
from kcprpc.cli.runner import CliError
from kcprpc.cli.schema import accept_any, request_validator
from kcprpc.client import Client
from kcprpc.errors import RpcError, UsageError
from kcprpc.service import MethodKind
from kcprpc.status import Status


def _parse_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as e:
        raise CliError(Status.INVALID_ARGUMENT, f"{what} is not valid JSON: {e}") from None


def _read_data(data: str) -> str:
    if data.startswith("@"):
        name = data[1:]
        if name == "-":
            return sys.stdin.read()
        try:
            return Path(name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"-d {data}: cannot read: {e}") from None
    return data


async def _stdin_lines() -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        if line.strip():
            yield line


async def cmd_call(args: argparse.Namespace) -> int:
    """``kcprpc call HOST:PORT SERVICE.METHOD [JSON]``."""

    async def body(client: Client, cat: Catalog) -> int:
        doc, member = await cat.resolve(args.method)
        if member is None:
            raise CliError(Status.INVALID_ARGUMENT, f"{args.method!r} names a service; call SERVICE.METHOD")
        spec = dynamic_spec(doc, member)
        m = doc["methods"][member]
        check = accept_any if args.no_validate else request_validator(doc, m["request"], spec.wire_name)
        if args.request is not None and args.data is not None:
            raise UsageError("give the request either as an argument or with -d, not both")
        text = (
            args.request
            if args.request is not None
            else (_read_data(args.data) if args.data is not None else None)
        )
        md = parse_metadata(args.header)

        def fn(request: Any) -> Any:
            return client.invoke(spec, request, timeout=args.timeout, metadata=md or None)

        stream_in = spec.kind in (MethodKind.CLIENT_STREAM, MethodKind.BIDI)
        if stream_in:
            bad: list[CliError] = []

            async def requests() -> AsyncIterator[Any]:
                lines: AsyncIterator[str]
                if text is not None:

                    async def given() -> AsyncIterator[str]:
                        for ln in text.splitlines():
                            if ln.strip():
                                yield ln

                    lines = given()
                else:
                    lines = _stdin_lines()
                n = 0
                async for ln in lines:
                    n += 1
                    try:
                        value = _parse_json(ln, f"request line {n}")
                        check(value)
                    except CliError as e:
                        bad.append(e)
                        raise
                    yield value

            try:
                if spec.kind is MethodKind.CLIENT_STREAM:
                    print(dump_json(await fn(requests()), True))
                else:
                    async with fn(requests()) as call:
                        async for item in call:
                            print(dump_json(item, False), flush=True)
            except RpcError:
                if bad:
                    raise bad[0] from None
                raise
            return 0
        if text is None:
            value: Any = None if not spec.has_request else {}
        else:
            value = _parse_json(text, "the request")
        if spec.has_request or value is not None:
            check(value)
        if spec.kind is MethodKind.NOTIFY:
            fn(value)
            await asyncio.sleep(0)  # let the datagram leave
            return 0
        if spec.kind is MethodKind.SERVER_STREAM:
            async with fn(value) as call:
                async for item in call:
                    print(dump_json(item, False), flush=True)
            return 0
        print(dump_json(await fn(value), True))
        return 0

    return await with_client(args, body)
