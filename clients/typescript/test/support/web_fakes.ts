/**
 * IN-PROCESS FAKES (not real sockets) of the browser's WebSocket and WebTransport, for the web
 * transports' unit tests: the test plays the server, byte for byte, and can hold the send queue
 * (`bufferedAmount`) or the streams still. The real server is tested in web_e2e.test.ts.
 */
import type { ReadableLike, WebSocketEventLike, WebSocketLike, WebTransportCloseInfoLike, WebTransportLike, WritableLike } from "../../src/web/dom.js";

type Listener = (ev: WebSocketEventLike) => void;

/** FAKE WebSocket: `accept()` opens it (selecting a subprotocol), `message()` / `serverClose()` play the server. */
export class FakeWebSocket implements WebSocketLike {
  /** Every fake made, newest last. */
  static made: FakeWebSocket[] = [];
  binaryType = "blob";
  readyState = 0;
  bufferedAmount = 0;
  protocol = "";
  /** Messages the client sent. */
  readonly sent: Uint8Array[] = [];
  /** The client's close(code, reason), once called. */
  closedWith: { code: number | undefined; reason: string | undefined } | null = null;
  /** Grow bufferedAmount by what is sent (a network that takes nothing). */
  holdSends = false;
  /** Called for each message the client sends (a test's server end). */
  onSend: ((data: Uint8Array) => void) | null = null;
  private readonly listeners = new Map<string, Listener[]>();
  constructor(readonly url: string, readonly protocols?: string | string[]) {
    FakeWebSocket.made.push(this);
  }
  /** The newest fake. */
  static last(): FakeWebSocket {
    const ws = FakeWebSocket.made[FakeWebSocket.made.length - 1];
    if (!ws) throw new Error("no FakeWebSocket made");
    return ws;
  }
  send(data: Uint8Array): void {
    if (this.readyState !== 1) throw new Error("InvalidStateError: not open");
    const copy = data.slice();
    this.sent.push(copy);
    if (this.holdSends) this.bufferedAmount += copy.length;
    this.onSend?.(copy);
  }
  close(code?: number, reason?: string): void {
    // as a browser's: only 1000 and 3000-4999, a reason of at most 123 UTF-8 bytes
    if (code !== undefined && code !== 1000 && !(code >= 3000 && code <= 4999)) throw new Error(`InvalidAccessError: close code ${code}`);
    if (reason !== undefined && new TextEncoder().encode(reason).length > 123) throw new Error("SyntaxError: close reason over 123 bytes");
    if (this.readyState >= 2) return;
    this.closedWith = { code, reason };
    this.readyState = 2;
    queueMicrotask(() => this.serverClose(code ?? 1005, reason ?? ""));
  }
  addEventListener(type: string, listener: Listener): void {
    const l = this.listeners.get(type) ?? [];
    l.push(listener);
    this.listeners.set(type, l);
  }
  private emit(type: string, ev: WebSocketEventLike): void {
    for (const l of [...(this.listeners.get(type) ?? [])]) l(ev);
  }
  /** Server side: the handshake succeeds with `protocol` selected. */
  accept(protocol = "kcprpc.v1"): void {
    this.protocol = protocol;
    this.readyState = 1;
    this.emit("open", {});
  }
  /** Server side: one message (bytes arrive as an ArrayBuffer, as with binaryType "arraybuffer"). */
  message(data: Uint8Array | string): void {
    this.emit("message", { data: typeof data === "string" ? data : data.slice().buffer });
  }
  /** Server side: the connection closes with `code`. */
  serverClose(code: number, reason = ""): void {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.emit("close", { code, reason, wasClean: code !== 1006 });
  }
}

/** One direction of a fake stream: the client's end and the test's end. */
export interface Pipe {
  readonly readable: ReadableStream<Uint8Array>;
  readonly writable: WritableStream<Uint8Array>;
}

function pipe(): Pipe {
  return new TransformStream<Uint8Array, Uint8Array>();
}

/**
 * FAKE WebTransport over in-memory web streams: `toServer` / `toClient` are the bidirectional
 * stream's two directions, `dgramToServer` / `dgramToClient` the datagrams'. `fail` makes `ready`
 * reject; `serverClose` ends the session.
 */
export class FakeWebTransport implements WebTransportLike {
  static made: FakeWebTransport[] = [];
  /** What the test passes to the next fake: make its session fail. */
  static failNext: string | null = null;
  readonly ready: Promise<unknown>;
  readonly closed: Promise<WebTransportCloseInfoLike>;
  readonly toServer = pipe();
  readonly toClient = pipe();
  readonly dgramToServer = pipe();
  readonly dgramToClient = pipe();
  readonly datagrams: { readable: ReadableLike; writable: WritableLike; maxDatagramSize: number };
  /** The test's (server's) ends: write to the client's stream and datagrams, read what it sent. */
  readonly streamOut: WritableStreamDefaultWriter<Uint8Array>;
  readonly dgramOut: WritableStreamDefaultWriter<Uint8Array>;
  readonly streamIn: ReadableStreamDefaultReader<Uint8Array>;
  readonly dgramIn: ReadableStreamDefaultReader<Uint8Array>;
  /** Streams the client opened. */
  streams = 0;
  /** The client's close(info), once called. */
  closedWith: { closeCode?: number; reason?: string } | null = null;
  private resolveClosed!: (info: WebTransportCloseInfoLike) => void;
  constructor(readonly url: string, readonly options?: { serverCertificateHashes?: Array<{ algorithm: string; value: Uint8Array }> }) {
    FakeWebTransport.made.push(this);
    const fail = FakeWebTransport.failNext;
    FakeWebTransport.failNext = null;
    this.ready = fail ? Promise.reject(new Error(fail)) : Promise.resolve();
    this.ready.catch(() => undefined);
    this.closed = new Promise((r) => (this.resolveClosed = r));
    this.datagrams = { readable: this.dgramToClient.readable, writable: this.dgramToServer.writable, maxDatagramSize: 1100 };
    this.streamOut = this.toClient.writable.getWriter();
    this.dgramOut = this.dgramToClient.writable.getWriter();
    this.streamIn = this.toServer.readable.getReader();
    this.dgramIn = this.dgramToServer.readable.getReader();
  }
  /** Server side: read what the client wrote on the stream until `n` bytes came (or it ended). */
  async readStream(n: number): Promise<Uint8Array> {
    const parts: number[] = [];
    while (parts.length < n) {
      const r = await this.streamIn.read();
      if (r.done) break;
      parts.push(...r.value);
    }
    return Uint8Array.from(parts);
  }
  static last(): FakeWebTransport {
    const wt = FakeWebTransport.made[FakeWebTransport.made.length - 1];
    if (!wt) throw new Error("no FakeWebTransport made");
    return wt;
  }
  async createBidirectionalStream(): Promise<{ readable: ReadableLike; writable: WritableLike }> {
    this.streams++;
    return { readable: this.toClient.readable, writable: this.toServer.writable };
  }
  close(info?: { closeCode?: number; reason?: string }): void {
    if (this.closedWith) return;
    this.closedWith = info ?? {};
    this.serverClose(info?.closeCode ?? 0, info?.reason ?? "");
  }
  /** Server side: the session ends with `code` (its streams error). */
  serverClose(code: number, reason = ""): void {
    for (const w of [this.streamOut, this.dgramOut]) void w.abort(new Error("session closed")).catch(() => undefined);
    for (const r of [this.streamIn, this.dgramIn]) void r.cancel("session closed").catch(() => undefined);
    this.resolveClosed({ closeCode: code, reason });
  }
}
