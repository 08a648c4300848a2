/**
 * {@link WebSocketTransport}: a kcprpc connection over the browser's `WebSocket` API
 * (docs/wire-format/web.md, "Over WebSocket"): subprotocol `kcprpc.v1`, OPEN → ACCEPT or REFUSE,
 * then STREAM messages carry the smux byte stream and DATAGRAM messages the RPC datagrams. It is a
 * {@link DatagramTransport}, so {@link MuxConnection} and the {@link Client} run on it unchanged;
 * the ACCEPT's binding is its channel binding (session resume is bound to it).
 */
import type { DatagramTransport } from "../rpc/connection.js";
import { RpcError, Status, UsageError } from "../rpc/status.js";
import { globalWebSocket, type WebSocketConstructor, type WebSocketEventLike, type WebSocketLike } from "./dom.js";
import { WEB_SUBPROTOCOL, WebKind, decodeAnswer, decodeMessage, encodeMessage, type Accept } from "./framing.js";
import { WebPipe, positive, refusalError, shortReason, webCloseStatus, webOpenSettings, within, type WebOpenOptions } from "./pipe.js";

/** Options of {@link WebSocketTransport.open}. */
export interface WebSocketTransportOptions extends WebOpenOptions {
  /** How long the WebSocket handshake and the server's answer may take (default 5000 ms). */
  openTimeoutMs?: number;
  /** The largest message sent (default 65536, the server's default `max_message_size`): smux bytes go in STREAM messages of at most this size. */
  maxMessageSize?: number;
  /** Bytes of smux data held while the mux is paused; past it the connection is closed (default 8 MiB). */
  maxReceiveBuffer?: number;
  /** `write` reports a full queue, and datagrams are dropped, while the socket's `bufferedAmount` is at least this (default 1 MiB). */
  sendHighWater?: number;
  /** How often `drained()` looks at `bufferedAmount` while the queue is full (default 10 ms; the API has no event for it). */
  drainPollMs?: number;
  /** How long `waitClosed()` waits for the closing handshake (default 5000 ms). */
  closeLingerMs?: number;
  /** The `WebSocket` constructor (default the global one). */
  WebSocket?: WebSocketConstructor;
}

const OPEN = 1;

/** A binary message's bytes, or null for a text (or other) message. */
function messageBytes(data: unknown): Uint8Array | null {
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return null;
}

/** A kcprpc connection over a WebSocket: the byte pipe and datagrams under a {@link MuxConnection}. */
export class WebSocketTransport extends WebPipe implements DatagramTransport {
  readonly wireMode = null;
  /** The ACCEPT's binding. */
  readonly channelBinding: Uint8Array;
  /** The smux version the ACCEPT settled on. */
  readonly muxVersion: number;
  /** The largest RPC datagram sent (the ACCEPT's, within `maxMessageSize`). */
  readonly maxDatagramSize: number;
  private readonly maxChunk: number;
  private readonly highWater: number;
  private readonly pollMs: number;
  private readonly lingerMs: number;
  private drainWaiters: Array<() => void> = [];
  private drainTimer: ReturnType<typeof setTimeout> | null = null;
  private closedHere = false;

  private constructor(
    private readonly ws: WebSocketLike,
    readonly remoteAddress: string,
    accept: Accept,
    o: { maxMessageSize: number; maxReceiveBuffer: number; sendHighWater: number; drainPollMs: number; closeLingerMs: number },
  ) {
    super(o.maxReceiveBuffer);
    this.channelBinding = accept.binding;
    this.muxVersion = accept.muxVersion;
    this.maxChunk = o.maxMessageSize - 1;
    this.maxDatagramSize = Math.min(accept.maxDatagram, o.maxMessageSize - 1);
    this.highWater = o.sendHighWater;
    this.pollMs = o.drainPollMs;
    this.lingerMs = o.closeLingerMs;
  }

