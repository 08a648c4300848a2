"""Service definitions: a class of async methods becomes a table of :class:`MethodSpec`.

Everything that can be prepared is prepared once, when the class is defined (or, if its type hints
name models defined later in the module, on first use): the method kind, the wire name, and the
pydantic ``TypeAdapter`` for the request and the response. A call then only runs prepared code.

Kinds are inferred from annotations and can be stated with decorators:

* ``async def f(self, req: A) -> B`` — unary (``@rpc.unary``)
* ``async def f(self, req: A) -> AsyncIterator[B]`` with ``yield`` — server streaming (``@rpc.server_stream``)
* ``async def f(self, reqs: AsyncIterator[A]) -> B`` — client streaming (``@rpc.client_stream``)
* ``async def f(self, reqs: AsyncIterator[A]) -> AsyncIterator[B]`` — bidirectional (``@rpc.bidi``)
* ``@rpc.notify async def f(self, msg: A) -> None`` — fire-and-forget; unreliable (OOB datagram) by default

Wire names are explicit and stable: ``"<service>/<method>"``; the service name defaults to the
class name and the method name to the attribute name, and either can be set.
"""

from __future__ import annotations

import builtins
import collections.abc
import contextlib
import functools
import inspect
import typing
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar, TypeVar, overload

from pydantic import TypeAdapter, create_model
from pydantic_core import SchemaSerializer, SchemaValidator

from kcp.fieldcheck import shown
from kcprpc.errors import UsageError

F = TypeVar("F", bound=Callable[..., Awaitable[Any] | AsyncIterator[Any]])
"""What the method decorators take and give back unchanged: an ``async def`` (a coroutine function or
an async generator function), so mypy keeps its exact signature and flags a plain ``def``."""
T = TypeVar("T")


class MethodKind(str, Enum):
    """Cardinality of a method."""

    UNARY = "unary"
    SERVER_STREAM = "server_stream"
    CLIENT_STREAM = "client_stream"
    BIDI = "bidi"
    NOTIFY = "notify"

    @property
    def streams_requests(self) -> bool:
        """The client sends a stream of messages."""
        return self in (MethodKind.CLIENT_STREAM, MethodKind.BIDI)

    @property
    def streams_responses(self) -> bool:
        """The server sends a stream of messages."""
        return self in (MethodKind.SERVER_STREAM, MethodKind.BIDI)


class Delivery(str, Enum):
    """How a message travels. The one place that turns this into a path is ``kcprpc.push.route``."""

    RELIABLE = "reliable"  # ordered, on a mux stream (the default)
    UNRELIABLE = "unreliable"  # one OOB datagram, may be lost or reordered

    @classmethod
    def _missing_(cls, value: object) -> Delivery:
        # Delivery("bogus") said "'bogus' is not a valid Delivery", naming neither the parameter
        # nor what it may be
        raise UsageError(f"delivery must be 'reliable' or 'unreliable' (kcprpc.Delivery), not {value!r}")


@dataclass(frozen=True)
class _Options:
    kind: MethodKind | None
    name: str | None
    delivery: Delivery | None


_ATTR = "__kcprpc_method__"


class MethodDecorator:
    """``@rpc.unary`` and friends: usable bare or with ``name=``/``delivery=``; typed so the decorated
    method keeps its signature (stubs stay type-checked)."""

    def __init__(self, kind: MethodKind | None) -> None:
        self.kind = kind

    @overload
    def __call__(self, fn: F) -> F: ...

    @overload
    def __call__(
        self, fn: None = None, *, name: str | None = None, delivery: Delivery | str | None = None
    ) -> Callable[[F], F]: ...

    def __call__(
        self, fn: Any = None, *, name: str | None = None, delivery: Delivery | str | None = None
    ) -> Any:
        if fn is not None and not callable(fn):  # @rpc.unary("join") raised an AttributeError of str
            raise UsageError(
                f"@{self} decorates an async def method; its wire name is a keyword: @{self}(name={fn!r})"
                if isinstance(fn, str)
                else f"@{self} decorates an async def method, not {shown(fn)}"
            )
        opts = _Options(self.kind, name, Delivery(delivery) if delivery is not None else None)

        def apply(f: Any) -> Any:
            setattr(f, _ATTR, opts)
            return f

        return apply(fn) if fn is not None else apply

    def __str__(self) -> str:
        return f"kcprpc.rpc.{self.kind.value if self.kind is not None else 'method'}"


