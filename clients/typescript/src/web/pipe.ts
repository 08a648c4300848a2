/**
 * What the two web transports share: the receiving half of a {@link DatagramTransport} (smux bytes
 * handed to the mux, held while it is paused up to a bound; datagrams to their receiver), the end
 * of the connection with its {@link CloseInfo}, and the counters. The sending half is each
 * transport's own (a WebSocket's messages, a WebTransport stream's writer).
 */
import type { CloseInfo } from "../rpc/connection.js";
import { callGuarded, defaultReporter } from "../rpc/guard.js";
import { RpcError, Status, UsageError, statusFromWire } from "../rpc/status.js";
import { encodeOpen, tokenBytes } from "./framing.js";

/** The counters of a web transport (`client.transportStats()`). */
export interface WebCounters {
  /** Bytes of the smux stream sent and received. */
  bytes_sent: number;
  bytes_received: number;
  /** RPC datagrams sent and received. */
  datagrams_sent: number;
  datagrams_received: number;
  /** Datagrams not sent: the send queue was over its high-water mark (unreliable by contract). */
  datagrams_dropped: number;
  /** Datagrams not sent: larger than the connection's largest datagram. */
  datagrams_oversized: number;
  /** Datagrams received with no receiver registered. */
  datagrams_unhandled: number;
  /** Messages from the server that break the wire (the connection was closed). */
  protocol_errors: number;
  /** Times the smux bytes held while the mux was paused went over `maxReceiveBuffer` (the connection was closed). */
  receive_overflows: number;
  /** Times `write` found the send queue over its high-water mark. */
  send_blocked: number;
}

/** Fresh zeroed {@link WebCounters}. */
export function newWebCounters(): WebCounters {
  return {
    bytes_sent: 0, bytes_received: 0, datagrams_sent: 0, datagrams_received: 0, datagrams_dropped: 0, datagrams_oversized: 0,
    datagrams_unhandled: 0, protocol_errors: 0, receive_overflows: 0, send_blocked: 0,
  };
}

/** The RPC error a refusal becomes (a status 0 or out of range is UNKNOWN). */
export function refusalError(status: number, message: string): RpcError {
  const code = statusFromWire(status);
  return new RpcError(code === Status.OK ? Status.UNKNOWN : code, message || `refused by the server (status ${status})`);
}

/** The close code a web server refusing with `status` closes with (WebSocket: 4000 + status). */
export const WEB_CLOSE_CODE_BASE = 4000;

/** The RPC status a close code `4000 + status` carries, or undefined. */
export function webCloseStatus(code: number | undefined): Status | undefined {
  if (code === undefined || !(code > WEB_CLOSE_CODE_BASE && code <= WEB_CLOSE_CODE_BASE + Status.UNAUTHENTICATED)) return undefined;
  return (code - WEB_CLOSE_CODE_BASE) as Status;
}

/** A numeric option: `dflt` when not given, else a finite number of at least `min` (UsageError otherwise). */
export function positive(name: string, v: number | undefined, dflt: number, min = 1): number {
  if (v === undefined) return dflt;
  if (typeof v !== "number" || !Number.isFinite(v) || v < min) throw new UsageError(`${name} must be a number >= ${min}, not ${String(v)}`);
  return v;
}

/** The options both web transports' `open` take. */
export interface WebOpenOptions {
  /** The credential OPEN carries for the server's `authorize` hook (a string is sent as UTF-8; at most 1024 bytes). */
  token?: string | Uint8Array;
  /** The highest smux version offered (default 2); the server's ACCEPT picks the one both speak. */
  muxVersion?: 1 | 2;
  /** How long opening may take (default 5000 ms). */
  openTimeoutMs?: number;
  /** Bytes of smux data held while the mux is paused (default 8 MiB). */
  maxReceiveBuffer?: number;
  /** The send queue's high-water mark in bytes (default 1 MiB). */
  sendHighWater?: number;
  /** How long `waitClosed()` may wait (default 5000 ms). */
  closeLingerMs?: number;
}

/** {@link WebOpenOptions} checked, with their defaults, and the OPEN message they make. */
export interface WebOpenSettings {
  /** The OPEN message (token and mux version). */
  open: Uint8Array;
  /** The highest smux version offered. */
  muxVersion: number;
  /** How long opening may take, in ms. */
  timeoutMs: number;
  /** The transport's bounds: receive buffer and send high-water mark in bytes, close linger in ms. */
  limits: { maxReceiveBuffer: number; sendHighWater: number; closeLingerMs: number };
}

/** Check `options` for transport `who` (its name in the UsageError of a token too long) and encode OPEN. */
export function webOpenSettings(who: string, options: WebOpenOptions): WebOpenSettings {
  const muxVersion = options.muxVersion ?? 2;
  let open: Uint8Array;
  try {
    open = encodeOpen(tokenBytes(options.token), muxVersion);
  } catch (e) {
    throw new UsageError(`${who}: ${(e as Error).message}`);
  }
  const limits = {
    maxReceiveBuffer: positive("maxReceiveBuffer", options.maxReceiveBuffer, 8 * 1024 * 1024),
    sendHighWater: positive("sendHighWater", options.sendHighWater, 1024 * 1024),
    closeLingerMs: positive("closeLingerMs", options.closeLingerMs, 5000, 0),
  };
  return { open, muxVersion, timeoutMs: positive("openTimeoutMs", options.openTimeoutMs, 5000), limits };
}