  /**
   * Connect to `url` (`ws://` or `wss://`, the listener's path, default `/kcprpc`), send OPEN and
   * wait for the answer. Rejects with an {@link RpcError}: the REFUSE's status and message (or a
   * close code `4000 + status`'s), UNAVAILABLE when the socket fails or nothing answers within
   * `openTimeoutMs`, FAILED_PRECONDITION when the server does not speak `kcprpc.v1`.
   */
  static open(url: string, options: WebSocketTransportOptions = {}): Promise<WebSocketTransport> {
    const WS = options.WebSocket ?? globalWebSocket();
    if (!WS) throw new UsageError("no WebSocket in this runtime: pass options.WebSocket (Node 20: run with --experimental-websocket)");
    const { open, muxVersion, timeoutMs, limits } = webOpenSettings("WebSocketTransport", options);
    const o = {
      ...limits,
      maxMessageSize: positive("maxMessageSize", options.maxMessageSize, 65536, 64),
      drainPollMs: positive("drainPollMs", options.drainPollMs, 10),
    };
    if (open.length > o.maxMessageSize) throw new UsageError(`the OPEN message (${open.length} bytes) is over maxMessageSize`);
    let ws: WebSocketLike;
    try {
      ws = new WS(url, [WEB_SUBPROTOCOL]);
    } catch (e) {
      throw new UsageError(`not a WebSocket URL: ${url} (${(e as Error).message})`);
    }
    ws.binaryType = "arraybuffer";
    return new Promise<WebSocketTransport>((resolve, reject) => {
      let settled = false;
      let transport: WebSocketTransport | null = null;
      const give = (err: RpcError | null, t?: WebSocketTransport): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (err) {
          if (ws.readyState < 2) ws.close(1000, "");
          reject(err);
        } else resolve(t as WebSocketTransport);
      };
      const timer = setTimeout(() => give(new RpcError(Status.UNAVAILABLE, `no answer from ${url} within ${timeoutMs / 1000} s`)), timeoutMs);
      ws.addEventListener("open", () => {
        if (ws.protocol !== WEB_SUBPROTOCOL) {
          give(new RpcError(Status.FAILED_PRECONDITION, `${url} did not select the subprotocol ${WEB_SUBPROTOCOL}: not a kcprpc web listener`));
          return;
        }
        ws.send(open);
      });
      // one listener each, for the answer and then for the transport (a listener added while an
      // event is dispatched may or may not see that event)
      ws.addEventListener("message", (ev: WebSocketEventLike) => {
        if (transport) return transport.onMessage(ev);
        if (settled) return;
        const data = messageBytes(ev.data);
        if (!data) return give(new RpcError(Status.UNAVAILABLE, `${url} answered OPEN with a text message`));
        const a = decodeAnswer(data, muxVersion);
        if (a.kind === "accept") {
          transport = new WebSocketTransport(ws, url, a, o);
          give(null, transport);
        } else if (a.kind === "refuse") give(refusalError(a.status, a.message));
        else give(new RpcError(Status.UNAVAILABLE, `${url} answered OPEN with ${a.kind === "error" ? a.message : "a partial message"}`));
      });
      ws.addEventListener("close", (ev: WebSocketEventLike) => {
        if (transport) return transport.onSocketClose(ev);
        const status = webCloseStatus(ev.code);
        if (status !== undefined) give(refusalError(status, ev.reason ?? ""));
        else give(new RpcError(Status.UNAVAILABLE, `the WebSocket to ${url} closed before the server answered (code ${ev.code ?? "none"}${ev.reason ? `: ${ev.reason}` : ""})`));
      });
    });
  }

  /** Queue smux bytes (STREAM messages of at most `maxMessageSize`); false once the socket's queue is at its high-water mark. */
  write(data: Uint8Array): boolean {
    if (this.ended || this.ws.readyState !== OPEN) throw new Error("the WebSocket is closed");
    for (let at = 0; at < data.length; at += this.maxChunk) {
      this.ws.send(encodeMessage(WebKind.STREAM, data.subarray(at, Math.min(data.length, at + this.maxChunk))));
    }
    this.counters.bytes_sent += data.length;
    if (this.ws.bufferedAmount < this.highWater) return true;
    this.counters.send_blocked++;
    return false;
  }

  /** Resolves once the socket's queue is below its high-water mark (or the connection ended). */
  drained(): Promise<void> {
    if (this.ended || this.ws.bufferedAmount < this.highWater) return Promise.resolve();
    return new Promise((r) => {
      this.drainWaiters.push(r);
      this.pollDrain();
    });
  }

  private pollDrain(): void {
    if (this.drainTimer) return;
    this.drainTimer = setTimeout(() => {
      this.drainTimer = null;
      if (!this.ended && this.ws.bufferedAmount >= this.highWater) return this.pollDrain();
      const w = this.drainWaiters;
      this.drainWaiters = [];
      for (const f of w) f();
    }, this.pollMs);
  }

  /** Send one RPC datagram (a DATAGRAM message); dropped and counted when too large or the queue is full. */
  sendDatagram(data: Uint8Array): void {
    if (this.ended || this.ws.readyState !== OPEN) return;
    if (data.length > this.maxDatagramSize) {
      this.counters.datagrams_oversized++;
      return;
    }
    if (this.ws.bufferedAmount >= this.highWater) {
      this.counters.datagrams_dropped++;
      return;
    }
    this.ws.send(encodeMessage(WebKind.DATAGRAM, data));
    this.counters.datagrams_sent++;
  }

  /** Close (normal closure, after what is queued). */
  close(): void {
    this.closedHere = true;
    if (this.ws.readyState < 2) this.ws.close(1000, "");
  }
  /** As close (a WebSocket cannot drop what it queued). */
  abort(): void {
    this.close();
  }
  /** Resolves once the closing handshake is done, or after `closeLingerMs`. */
  waitClosed(): Promise<void> {
    return within(this.whenEnded(), this.lingerMs);
  }

  protected teardown(reason: string): void {
    // a browser may close only with 1000 or 3000-4999: 1000, the reason saying what went wrong
    if (this.ws.readyState < 2) this.ws.close(1000, shortReason(reason));
  }

  private onMessage(ev: WebSocketEventLike): void {
    if (this.ended) return;
    const data = messageBytes(ev.data);
    if (!data) return this.fail("the server sent a text message");
    const m = decodeMessage(data);
    if (m.kind === "error") return this.fail(`the server sent ${m.message}`);
    if (m.kind === "stream") this.receiveBytes(m.data);
    else this.receiveDatagram(m.data);
  }

  private onSocketClose(ev: WebSocketEventLike): void {
    if (this.drainTimer) clearTimeout(this.drainTimer);
    this.drainTimer = null;
    const code = ev.code ?? 1006;
    const reason = ev.reason ?? "";
    const status = webCloseStatus(code);
    if (status !== undefined) this.finish({ reason: reason || Status[status], status });
    else if (code === 1000 || code === 1001) this.finish({ reason: this.closedHere ? "connection closed" : `closed by the server${reason ? `: ${reason}` : ""}` });
    else {
      const message = `the WebSocket closed (code ${code}${reason ? `: ${reason}` : ""})`;
      this.finish({ reason: message }, new Error(message));
    }
    const w = this.drainWaiters;
    this.drainWaiters = [];
    for (const f of w) f();
  }
}
