/**
 * The call API that generated stubs (`kcprpc-gen-ts`) are written against.
 *
 * A stub never touches the wire: each method hands the method's wire name (`"<service>/<method>"`,
 * what a CALL or NOTIFY frame carries) and a plain message object to a {@link CallTransport},
 * and casts what comes back to the document's types. The RPC client of this package implements
 * it; a test double can implement it too. Messages are plain objects keyed by field name (msgpack
 * maps on the wire), `Uint8Array` for `{"type": "string", "format": "binary"}`.
 */

/** Options of one call (unary or streaming). */
export interface CallOptions {
  /** Metadata sent with the CALL frame (string keys and values). */
  metadata?: Record<string, string>;
  /** The call's deadline, in milliseconds from now (sent as the CALL frame's timeout). */
  timeoutMs?: number;
  /** Cancels the call when aborted. */
  signal?: AbortSignal;
}

/** Options of a notification (a fire-and-forget NOTIFY frame). */
export interface NotifyOptions {
  /** Metadata sent with the NOTIFY frame. */
  metadata?: Record<string, string>;
}

/**
 * Requests of a client-streaming or bidi call: any iterable, sync or async. The call sends them
 * in order and half-closes its side when the iterable ends.
 */
export type StreamRequests<T> = AsyncIterable<T> | Iterable<T>;

/** One server push as it arrives (an EVENT frame), with its payload typed as `T`. */
export interface PushEvent<T> {
  /** The event's wire name (a key of the document's `events`). */
  name: string;
  /** The payload. */
  data: T;
  /** `"room:<name>"` or `"topic:<name>"` for room and topic pushes; `null` for one session. */
  key: string | null;
  /** Position of the message on its key (from 1); `null` when the push has none. */
  seq: number | null;
  /** Epoch of the key's sequence; `null` when the push has none. */
  epoch: number | null;
  /** True when the push was replayed from history (after a reconnect or a `since`). */
  replayed: boolean;
}

/** Removes the handler it was returned for. */
export type Unsubscribe = () => void;

/**
 * What a generated stub calls. Every method takes the method's wire name; payloads are plain
 * values (the stub narrows them to the document's types).
 */
export interface CallTransport {
  /** A unary call: one request, one response (`null` for a method without one). */
  unary(method: string, request: unknown, options?: CallOptions): Promise<unknown>;
  /** A server-streaming call: one request, the responses as they come. */
  serverStream(method: string, request: unknown, options?: CallOptions): AsyncIterable<unknown>;
  /** A client-streaming call: the requests in order, one response when the server is done. */
  clientStream(method: string, requests: StreamRequests<unknown>, options?: CallOptions): Promise<unknown>;
  /** A bidi call: requests and responses flow both ways at once. */
  bidi(method: string, requests: StreamRequests<unknown>, options?: CallOptions): AsyncIterable<unknown>;
  /** A notification: no response; resolves once the frame is handed to the transport. */
  notify(method: string, request: unknown, options?: NotifyOptions): Promise<void>;
  /** Calls `handler` for each push of the event named `name`, until unsubscribed. */
  onEvent(name: string, handler: (event: PushEvent<unknown>) => void): Unsubscribe;
}