/** The receiving half and the end of a web transport. */
export abstract class WebPipe {
  /** Counters. */
  readonly counters: WebCounters = newWebCounters();
  /** True once the connection has ended (either side). */
  ended = false;
  private dataCb: ((data: Uint8Array) => void) | null = null;
  private dgramCb: ((data: Uint8Array) => void) | null = null;
  private closeCb: ((err?: Error) => void) | null = null;
  private infoCbs: Array<(info: CloseInfo) => void> = [];
  private endWaiters: Array<() => void> = [];
  private pending: Uint8Array[] = [];
  private pendingBytes = 0;
  private paused = false;
  private endInfo: CloseInfo | null = null;

  /** @param maxReceiveBuffer bytes of smux data held while the mux is paused before the connection is closed */
  constructor(readonly maxReceiveBuffer: number) {}

  /** Register the receiver of smux bytes. */
  onData(cb: (data: Uint8Array) => void): void {
    this.dataCb = cb;
    this.flushPending();
  }
  /** Register the receiver of datagrams. */
  onDatagram(cb: (data: Uint8Array) => void): void {
    this.dgramCb = cb;
  }
  /** Register the callback for the end (EOF when `err` is undefined). */
  onClose(cb: (err?: Error) => void): void {
    this.closeCb = cb;
  }
  /** Register the close-info callback (a refusal's or close code's RPC status). */
  onCloseInfo(cb: (info: CloseInfo) => void): void {
    if (this.endInfo) cb(this.endInfo);
    else this.infoCbs.push(cb);
  }
  /** Stop handing smux bytes to the receiver (they are held, up to `maxReceiveBuffer`). */
  pause(): void {
    this.paused = true;
    this.pausedChanged(true);
  }
  /** Hand on what is held and what comes. */
  resume(): void {
    this.paused = false;
    this.flushPending();
    if (!this.paused) this.pausedChanged(false);
  }
  /** True while the mux asked for no more bytes. */
  get isPaused(): boolean {
    return this.paused;
  }
  /** Bytes held for the receiver. */
  get heldBytes(): number {
    return this.pendingBytes;
  }
  /** Resolves once the connection has ended. */
  whenEnded(): Promise<void> {
    if (this.ended) return Promise.resolve();
    return new Promise((r) => this.endWaiters.push(r));
  }
  /** Transport counters. */
  stats(): Record<string, number> {
    return { ...this.counters };
  }

  /** The transport's hook: its reading stopped (true) or may go on (false). */
  protected pausedChanged(_paused: boolean): void {}
  /** The transport's hook: end at once after a protocol error (close the socket or session) saying `reason`. */
  protected abstract teardown(reason: string): void;

  /** Smux bytes from the server. Returns false when the connection was closed for a full buffer. */
  protected receiveBytes(data: Uint8Array): boolean {
    if (this.ended || data.length === 0) return !this.ended;
    this.counters.bytes_received += data.length;
    if (!this.paused && this.dataCb && this.pending.length === 0) {
      this.dataCb(data);
      return true;
    }
    this.pending.push(data);
    this.pendingBytes += data.length;
    if (this.pendingBytes > this.maxReceiveBuffer) {
      this.counters.receive_overflows++;
      this.fail(`the server sent more than ${this.maxReceiveBuffer} bytes while the client was not reading`, "receive_overflows");
      return false;
    }
    return true;
  }

  /** A datagram from the server. */
  protected receiveDatagram(data: Uint8Array): void {
    if (this.ended) return;
    if (!this.dgramCb) {
      this.counters.datagrams_unhandled++;
      return;
    }
    this.counters.datagrams_received++;
    const cb = this.dgramCb;
    // a receiver that throws is the application's bug: reported, and the reading goes on (a
    // WebTransport's datagram loop ended on it: every later datagram was lost)
    callGuarded(defaultReporter, "a datagram receiver", () => cb(data));
  }

  /** The server broke the wire (or the connection failed): count it, close, end with an error. */
  protected fail(message: string, counted: "protocol_errors" | "receive_overflows" | null = "protocol_errors"): void {
    if (this.ended) return;
    if (counted === "protocol_errors") this.counters.protocol_errors++;
    const error = new Error(message);
    this.teardown(message);
    this.finish({ reason: message, error }, error);
  }

  /**
   * The connection ended: what is held goes to the receiver first (the mux bounds it), then the
   * close info and EOF (`err` undefined) or the error.
   */
  protected finish(info: CloseInfo, err?: Error): void {
    if (this.ended) return;
    this.ended = true;
    this.endInfo = info;
    if (!err) {
      const held = this.pending;
      this.pending = [];
      this.pendingBytes = 0;
      for (const d of held) this.dataCb?.(d);
    } else {
      this.pending = [];
      this.pendingBytes = 0;
    }
    const infos = this.infoCbs;
    this.infoCbs = [];
    for (const cb of infos) cb(info);
    this.closeCb?.(err);
    const w = this.endWaiters;
    this.endWaiters = [];
    for (const f of w) f();
  }

  private flushPending(): void {
    while (!this.paused && this.dataCb && this.pending.length) {
      const d = this.pending.shift() as Uint8Array;
      this.pendingBytes -= d.length;
      this.dataCb(d);
    }
  }
}

/** `reason` cut to at most `max` UTF-8 bytes (a WebSocket close reason holds 123). */
export function shortReason(reason: string, max = 123): string {
  const enc = new TextEncoder();
  let r = reason;
  while (enc.encode(r).length > max) r = r.slice(0, -1);
  return r;
}

/** How long to wait for `promise`, then go on anyway (a bounded close linger). */
export function within(promise: Promise<unknown>, ms: number): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    void promise.then(
      () => {
        clearTimeout(t);
        resolve();
      },
      () => {
        clearTimeout(t);
        resolve();
      },
    );
  });
}