class _Rpc:
    """Method decorators: ``@rpc.unary``, ``@rpc.server_stream``, ``@rpc.client_stream``, ``@rpc.bidi``,
    ``@rpc.notify``, ``@rpc.method(name=...)`` (kind inferred). Each accepts ``name=`` and ``delivery=``.
    ``rpc`` itself is no decorator (``@kcprpc.rpc`` is a UsageError naming these; a type error
    to mypy)."""

    if not typing.TYPE_CHECKING:

        def __call__(self, fn: Any = None, /, *args: Any, **kwargs: Any) -> Any:
            # '_Rpc' object is not callable, said @kcprpc.rpc and @kcprpc.rpc(); the type checker
            # still sees no __call__
            where = f" on {fn.__qualname__}" if callable(fn) and hasattr(fn, "__qualname__") else ""
            raise UsageError(
                f"@kcprpc.rpc{where}: rpc is the namespace of the method decorators, not one: use "
                "@rpc.method (the kind read from the annotations) or @rpc.unary, @rpc.server_stream, "
                "@rpc.client_stream, @rpc.bidi, @rpc.notify"
            )

    unary = MethodDecorator(MethodKind.UNARY)
    server_stream = MethodDecorator(MethodKind.SERVER_STREAM)
    client_stream = MethodDecorator(MethodKind.CLIENT_STREAM)
    bidi = MethodDecorator(MethodKind.BIDI)
    notify = MethodDecorator(MethodKind.NOTIFY)
    method = MethodDecorator(None)


rpc = _Rpc()
"""Namespace of method decorators."""


_NONE_ADAPTER: TypeAdapter[None] = TypeAdapter(type(None))


