/**
 * kcprpc for browsers: the public API of the bundle `dist/browser/kcprpc.js` (`import ... from
 * "kcprpc/browser"`). The client, its calls, pushes, reconnect and resume, and state sync, over
 * WebTransport or WebSocket (docs/wire-format/web.md); no KCP, no UDP and no Node module.
 */
export const VERSION = "0.1.0";

// the web transports and connectWeb (src/web/)
export { connectWeb, discover, webConnector } from "./web/connect.js";
export type { WebConnectOptions, WebConnectorOptions, WebEndpoints, FetchLike } from "./web/connect.js";
export { WebTransportBackoff } from "./web/fallback.js";
export type { WebTransportBackoffPolicy } from "./web/fallback.js";
export { WebSocketTransport } from "./web/websocket.js";
export type { WebSocketTransportOptions } from "./web/websocket.js";
export { WebTransportTransport, certificateHashes } from "./web/webtransport.js";
export type { WebTransportTransportOptions } from "./web/webtransport.js";
export { WEB_CLOSE_CODE_BASE, webCloseStatus, refusalError } from "./web/pipe.js";
export type { WebCounters } from "./web/pipe.js";
export {
  WEB_VERSION, WEB_SUBPROTOCOL, WEB_DEFAULT_PATH, MAX_WEB_TOKEN, WebKind, encodeOpen, decodeAnswer, encodeMessage, decodeMessage, parseDiscovery,
} from "./web/framing.js";
export type { Accept, Refuse, WireError, Payload, Discovery } from "./web/framing.js";
export type {
  WebSocketLike, WebSocketConstructor, WebSocketEventLike, WebTransportLike, WebTransportConstructor, CertificateHash,
} from "./web/dom.js";

// RPC (src/rpc/) on any connection, and smux under it
export { Status, RpcError, UsageError, statusFromWire } from "./rpc/status.js";
export type { RpcChannel, CallOptions, NotifyOptions, EventInfo, Metadata, ServerStreamCall, BidiCall } from "./rpc/channel.js";
export { Client, resumeProof, chainInterceptors } from "./rpc/client.js";
export type { ClientOptions, ClientCounters, RawEvent, Position, ClientCallDetails, ClientInterceptor, Rotation } from "./rpc/client.js";
export { MuxConnection, MemoryTransport, memoryTransportPair } from "./rpc/connection.js";
export type { RpcConnection, RpcByteStream, DatagramTransport, CloseInfo } from "./rpc/connection.js";
export type { HeartbeatConfig, ReconnectPolicy } from "./rpc/heartbeat.js";
export { RPC_MUX_CONFIG, DEFAULT_MUX_CONFIG } from "./mux/core.js";
export type { MuxConfig } from "./mux/core.js";

// delta state sync, client side (src/state/): schemas, StateView, clientState
export * from "./state/index.js";

// the stubs of the repository's idl/ (kcprpc's own services and the examples'), for pages that
// use them; a page's own stubs (kcprpc-gen-ts) import only types, so their JavaScript needs no import
export { HealthClient, HealthService } from "./generated/kcprpc.Health.js";
export { ReflectionClient, ReflectionService } from "./generated/kcprpc.Reflection.js";
export { PushClient, PushService } from "./generated/kcprpc.Push.js";
export { GreeterClient, GreeterService } from "./generated/quickstart.Greeter.js";
export { LiveClient, LiveService } from "./generated/live.v1.Live.js";
export { GameClient, GameService } from "./generated/game.v1.Game.js";
