/**
 * The parts of the browser's `WebSocket` and `WebTransport` APIs the web transports use, as
 * structural types: the package compiles without the DOM library, a page passes the browser's own
 * objects (they fit these shapes), and tests pass an in-process fake.
 */

/** What a WebSocket event carries (message: `data`; close: `code`, `reason`, `wasClean`). */
export interface WebSocketEventLike {
  readonly data?: unknown;
  readonly code?: number;
  readonly reason?: string;
  readonly wasClean?: boolean;
}

/** The browser's `WebSocket`, as far as {@link WebSocketTransport} uses it. */
export interface WebSocketLike {
  /** "arraybuffer" is set: binary messages arrive as ArrayBuffers. */
  binaryType: string;
  /** 0 CONNECTING, 1 OPEN, 2 CLOSING, 3 CLOSED. */
  readonly readyState: number;
  /** Bytes queued by `send` and not yet handed to the network. */
  readonly bufferedAmount: number;
  /** The subprotocol the server selected. */
  readonly protocol: string;
  /** Queue one binary message. */
  send(data: Uint8Array): void;
  /** Start the closing handshake. */
  close(code?: number, reason?: string): void;
  /** "open", "message", "close", "error". */
  addEventListener(type: string, listener: (event: WebSocketEventLike) => void): void;
}

/** `new WebSocket(url, protocols)`. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** A `ReadableStream` reader's `read()` result. */
export interface ReadResultLike {
  readonly done: boolean;
  readonly value?: Uint8Array | undefined;
}

/** A `ReadableStream<Uint8Array>` as the transports read it. */
export interface ReadableLike {
  getReader(): {
    read(): Promise<ReadResultLike>;
    cancel(reason?: unknown): Promise<void>;
    releaseLock(): void;
  };
}

/** A `WritableStream<Uint8Array>`'s default writer, as the transports write to it. */
export interface WriterLike {
  /** Queue a chunk; settles when it was handed on (or failed). */
  write(chunk: Uint8Array): Promise<void>;
  /** Close after what is queued. */
  close(): Promise<void>;
  /** Drop what is queued and error the stream. */
  abort(reason?: unknown): Promise<void>;
  /** Room left in the queue (≤ 0: full), or null once errored. */
  readonly desiredSize: number | null;
}

/** A `WritableStream<Uint8Array>`. */
export interface WritableLike {
  getWriter(): WriterLike;
}

/** What `WebTransport.closed` resolves with. */
export interface WebTransportCloseInfoLike {
  readonly closeCode?: number;
  readonly reason?: string;
}

/** The browser's `WebTransport`, as far as {@link WebTransportTransport} uses it. */
export interface WebTransportLike {
  /** Resolves once the session is established. */
  readonly ready: Promise<unknown>;
  /** Settles once the session has ended. */
  readonly closed: Promise<WebTransportCloseInfoLike>;
  /** The session's datagrams. */
  readonly datagrams: {
    readonly readable: ReadableLike;
    readonly writable: WritableLike;
    /** The largest datagram the session carries (Chromium). */
    readonly maxDatagramSize?: number;
  };
  /** Open a bidirectional stream. */
  createBidirectionalStream(): Promise<{ readonly readable: ReadableLike; readonly writable: WritableLike }>;
  /** End the session. */
  close(info?: { closeCode?: number; reason?: string }): void;
}

/** A certificate hash for `serverCertificateHashes`. */
export interface CertificateHash {
  readonly algorithm: "sha-256";
  readonly value: Uint8Array;
}

/** `new WebTransport(url, options)`. */
export type WebTransportConstructor = new (url: string, options?: { serverCertificateHashes?: CertificateHash[] }) => WebTransportLike;

/** The global `WebSocket`, if this runtime has one. */
export function globalWebSocket(): WebSocketConstructor | undefined {
  return (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
}

/** The global `WebTransport`, if this runtime (browser) has one. */
export function globalWebTransport(): WebTransportConstructor | undefined {
  return (globalThis as { WebTransport?: WebTransportConstructor }).WebTransport;
}