@dataclass(eq=False)
class MethodSpec:
    """Everything prepared about one method."""

    service: str
    attr: str
    wire_name: str
    kind: MethodKind
    delivery: Delivery
    request_type: Any
    response_type: Any
    request_adapter: TypeAdapter[Any] = field(repr=False)
    response_adapter: TypeAdapter[Any] = field(repr=False)
    has_request: bool = True
    arg_names: tuple[str, ...] | None = None  # set when the method takes several parameters
    signature: inspect.Signature | None = field(default=None, repr=False)

    def pack(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The request object for a call made with ``args``/``kwargs`` (several-parameter methods)."""
        if self.arg_names is None or self.signature is None:
            if kwargs or len(args) > 1:
                raise UsageError(
                    f"{self.wire_name} takes {'one argument' if self.has_request else 'no argument'}"
                )
            return args[0] if args else None
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as e:
            raise UsageError(f"{self.wire_name}: {e}") from None
        bound.apply_defaults()
        return self.request_type.model_construct(**bound.arguments)

    def invoke(self, handler: Callable[..., Any], request: Any) -> Any:
        """Call ``handler`` with a validated request (spread into parameters when there are several)."""
        if self.arg_names is not None:
            return handler(**{n: getattr(request, n) for n in self.arg_names})
        return handler(request) if self.has_request else handler()

    def __post_init__(self) -> None:
        self.streams_requests: bool = self.kind.streams_requests
        self.streams_responses: bool = self.kind.streams_responses
        req, resp = self.request_adapter, self.response_adapter
        # the built validators and serializers themselves: TypeAdapter's methods only forward to
        # them with their defaults, a Python call per request and per reply on each side
        req_load, req_dump = _core(req)
        resp_load, resp_dump = _core(resp)
        self.dump_request: Callable[[Any], Any] = functools.partial(req_dump, warnings=False)
        self.load_request: Callable[[Any], Any] = req_load
        self.load_response: Callable[[Any], Any] = resp_load
        self.dump_message: Callable[[Any], Any] = functools.partial(resp_dump, warnings=False)
        strict = functools.partial(resp_dump, warnings="error")

        def dump_response(value: Any) -> Any:
            """Dump a handler's result; a value of the wrong type is validated first (dicts are fine)."""
            try:
                return strict(value)
            except Exception:
                return strict(resp_load(value))

        self.dump_response: Callable[[Any], Any] = dump_response


def _core(adapter: TypeAdapter[Any]) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """``adapter``'s validate and dump callables: its pydantic-core validator's and serializer's
    own methods when they are built, else the adapter's (a deferred build, built at first use)."""
    try:
        validator = getattr(adapter, "validator", None)
        serializer = getattr(adapter, "serializer", None)
    except Exception:  # a deferred build that cannot be built yet (a forward reference)
        validator = serializer = None
    if isinstance(validator, SchemaValidator) and isinstance(serializer, SchemaSerializer):
        return validator.validate_python, serializer.to_python
    return adapter.validate_python, adapter.dump_python


_ANY_ADAPTER: TypeAdapter[Any] = TypeAdapter(Any)


def raw_method(
    wire_name: str, kind: MethodKind | str = MethodKind.UNARY, delivery: Delivery | str | None = None
) -> MethodSpec:
    """A :class:`MethodSpec` for a method known only by its wire name (``"game.v1.Game/join"``),
    e.g. from an interface document: requests and responses are plain msgpack values (dicts, lists,
    strings ...), passed through without validation. ``delivery`` defaults as for declared methods
    (unreliable for ``notify``)."""
    service, sep, attr = wire_name.partition("/")
    if not sep or not service or not attr:
        raise UsageError(f"{wire_name!r}: a wire name is 'service/method'")
    kind = MethodKind(kind)
    default = Delivery.UNRELIABLE if kind is MethodKind.NOTIFY else Delivery.RELIABLE
    return MethodSpec(
        service=service,
        attr=attr,
        wire_name=wire_name,
        kind=kind,
        delivery=Delivery(delivery) if delivery is not None else default,
        request_type=Any,
        response_type=Any,
        request_adapter=_ANY_ADAPTER,
        response_adapter=_ANY_ADAPTER,
    )


@dataclass
class ServiceSpec:
    """The methods of one service class, by attribute name and by wire name."""

    name: str
    cls: type
    methods: dict[str, MethodSpec]

    def by_wire_name(self) -> dict[str, MethodSpec]:
        """Map ``"<service>/<method>"`` to the spec."""
        return {m.wire_name: m for m in self.methods.values()}


_ITER_ORIGINS = (
    collections.abc.AsyncIterator,
    collections.abc.AsyncIterable,
    collections.abc.AsyncGenerator,
)


def _stream_item(tp: Any) -> tuple[bool, Any]:
    """(is an async iterator type, its item type)."""
    origin = typing.get_origin(tp)
    if origin in _ITER_ORIGINS:
        args = typing.get_args(tp)
        return True, (args[0] if args else Any)
    if tp in _ITER_ORIGINS:
        return True, Any
    return False, tp


def _public_methods(cls: type) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if klass in (object, Service):
            continue
        for attr, fn in vars(klass).items():
            if attr.startswith("_") and callable(fn) and hasattr(fn, _ATTR):  # left out without a word
                raise UsageError(
                    f"{cls.__name__}.{attr}: a method whose name starts with '_' is not served; "
                    "name it without (and set its wire name with name=...) or drop the decorator"
                )
            if attr.startswith("_") or not callable(fn):
                continue
            if hasattr(fn, _ATTR) or inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
                out[attr] = fn
            elif attr in out:
                del out[attr]
    return out


def _build_method(service: str, cls: type, attr: str, fn: Any) -> MethodSpec:
    opts: _Options = getattr(fn, _ATTR, _Options(None, None, None))
    if not (inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)):
        raise UsageError(f"{cls.__name__}.{attr}: RPC methods must be 'async def'")
    module = inspect.getmodule(fn) or inspect.getmodule(cls)
    hints = typing.get_type_hints(fn, globalns=vars(module) if module else None, localns=dict(vars(cls)))
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())[1:]  # drop self
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise UsageError(f"{cls.__name__}.{attr}: *args/**kwargs are not supported")
    has_request = bool(params)
    arg_names: tuple[str, ...] | None = None
    if len(params) > 1:
        # several parameters travel as one map keyed by parameter name, validated by a model made here
        for p in params:
            if _stream_item(hints.get(p.name, Any))[0]:
                raise UsageError(f"{cls.__name__}.{attr}: a streaming parameter must be the only one")
        fields: dict[str, Any] = {
            p.name: (hints.get(p.name, Any), ... if p.default is p.empty else p.default) for p in params
        }
        req_tp = create_model(f"{cls.__name__}_{attr}_args", **fields)
        arg_names = tuple(p.name for p in params)
    elif has_request:
        req_tp = hints.get(params[0].name, Any)
    else:
        req_tp = type(None)
    ret_tp = hints.get("return", Any)
    req_stream, req_item = _stream_item(req_tp)
    resp_stream, resp_item = _stream_item(ret_tp)
    if inspect.isasyncgenfunction(fn):
        resp_stream = True
    if req_stream and resp_stream:
        inferred = MethodKind.BIDI
    elif req_stream:
        inferred = MethodKind.CLIENT_STREAM
    elif resp_stream:
        inferred = MethodKind.SERVER_STREAM
    else:
        inferred = MethodKind.UNARY
    kind = opts.kind or inferred
    if kind is MethodKind.NOTIFY:
        if req_stream or resp_stream:
            raise UsageError(f"{cls.__name__}.{attr}: a notify method takes one message and returns None")
        resp_item = type(None)
    elif kind is not inferred:
        raise UsageError(
            f"{cls.__name__}.{attr}: declared {kind.value} but the annotations say {inferred.value}"
        )
    default_delivery = Delivery.UNRELIABLE if kind is MethodKind.NOTIFY else Delivery.RELIABLE
    delivery = opts.delivery or default_delivery
    if delivery is Delivery.UNRELIABLE and kind is not MethodKind.NOTIFY:
        raise UsageError(f"{cls.__name__}.{attr}: only notify methods can be unreliable")
    if opts.name is not None and (type(opts.name) is not str or not opts.name or "/" in opts.name):
        raise UsageError(
            f"{cls.__name__}.{attr}: a method name is a non-empty str without '/', not {opts.name!r}"
        )
    wire = f"{service}/{opts.name or attr}"
    return MethodSpec(
        service=service,
        attr=attr,
        wire_name=wire,
        kind=kind,
        delivery=delivery,
        request_type=req_item,
        response_type=resp_item,
        request_adapter=_NONE_ADAPTER if req_item is type(None) else TypeAdapter(req_item),
        response_adapter=_NONE_ADAPTER if resp_item is type(None) else TypeAdapter(resp_item),
        has_request=has_request,
        arg_names=arg_names,
        signature=sig.replace(parameters=params) if arg_names else None,
    )


