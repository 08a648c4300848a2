/**
 * The interface generated stubs call (helper IDL, `kcprpc idl gen-ts`, targets this).
 *
 * A stub for method `m` of service `pkg.Svc` (wire name `"pkg.Svc/m"`, docs/wire-format/rpc.md)
 * calls exactly one of these on an {@link RpcChannel} (a `Client` is one):
 *
 * ```ts
 * // unary
 * channel.unary<Req, Res>("pkg.Svc/m", request, options): Promise<Res>
 * // server streaming: an async iterable of responses (also has headers()/trailers())
 * channel.serverStream<Req, Res>("pkg.Svc/m", request, options): ServerStreamCall<Res>
 * // client streaming: requests from any (async) iterable, one response
 * channel.clientStream<Req, Res>("pkg.Svc/m", requests, options): Promise<Res>
 * // bidi: send()/end() requests, iterate responses
 * channel.bidi<Req, Res>("pkg.Svc/m", options): BidiCall<Req, Res>
 * // fire-and-forget (@rpc.notify methods), unreliable by default
 * channel.notify("pkg.Svc/m", payload, { metadata }): void
 * // pushed events, by wire event name (@kcprpc.event("name"), default the class name)
 * channel.on<T>("EventName", (payload: T, info: EventInfo) => void): () => void
 * ```
 *
 * Payloads are what the Python side's pydantic dump gives (a model is a plain object keyed by
 * field name or alias; a method without parameters sends `null`; several parameters: one object
 * keyed by parameter name). Values are sent as msgpack: `Uint8Array` is bin, strings are str. The
 * stub does no validation: a wrong request fails with an {@link RpcError} INVALID_ARGUMENT from
 * the server. Every failure is an `RpcError` whose `code` is a {@link Status}.
 */
import type { Status } from "./status.js";

/** Metadata: a msgpack map with string keys. */
export type Metadata = Record<string, unknown>;

/** Options of one call. */
export interface CallOptions {
  /** Relative deadline in milliseconds (sent to the server; also enforced locally). */
  timeoutMs?: number;
  /** Cancels the call (CANCEL is sent; the call fails with CANCELLED). */
  signal?: AbortSignal;
  /** Request metadata. */
  metadata?: Metadata;
}

/** Options of a notify. */
export interface NotifyOptions {
  /** Request metadata. */
  metadata?: Metadata;
  /** Send on the control stream (true) instead of an unreliable datagram (default false). */
  reliable?: boolean;
}

/** Where a pushed event came from. */
export interface EventInfo {
  /** The event's wire name. */
  name: string;
  /** `"room:<name>"`, `"topic:<name>"`, or null for an event sent to this session. */
  key: string | null;
  /** `[epoch, seq]` for room/topic messages, else null. */
  position: [number, number] | null;
  /** Replayed from history after a reconnect or a `since` subscribe. */
  replayed: boolean;
  /** Came as an unreliable datagram. */
  unreliable: boolean;
  /** The latest-wins key of a keyed event, else null. */
  latestKey: string | null;
}

/** A server-streaming call: iterate the responses; the iteration throws the call's RpcError. */
export interface ServerStreamCall<Res> extends AsyncIterable<Res> {
  /** The response's initial metadata (resolves when HEADERS, the first message or the end came). */
  headers(): Promise<Metadata>;
  /** The trailing metadata (resolves when the call ended OK, rejects with its RpcError). */
  trailers(): Promise<Metadata>;
  /** Cancel the call. */
  cancel(): void;
}

/** A bidi call: send requests, iterate responses. */
export interface BidiCall<Req, Res> extends ServerStreamCall<Res> {
  /** Send one request message (waits while the stream's send buffer is full). */
  send(message: Req): Promise<void>;
  /** Half-close: the last request was sent (END). */
  end(): void;
}

/** What generated stubs call (see the module doc). */
export interface RpcChannel {
  /** A unary call. */
  unary<Req, Res>(method: string, request: Req, options?: CallOptions): Promise<Res>;
  /** A server-streaming call. */
  serverStream<Req, Res>(method: string, request: Req, options?: CallOptions): ServerStreamCall<Res>;
  /** A client-streaming call. */
  clientStream<Req, Res>(method: string, requests: Iterable<Req> | AsyncIterable<Req>, options?: CallOptions): Promise<Res>;
  /** A bidi call. */
  bidi<Req, Res>(method: string, options?: CallOptions): BidiCall<Req, Res>;
  /** Fire-and-forget. */
  notify(method: string, payload: unknown, options?: NotifyOptions): void;
  /** Handle pushed events of one wire name; returns the unsubscribe function. */
  on<T>(eventName: string, handler: (payload: T, info: EventInfo) => void): () => void;
}

/** Re-exported for stubs that name status codes. */
export type { Status };
