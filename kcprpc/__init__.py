"""kcprpc: typed RPC for games and live apps over KCP."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _package_version

from kcprpc.broker import (
    Broker,
    BrokerHistory,
    BrokerMessage,
    BrokerUnavailable,
    HistoryPolicy,
    MemoryBroker,
    Position,
)
from kcprpc.builtins import default_services
from kcprpc.client import Client, ClientConfig, EventInfo, RawEvent, StreamCall, UnaryCall, connect
from kcprpc.config import CompatWire, IOOptions, MuxConfig, SecureWire, SessionConfig, Transport
from kcprpc.errors import KcpRpcError, ProtocolError, RpcError, UsageError
from kcprpc.heartbeat import HeartbeatConfig, ReconnectPolicy
from kcprpc.interceptors import ClientCallDetails, ClientInterceptor, ServerInterceptor
from kcprpc.presence import Joined, Left, MemberInfo, MemberList, PresenceConfig
from kcprpc.push import Recovered, ResumeFailed
from kcprpc.push_service import HistoryMessage, HistoryPage, SubscribeReply
from kcprpc.resume import SessionExpired
from kcprpc.server import Server, ServerConfig, ServerContext, ServerSession, current_context
from kcprpc.service import Delivery, MethodKind, MethodSpec, Service, event, raw_method, rpc, service_spec
from kcprpc.status import Status

Server.default_builtins = default_services  # the server itself imports no built-in service

try:
    __version__: str = _package_version("kcprpc")
    """The installed distribution's version (pyproject.toml's ``version``)."""
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "Broker",
    "BrokerHistory",
    "BrokerMessage",
    "BrokerUnavailable",
    "Client",
    "ClientCallDetails",
    "ClientConfig",
    "ClientInterceptor",
    "CompatWire",
    "Delivery",
    "EventInfo",
    "HeartbeatConfig",
    "HistoryMessage",
    "HistoryPage",
    "HistoryPolicy",
    "IOOptions",
    "Joined",
    "KcpRpcError",
    "Left",
    "MemberInfo",
    "MemberList",
    "MemoryBroker",
    "MethodKind",
    "MethodSpec",
    "MuxConfig",
    "Position",
    "PresenceConfig",
    "ProtocolError",
    "RawEvent",
    "ReconnectPolicy",
    "Recovered",
    "ResumeFailed",
    "RpcError",
    "SecureWire",
    "Server",
    "ServerConfig",
    "ServerContext",
    "ServerInterceptor",
    "ServerSession",
    "Service",
    "SessionConfig",
    "SessionExpired",
    "Status",
    "StreamCall",
    "SubscribeReply",
    "Transport",
    "UnaryCall",
    "UsageError",
    "connect",
    "current_context",
    "event",
    "raw_method",
    "rpc",
    "service_spec",
]