_SPEC_ATTR = "__kcprpc_spec__"
_METHOD_SPEC_ATTR = "__kcprpc_method_spec__"


def method_spec(fn: Any) -> MethodSpec:
    """The spec of a service method given as ``Service.method`` (the unbound function)."""
    spec = getattr(fn, _METHOD_SPEC_ATTR, None)
    if spec is None:
        qual = getattr(fn, "__qualname__", "")
        owner_name = qual.rsplit(".", 1)[0] if "." in qual else ""
        module = inspect.getmodule(fn)
        owner = getattr(module, owner_name, None) if module and owner_name else None
        if isinstance(owner, type):
            service_spec(owner)
            spec = getattr(fn, _METHOD_SPEC_ATTR, None)
    if not isinstance(spec, MethodSpec):
        raise UsageError(f"{fn!r} is not a method of a service class")
    return spec


def service_spec(cls: type) -> ServiceSpec:
    """Analyse (once, then cached on the class) a service class and return its spec."""
    cached = cls.__dict__.get(_SPEC_ATTR)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    name = cls.__dict__.get("__rpc_name__") or cls.__name__
    methods = {attr: _build_method(name, cls, attr, fn) for attr, fn in _public_methods(cls).items()}
    wire_seen: dict[str, str] = {}
    for m in methods.values():
        if m.wire_name in wire_seen:
            raise UsageError(f"{cls.__name__}: wire name {m.wire_name!r} used twice")
        wire_seen[m.wire_name] = m.attr
    spec = ServiceSpec(name=name, cls=cls, methods=methods)
    setattr(cls, _SPEC_ATTR, spec)
    for m in methods.values():
        fn = getattr(cls, m.attr)
        if not hasattr(fn, _METHOD_SPEC_ATTR):
            with contextlib.suppress(AttributeError):
                setattr(fn, _METHOD_SPEC_ATTR, m)
    return spec


