"""Service analysis: kinds, wire names, adapters, misuse."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pydantic import BaseModel
from test_rpc_support import Demo

import kcprpc
from kcprpc import MethodKind, UsageError, rpc, service_spec
from kcprpc.service import Delivery, method_spec


class M(BaseModel):
    x: int


def test_kinds_and_wire_names_are_inferred() -> None:
    spec = service_spec(Demo)
    assert spec.name == "test.Demo"
    kinds = {a: m.kind for a, m in spec.methods.items()}
    assert kinds["hello"] is MethodKind.UNARY
    assert kinds["count"] is MethodKind.SERVER_STREAM
    assert kinds["total"] is MethodKind.CLIENT_STREAM
    assert kinds["upper"] is MethodKind.BIDI
    assert kinds["position"] is MethodKind.NOTIFY
    assert spec.methods["echo"].wire_name == "test.Demo/Echo"
    assert spec.methods["position"].delivery is Delivery.UNRELIABLE
    assert spec.methods["position_reliable"].delivery is Delivery.RELIABLE
    assert not spec.methods["nothing"].has_request
    assert method_spec(Demo.hello) is spec.methods["hello"]


def test_spec_is_built_once_at_class_creation() -> None:
    class S(kcprpc.Service):
        async def f(self, m: M) -> M:
            return m

    assert "__kcprpc_spec__" in S.__dict__
    assert service_spec(S) is service_spec(S)
    assert service_spec(S).methods["f"].load_request({"x": "3"}) == M(x=3)


def test_plain_class_works_too() -> None:
    class Plain:
        async def f(self, m: M) -> AsyncIterator[M]:
            yield m

        def helper(self) -> None: ...

    spec = service_spec(Plain)
    assert list(spec.methods) == ["f"] and spec.methods["f"].kind is MethodKind.SERVER_STREAM


def test_misuse_is_reported() -> None:
    with pytest.raises(UsageError):

        class StreamAndMore(kcprpc.Service):
            async def f(self, a: AsyncIterator[int], b: int) -> int:
                return b

    with pytest.raises(UsageError):

        class Star(kcprpc.Service):
            async def f(self, *a: int) -> int:
                return 0

    with pytest.raises(UsageError):

        class Lies(kcprpc.Service):
            @rpc.server_stream
            async def f(self, a: int) -> int:
                return a

    with pytest.raises(UsageError):

        class Sync(kcprpc.Service):
            @rpc.unary
            def f(self, a: int) -> int:
                return a

    with pytest.raises(UsageError):

        class Dup(kcprpc.Service):
            async def a(self, x: int) -> int:
                return x

            @rpc.unary(name="a")
            async def b(self, x: int) -> int:
                return x

    with pytest.raises(UsageError):

        class UnreliableUnary(kcprpc.Service):
            @rpc.unary(delivery="unreliable")
            async def f(self, a: int) -> int:
                return a


def test_event_decorator_forms() -> None:
    from kcprpc.service import event_info

    @kcprpc.event
    class A(BaseModel):
        x: int

    @kcprpc.event("b.v1", delivery="unreliable")
    class B(BaseModel):
        x: int

    class C(BaseModel):
        x: int

    assert event_info(A)[:2] == ("A", Delivery.RELIABLE)
    assert event_info(B)[:2] == ("b.v1", Delivery.UNRELIABLE)
    assert event_info(C)[:2] == ("C", Delivery.RELIABLE)
    assert event_info(A)[2].validate_python({"x": "1"}) == A(x=1)


def test_several_parameters_travel_as_one_map() -> None:
    class S(kcprpc.Service):
        async def f(self, a: int, m: M, b: str = "x") -> str:
            return f"{a}{m.x}{b}"

    spec = service_spec(S).methods["f"]
    assert spec.arg_names == ("a", "m", "b")
    req = spec.pack((1, M(x=2)), {})
    assert spec.dump_request(req) == {"a": 1, "m": {"x": 2}, "b": "x"}
    assert spec.load_request({"a": "1", "m": {"x": "2"}}).b == "x"
    with pytest.raises(UsageError):
        spec.pack((), {"zz": 1})