class Service:
    """Optional base class: analyses the service when the class is defined.

    ``class Greeter(kcprpc.Service, name="hello.Greeter")`` sets the wire name of the service.
    If a type hint names a model defined later in the module, analysis waits for first use.

    The events the service pushes and the topics it publishes to are declared the same way, so that
    its interface document (``kcprpc idl export``, reflection) lists them::

        class Live(kcprpc.Service, name="live.v1.Live", events=[Announcement],
                   topics={"channel:{channel}": [Chat, Gift]}):

    (stored as ``__rpc_events__`` / ``__rpc_topics__``, which plain classes may set themselves;
    a subclass inherits them unless it declares its own).
    """

    __rpc_name__: ClassVar[str]
    __rpc_events__: ClassVar[tuple[type, ...]] = ()
    __rpc_topics__: ClassVar[Mapping[str, tuple[type, ...]]] = {}

    def __init_subclass__(
        cls,
        name: str | None = None,
        events: Iterable[type] | None = None,
        topics: Mapping[str, Iterable[type]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        if name is not None:
            if (
                type(name) is not str
                or not name
                or "/" in name
                or not name.isprintable()
                or name != name.strip()
            ):
                raise UsageError(
                    f"{cls.__name__}: a service name is a non-empty printable str without '/' or spaces "
                    f"around it (the wire name is service/method), not {name!r}"
                )
            cls.__rpc_name__ = name
        elif "__rpc_name__" not in cls.__dict__:
            cls.__rpc_name__ = cls.__name__
        if events is not None:
            cls.__rpc_events__ = _event_types(cls, "events", events)
        if topics is not None:
            if not isinstance(topics, Mapping):
                raise UsageError(
                    f"{cls.__name__}: topics must be a mapping of topic templates to lists of event "
                    f"types, not {shown(topics)}"
                )
            for t in topics:
                if not isinstance(t, str):
                    raise UsageError(f"{cls.__name__}: a topic template is a str, not {shown(t)}")
            cls.__rpc_topics__ = {t: _event_types(cls, f"topics[{t!r}]", evs) for t, evs in topics.items()}
        # forward references are resolved by service_spec() at registration instead
        with contextlib.suppress(NameError):
            service_spec(cls)


def _event_types(cls: type, where: str, events: object) -> tuple[type, ...]:
    """``events`` (declared by ``cls`` as ``where``) as a tuple of event types, else a
    :class:`UsageError` naming the one that is not (``events=[1]`` was kept and failed only
    when the interface document was exported)."""
    if isinstance(events, (str, bytes, type)) or not isinstance(events, Iterable):
        raise UsageError(f"{cls.__name__}: {where} must be a list of event types, not {shown(events)}")
    out = tuple(events)
    for tp in out:
        if not isinstance(tp, type) or getattr(builtins, tp.__name__, None) is tp or tp is type(None):
            raise UsageError(
                f"{cls.__name__}: {where} holds {shown(tp)}, which is not an event type (a pydantic "
                "model class, optionally declared with @kcprpc.event)"
            )
    return out


@overload
def event(name: type[T], /) -> type[T]: ...


@overload
def event(
    name: str | None = None,
    *,
    delivery: Delivery | str = Delivery.RELIABLE,
    key: str | None = None,
    lane: str | None = None,
) -> Callable[[type[T]], type[T]]: ...


def event(
    name: Any = None,
    *,
    delivery: Delivery | str = Delivery.RELIABLE,
    key: str | None = None,
    lane: str | None = None,
) -> Any:
    """Class decorator for push event types: sets the stable wire name (default: the class name)
    and the default delivery. ``@kcprpc.event``, ``@kcprpc.event("game.snapshot")`` or
    ``@kcprpc.event("pos", delivery="unreliable")``.

    ``key``: the name of a field whose value (its ``str()``) is the event's latest-wins key, e.g.
    ``key="entity_id"``: per session, a newer event of the same key replaces one still queued
    (docs/rpc.md, "Latest-wins and priorities"). ``lane``: the send lane (priority class) its
    events wait in (a keyed event without one: ``LaneConfig.default_lane``)."""
    if isinstance(name, type):
        return event()(name)
    wire = name

    def apply(cls: type[T]) -> type[T]:
        wname = wire or cls.__name__
        setattr(cls, "__rpc_event__", wname)  # noqa: B010
        setattr(cls, "__rpc_delivery__", Delivery(delivery))  # noqa: B010
        _EVENT_ADAPTERS.pop(cls, None)
        if key is not None or lane is not None:
            fields = getattr(cls, "model_fields", None)
            if key is not None and isinstance(fields, dict) and key not in fields:
                raise UsageError(f"event {wname!r}: key field {key!r} is not a field of {cls.__name__}")
            _EVENT_SEND[wname] = EventSend(key, lane)
        else:
            _EVENT_SEND.pop(wname, None)
        return cls

    return apply


class EventSend(typing.NamedTuple):
    """How an event type declared with ``@event(key=..., lane=...)`` is sent: the field that holds
    its latest-wins key (or None) and its lane (or None)."""

    key_field: str | None
    lane: str | None


_EVENT_SEND: dict[str, EventSend] = {}


event_send: Callable[[str], EventSend | None] = _EVENT_SEND.get
"""``event_send(name)``: the declared key field and lane of the event called ``name`` (None: neither
declared). Looked up by wire name, so that a server fanning out a broker message (a name and a
payload) finds it; a bound ``dict.get``, the cheapest call on the hot send paths."""


_EVENT_ADAPTERS: dict[Any, tuple[str, Delivery, TypeAdapter[Any]]] = {}


def event_info(tp: Any) -> tuple[str, Delivery, TypeAdapter[Any]]:
    """(wire name, default delivery, adapter) for an event type; built once per type."""
    info = _EVENT_ADAPTERS.get(tp)
    if info is None:
        if getattr(tp, "__module__", None) == "builtins":  # send({"a": 1}) went out as an event "dict"
            raise UsageError(
                f"a {getattr(tp, '__name__', tp)} is not an event: send an instance of a pydantic model "
                "(optionally declared with @kcprpc.event)"
            )
        name = getattr(tp, "__rpc_event__", None) or getattr(tp, "__name__", None) or str(tp)
        info = (name, getattr(tp, "__rpc_delivery__", Delivery.RELIABLE), TypeAdapter(tp))
        _EVENT_ADAPTERS[tp] = info
    return info
