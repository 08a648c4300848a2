/**
 * The RPC client (docs/rpc.md, docs/wire-format/rpc.md): unary and streaming calls with
 * deadlines, cancellation (AbortSignal), metadata and status errors; pushed events with
 * positions, latest-wins keys and unreliable datagrams; heartbeats with RTT; reconnect with
 * resume and room/topic recovery. It runs on any {@link RpcConnection}.
 */
import { hmac } from "@noble/hashes/hmac.js";
import { sha256 } from "@noble/hashes/sha2.js";
import type { BidiCall, CallOptions, EventInfo, Metadata, NotifyOptions, RpcChannel, ServerStreamCall } from "./channel.js";
import type { CloseInfo, RpcByteStream, RpcConnection } from "./connection.js";
import {
  EVENT_REPLAYED, FLAG_END, FRAME_HEADER_SIZE, FrameDecoder, FrameType as T, OVERSIZED, PROTOCOL_VERSION, REFUSED, UNDECODABLE,
  decodeDatagram, encodeFrame, type Frame,
} from "./frames.js";
import { Heartbeat, reconnectDelay, type HeartbeatConfig, type ReconnectPolicy } from "./heartbeat.js";
import { RpcError, Status, UsageError, statusFromWire } from "./status.js";
import { FrameBudget, partialFrameLimit } from "./receive.js";
import { callGuarded, rateLimitedReporter, type CallbackErrorReporter } from "./guard.js";
import { MuxClosedError } from "../mux/core.js";

/** Client settings (kcprpc.client_config.ClientConfig). */
export interface ClientOptions {
  /** HELLO metadata (e.g. an auth token). */
  metadata?: Metadata;
  /** Heartbeat policy; null disables it (default 1 s / 5 s). */
  heartbeat?: HeartbeatConfig | null;
  /** Reconnect policy; null (default) does not reconnect (what waits for a connection fails once it is lost). */
  reconnect?: ReconnectPolicy | null;
  /** How long to wait for the connection and WELCOME (default 5000 ms). */
  connectTimeoutMs?: number;
  /** Largest frame body sent or received (default 4 MiB). */
  maxMessageSize?: number;
  /** The most one received body may decode into, estimated before decoding (default 8 MiB or 2 × maxMessageSize). */
  maxDecodedBytes?: number;
  /**
   * Bytes of frames received in part, all streams of the connection together (default
   * maxMessageSize + 9 + 256 KiB): a stream whose next frame does not fit stops being read until
   * it does (FIFO; the control stream never waits). At least maxMessageSize + 9.
   */
  maxPartialFrameBytes?: number;
  /** A frame received in part that gets no new byte for this long is dropped: RESOURCE_EXHAUSTED for its call (default 10000 ms; null: never). */
  partialFrameTimeoutMs?: number | null;
  /** Deadline of calls without their own (default none). */
  defaultTimeoutMs?: number;
  /** Unary calls on the shared control stream (default) or a stream each. */
  unaryFraming?: "shared" | "stream";
  /** Streaming calls on a stream each (default) or the shared control stream. */
  streamFraming?: "shared" | "stream";
  /** Calls made while (re)connecting wait for the link (up to their timeout) instead of failing UNAVAILABLE. */
  waitForReady?: boolean;
  /** Clock, ms (injected for tests). */
  now?: () => number;
  /** Randomness 0..1 (backoff jitter). */
  random?: () => number;
  /** Called when the link is lost (before any reconnect). May be async; one that throws is reported and the reconnect starts all the same. */
  onDisconnect?: (reason: string) => void;
  /** Called after a reconnect succeeded. May be async; one that throws is reported. */
  onReconnect?: () => void;
  /** Called when reconnecting gave up. May be async; one that throws is reported. */
  onGiveUp?: (err: RpcError) => void;
  /**
   * Called with what an application callback threw (an event handler, a raw event handler, a
   * hook; or the rejection of the promise it returned) and where (`"event handler for Chat"`),
   * and with an error the client's own reading of the connection hit (then the link is dropped
   * and reconnects). The client goes on either way. Default: `console.error`, at most 10 a minute.
   */
  onCallbackError?: CallbackErrorReporter;
  /**
   * Client interceptors (kcprpc.interceptors.ClientInterceptor), the first the outermost: each gets
   * the call's {@link ClientCallDetails} (metadata, deadline and request may be changed) and
   * `next`. For unary and client-streaming calls `next` resolves with the response; for
   * server-streaming and bidi calls once the call is started.
   */
  interceptors?: readonly ClientInterceptor[];
}

/** What a client interceptor sees of a call before it goes out (kcprpc.interceptors.ClientCallDetails). */
export interface ClientCallDetails {
  /** The wire name `"<service>/<method>"`. */
  readonly method: string;
  /** The call's kind. */
  readonly kind: "unary" | "server" | "client" | "bidi";
  /** The request (unary, server stream), the iterable of requests (client stream) or null (bidi). */
  request: unknown;
  /** Request metadata (a fresh object per call: interceptors may add to it). */
  metadata: Metadata;
  /** The deadline in ms (the client's `defaultTimeoutMs` applied), or undefined. */
  timeoutMs: number | undefined;
}

/**
 * A client interceptor: `async (details, next) => { details.metadata.token = "t"; return next(details); }`.
 * Throw (e.g. an {@link RpcError}) to refuse the call.
 */
export type ClientInterceptor = (details: ClientCallDetails, next: (details: ClientCallDetails) => Promise<unknown>) => Promise<unknown>;

/** The addresses a connector takes turns on (`connect(..., { fallbacks })`). */
export interface Rotation {
  /** How many addresses there are. */
  readonly addresses: number;
  /** Move the connector to its next address (after each failed attempt). */
  rotate(): void;
}

/** Run `interceptors` around `last` (the first interceptor is the outermost). */
export function chainInterceptors(interceptors: readonly ClientInterceptor[], details: ClientCallDetails, last: (d: ClientCallDetails) => Promise<unknown>): Promise<unknown> {
  let call = last;
  for (let i = interceptors.length - 1; i >= 0; i--) {
    const ic = interceptors[i] as ClientInterceptor;
    const nxt = call;
    call = (d) => ic(d, nxt);
  }
  return call(details);
}

/** An error that means "the server is not there" (a fallback address is worth trying). */
function isUnavailable(e: unknown): boolean {
  return e instanceof RpcError && e.code === Status.UNAVAILABLE;
}

/** A raw pushed event, as the wire carries it. */
export interface RawEvent extends EventInfo {
  /** The payload as decoded msgpack. */
  payload: unknown;
}

/** `[epoch, seq]` of a room or topic. */
export type Position = [number, number];

/** Client counters. */
export interface ClientCounters {
  /** Frames dropped as malformed or unexpected. */
  bad_frames: number;
  /** Frames for a call that is not open. */
  stale_frames: number;
  /** Unreliable events dropped as older than one already seen. */
  events_stale: number;
  /** Of events_stale: keyed events. */
  events_stale_keyed: number;
  /** Latest-wins keys forgotten to stay within the table's bound. */
  keys_evicted: number;
  /** Events dropped from a full `events()` queue. */
  events_dropped: number;
  /** Stream readers that waited for room in the partial-frame budget. */
  recv_frame_waits: number;
  /** Frames received in part dropped after `partialFrameTimeoutMs` without a new byte. */
  recv_frame_timeouts: number;
  /** Errors application callbacks threw (event handlers, hooks): reported (`onCallbackError`), the client went on. */
  callback_errors: number;
  /** Notifies dropped because the client was not connected (before `connect`, during a reconnect, after `close`). */
  notifications_dropped: number;
}

/** Bytes asked from a stream per read (kcprpc.receive.READ_SIZE). */
const READ_SIZE = 65536;

/** One stream reader as the partial-frame timeout sees it. */
interface PartialReader {
  readonly dec: FrameDecoder;
  /** Bytes reserved in the budget for the frame in progress (0: none). */
  reserved: number;
  /** When that frame last got bytes (client clock). */
  since: number;
}

const MAX_LATEST_KEYS = 65536;
const STREAM_PAUSE_AT = 256;
const SHARED_QUEUE_LIMIT = 4096;
/** Numbered direct events: acknowledge after this many ms, or at once after ACK_EVERY unacknowledged. */
const ACK_DELAY_MS = 2000;
const ACK_EVERY = 256;
type Kind = "unary" | "server" | "client" | "bidi";

function isMap(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array);
}
function isInt(v: unknown): v is number {
  return typeof v === "number" && Number.isInteger(v);
}

/** One call in flight. */
class ActiveCall<Res> {
  readonly queue: Res[] = [];
  private readers: Array<() => void> = [];
  private spaceWaiters: Array<() => void> = [];
  error: RpcError | null = null;
  ended = false;
  headers: Metadata | null = null;
  trailers: Metadata | null = null;
  reply: { value: Res } | null = null;
  private doneResolve!: () => void;
  readonly done: Promise<void> = new Promise((r) => (this.doneResolve = r));
  private headersResolve!: () => void;
  readonly headersSeen: Promise<void> = new Promise((r) => (this.headersResolve = r));
  timer: ReturnType<typeof setTimeout> | null = null;
  private abortCleanup: (() => void) | null = null;

  constructor(
    readonly link: Link,
    readonly id: number,
    readonly kind: Kind,
    readonly stream: RpcByteStream,
    readonly ownStream: boolean,
  ) {}

  watch(opts: CallOptions, timeoutMs: number | undefined): void {
    if (timeoutMs !== undefined) {
      this.timer = setTimeout(() => this.cancel(new RpcError(Status.DEADLINE_EXCEEDED, "deadline exceeded")), timeoutMs);
    }
    const sig = opts.signal;
    if (sig) {
      const onAbort = (): void => this.cancel(new RpcError(Status.CANCELLED, "cancelled by the caller"));
      sig.addEventListener("abort", onAbort, { once: true });
      this.abortCleanup = () => sig.removeEventListener("abort", onAbort);
    }
  }

  private wake(): void {
    const r = this.readers;
    this.readers = [];
    for (const f of r) f();
  }

  onHeaders(md: Metadata): void {
    if (this.headers === null) this.headers = md;
    this.headersResolve();
  }

  onMessage(payload: Res): void {
    if (this.ended) return;
    this.headersResolve();
    if (!this.ownStream && this.queue.length >= SHARED_QUEUE_LIMIT) {
      this.cancel(new RpcError(Status.RESOURCE_EXHAUSTED, "too many unread messages on the call"));
      return;
    }
    this.queue.push(payload);
    this.wake();
  }

  onReply(payload: Res, imd: Metadata | null, tmd: Metadata | null): void {
    if (imd) this.headers = imd;
    this.reply = { value: payload };
    this.finish(null, tmd ?? {});
  }

  onTrailer(err: RpcError | null, md: Metadata): void {
    this.finish(err, md);
  }

  /** Wait while too many messages are unread (own-stream calls: the mux window pushes back). */
  async space(): Promise<void> {
    while (!this.ended && this.queue.length >= STREAM_PAUSE_AT) await new Promise<void>((r) => this.spaceWaiters.push(r));
  }

  async next(): Promise<IteratorResult<Res>> {
    for (;;) {
      if (this.queue.length) {
        const v = this.queue.shift() as Res;
        if (this.queue.length < STREAM_PAUSE_AT) {
          const s = this.spaceWaiters;
          this.spaceWaiters = [];
          for (const f of s) f();
        }
        return { value: v, done: false };
      }
      if (this.ended) {
        if (this.error) throw this.error;
        return { value: undefined, done: true };
      }
      await new Promise<void>((r) => this.readers.push(r));
    }
  }

  /** Fail locally and tell the server (CANCEL). */
  cancel(err: RpcError): void {
    if (this.ended) return;
    this.link.sendFrame(this.stream, encodeFrame(T.CANCEL, this.id, null));
    this.finish(err, {});
  }

  /** End the call (idempotent). */
  finish(err: RpcError | null, md: Metadata): void {
    if (this.ended) return;
    this.ended = true;
    this.error = err;
    this.trailers = md;
    if (this.timer) clearTimeout(this.timer);
    this.abortCleanup?.();
    this.link.calls.delete(this.id);
    if (this.ownStream) {
      try {
        this.stream.close();
      } catch {
        // the connection is gone
      }
    }
    this.headersResolve();
    this.wake();
    const s = this.spaceWaiters;
    this.spaceWaiters = [];
    for (const f of s) f();
    this.doneResolve();
  }
}

/** One connection's state: control stream, calls, heartbeat. */
class Link {
  readonly calls = new Map<number, ActiveCall<unknown>>();
  state: "awaiting" | "ready" | "draining" | "closed" = "awaiting";
  goaway = false;
  hb: Heartbeat | null = null;
  sessionId: string | null = null;
  peerError: RpcError | null = null;
  /** Why the link will end once the server's GOAWAY drained it (unless the server says more then). */
  drainReason: string | null = null;
  private hbTimer: ReturnType<typeof setTimeout> | null = null;
  private welcomeResolve!: (body: Record<string, unknown>) => void;
  private welcomeReject!: (e: RpcError) => void;
  readonly welcome: Promise<Record<string, unknown>> = new Promise((res, rej) => {
    this.welcomeResolve = res;
    this.welcomeReject = rej;
  });
  activity = 0;
  /** The partial-frame budget of this connection. */
  readonly budget: FrameBudget;
  private readonly watched = new Set<PartialReader>();
  private partialTimer: ReturnType<typeof setTimeout> | null = null;
  // pushed events that come before the WELCOME (replays, the session's own events) are held until
  // it was handled (the client then knows which session they are of: a new session's events
  // follow the news that the old one is gone); numbered direct events (docs/wire-format/rpc.md,
  // "Numbered direct events", number > 0) are then acknowledged
  private held: Array<[number, unknown]> | null = [];
  /** The number of the last numbered direct event handled for the session (0: none). */
  lastDirect = 0;
  private unacked = 0;
  private ackTimer: ReturnType<typeof setTimeout> | null = null;

  constructor(
    readonly client: Client,
    readonly conn: RpcConnection,
    readonly control: RpcByteStream,
  ) {
    void this.welcome.catch(() => undefined);
    this.budget = new FrameBudget(client.maxPartialFrameBytes);
  }

  /** After a feed: give back the reservation of a completed frame, reserve the next partial one (waiting, FIFO, unless `control`). */
  private settle(r: PartialReader, completed: boolean, control: boolean): Promise<void> | null {
    const need = r.dec.partialFrameSize;
    if (r.reserved && (completed || need !== r.reserved)) {
      this.budget.release(r.reserved);
      r.reserved = 0;
    }
    if (need && !r.reserved) {
      if (control) this.budget.force(need);
      else if (!this.budget.tryReserve(need)) {
        this.client.counters.recv_frame_waits++;
        return this.budget.reserve(need).then(() => {
          if (this.state === "closed") this.budget.release(need);
          else this.reserved(r, need);
        });
      }
      this.reserved(r, need);
    } else if (r.reserved) this.reserved(r, r.reserved);
    else if (this.watched.size) this.watched.delete(r);
    return null;
  }

  private reserved(r: PartialReader, n: number): void {
    r.reserved = n;
    r.since = this.client.now();
    this.watch(r);
  }

  private watch(r: PartialReader): void {
    this.watched.add(r);
    const t = this.client.partialFrameTimeoutMs;
    if (t === null || this.partialTimer !== null) return;
    const check = (): void => {
      this.partialTimer = null;
      if (this.state === "closed") return;
      const now = this.client.now();
      for (const x of [...this.watched]) {
        if (now - x.since < t) continue;
        this.watched.delete(x);
        const dropped = x.dec.dropPartial();
        if (x.reserved) this.budget.release(x.reserved);
        x.reserved = 0;
        if (!dropped) continue;
        this.client.counters.recv_frame_timeouts++;
        const call = dropped.callId ? this.calls.get(dropped.callId) : undefined;
        call?.cancel(new RpcError(Status.RESOURCE_EXHAUSTED, `a frame received in part got no byte for ${t / 1000} s (partialFrameTimeoutMs)`));
      }
      if (this.watched.size) {
        this.partialTimer = setTimeout(check, t / 4);
      }
    };
    // not unref'd: it runs only while a frame is received in part (its stream keeps the loop busy anyway)
    this.partialTimer = setTimeout(check, t / 4);
  }

  sendFrame(stream: RpcByteStream, frame: Uint8Array): void {
    if (this.state === "closed") return;
    try {
      stream.write(frame);
    } catch {
      // the connection died: its close callback ends the link
    }
  }

  async readLoop(stream: RpcByteStream, owner: ActiveCall<unknown> | null): Promise<void> {
    const dec = new FrameDecoder(this.client.maxMessageSize, this.client.maxDecodedBytes);
    const r: PartialReader = { dec, reserved: 0, since: 0 };
    let failed: string | null = null;
    let died = false;
    try {
      for (;;) {
        if (owner) await owner.space();
        let data: Uint8Array;
        try {
          data = await stream.read(READ_SIZE);
        } catch {
          died = true;
          break; // the connection died
        }
        if (!data.length) break;
        const frames = dec.feed(data);
        for (const f of frames) this.onFrame(f, stream);
        if (this.state === "closed") break;
        const wait = this.settle(r, frames.length > 0, owner === null);
        if (wait) await wait;
      }
    } catch (e) {
      // a bug in handling what came (application callbacks are guarded): reported, and the link
      // is lost (and reconnects) or the call fails, never silently
      const where = owner ? "reading a call's stream" : "reading the control stream";
      this.client.reportInternal(e, where);
      failed = `internal error ${where}: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`;
    }
    this.watched.delete(r);
    if (r.reserved) this.budget.release(r.reserved);
    if (owner && failed) owner.cancel(new RpcError(Status.INTERNAL, failed));
    else if (owner && !owner.ended && !died && this.state !== "closed" && !this.conn.closed) {
      // the server ended the stream (refused it at max_streams_total, or the mux reset it) and the
      // call is still waiting for its status: an EOF before the end cancels the call
      // (docs/wire-format/rpc.md, "Framing")
      owner.finish(new RpcError(Status.CANCELLED, "the server ended the call's stream before its status"), {});
    } else if (owner && !owner.ended) owner.finish(new RpcError(Status.UNAVAILABLE, "the call's stream ended early"), {});
    if (!owner) this.client.linkLost(this, failed ?? this.drainReason ?? "connection closed");
  }

  onFrame(f: Frame, stream: RpcByteStream): void {
    const c = this.client.counters;
    if (this.hb) this.hb.lastReceive = this.client.now();
    const { type, callId, body } = f;
    if (callId) {
      if (type === T.EVENT && stream === this.control) {
        this.numbered(callId, body);
        return;
      }
      if (type !== T.REPLY && type !== T.MSG && type !== T.HEADERS && type !== T.TRAILER) {
        c.bad_frames++;
        return;
      }
      const call = this.calls.get(callId);
      if (!call) {
        c.stale_frames++;
        return;
      }
      if (body === OVERSIZED) {
        call.cancel(new RpcError(Status.RESOURCE_EXHAUSTED, "response larger than max_message_size"));
        return;
      }
      if (body === REFUSED) {
        call.cancel(new RpcError(Status.RESOURCE_EXHAUSTED, "response would decode over max_decoded_bytes"));
        return;
      }
      switch (type) {
        case T.REPLY:
          if (Array.isArray(body) && body.length === 3 && (body[1] === null || isMap(body[1])) && (body[2] === null || isMap(body[2]))) {
            call.onReply(body[0], body[1] as Metadata | null, body[2] as Metadata | null);
          } else {
            c.bad_frames++;
            call.cancel(new RpcError(Status.INTERNAL, "malformed reply"));
          }
          return;
        case T.MSG:
          if (body === UNDECODABLE) {
            call.cancel(new RpcError(Status.INTERNAL, "undecodable response message"));
            return;
          }
          call.onMessage(body);
          return;
        case T.HEADERS:
          if (isMap(body)) call.onHeaders(body);
          else c.bad_frames++;
          return;
        case T.TRAILER: {
          if (!Array.isArray(body) || body.length < 2) {
            c.bad_frames++;
            call.cancel(new RpcError(Status.INTERNAL, "malformed trailer"));
            return;
          }
          const md = isMap(body[3]) ? body[3] : {};
          const code = statusFromWire(body[0]);
          const msg = typeof body[1] === "string" ? body[1] : String(body[1]);
          call.onTrailer(code === Status.OK ? null : new RpcError(code, msg, body[2] ?? null, md), md);
          return;
        }
      }
      return;
    }
    switch (type) {
      case T.EVENT:
        if (this.held) this.held.push([0, body]);
        else this.client.handleEvent(body, false);
        return;
      case T.PING:
        if (Array.isArray(body) && body.length) {
          this.sendFrame(this.control, encodeFrame(T.PONG, 0, [isInt(body[0]) ? body[0] : 0]));
        } else c.bad_frames++;
        return;
      case T.PONG:
        if (Array.isArray(body) && body.length && isInt(body[0])) this.hb?.onPong(body[0], this.client.now());
        else c.bad_frames++;
        return;
      case T.ROOMS:
        if (Array.isArray(body) && body.length === 2 && typeof body[1] === "string") this.client.roomChanged(Boolean(body[0]), body[1]);
        else c.bad_frames++;
        return;
      case T.WELCOME:
        if (this.state !== "awaiting" || !isMap(body)) {
          c.bad_frames++;
          return;
        }
        this.state = "ready";
        this.welcomeResolve(body);
        return;
      case T.GOAWAY: {
        let code: Status = Status.UNKNOWN;
        let msg = "malformed GOAWAY";
        if (Array.isArray(body) && body.length) {
          code = statusFromWire(body[0]);
          msg = typeof body[1] === "string" ? body[1] : "";
        } else c.bad_frames++;
        const err = new RpcError(code === Status.OK ? Status.UNAVAILABLE : code, msg || "server shutting down");
        if (this.state === "awaiting") {
          this.state = "draining";
          this.welcomeReject(err);
        } else if (this.state === "ready") {
          this.state = "draining";
          this.drainReason ??= `the server is draining: ${Status[err.code]}: ${err.statusMessage}`;
          this.client.onGoaway(this);
        }
        return;
      }
      default:
        c.bad_frames++;
    }
    void stream;
  }

  private numbered(n: number, body: unknown): void {
    if (this.held) {
      this.held.push([n, body]);
      return;
    }
    this.client.handleEvent(body, false);
    this.lastDirect = n;
    this.unacked++;
    if (this.unacked >= ACK_EVERY) this.sendAck();
    else if (!this.ackTimer) {
      this.ackTimer = setTimeout(() => this.sendAck(), ACK_DELAY_MS);
      this.ackTimer.unref?.();
    }
  }

  /** @internal the WELCOME was handled: handle the events held until now, in order (`last`: the number of the last direct event handled for its session, the claim's on a resume, 0 for a new session) */
  releaseHeld(last: number): void {
    const held = this.held ?? [];
    this.held = null;
    this.lastDirect = last;
    for (const [n, body] of held) {
      if (n) this.numbered(n, body);
      else this.client.handleEvent(body, false);
    }
  }

  /** @internal acknowledge the numbered direct events handled so far (an EVENT_ACK frame) */
  sendAck(): void {
    if (this.ackTimer) clearTimeout(this.ackTimer);
    this.ackTimer = null;
    if (this.unacked && this.state !== "closed") {
      this.unacked = 0;
      this.sendFrame(this.control, encodeFrame(T.EVENT_ACK, 0, this.lastDirect));
    }
  }

  onDatagram(data: Uint8Array): void {
    const f = decodeDatagram(data);
    if (!f) {
      this.client.counters.bad_frames++;
      return;
    }
    if (this.hb) this.hb.lastReceive = this.client.now();
    if (f.type === T.EVENT && f.callId === 0) this.client.handleEvent(f.body, true);
    else if (f.type === T.GOAWAY && (this.state === "ready" || this.state === "draining")) {
      const b = f.body;
      if (Array.isArray(b) && b.length) {
        const code = statusFromWire(b[0]);
        this.peerError = new RpcError(code, typeof b[1] === "string" ? b[1] : "");
        this.client.linkLost(this, `closed by the server: ${Status[code]}`);
      }
    } else this.client.counters.bad_frames++;
  }

  /**
   * @param transportPing WELCOME said `tping`: heartbeats go as the transport's keepalives (secure
   * mode: an authenticated PING the server's secure layer answers), PING frames otherwise
   */
  startHeartbeat(cfg: HeartbeatConfig, serverHbMs: number | null, previousSrtt: number | null, transportPing = false): void {
    const hb = new Heartbeat(cfg, this.client.now());
    if (serverHbMs) hb.limitInterval(2.5 * serverHbMs);
    hb.srttMs = previousSrtt;
    this.hb = hb;
    const conn = this.conn;
    const keepalive = transportPing && conn.ping !== undefined && conn.onPingAnswered !== undefined;
    if (keepalive) conn.onPingAnswered?.((nonce) => hb.onPong(nonce, this.client.now()));
    const tick = (): void => {
      if (this.state === "closed") return;
      const now = this.client.now();
      // over secure KCP the transport's acks of what arrived reach the server's silence check too
      const activity = keepalive ? this.activity + (conn.packetsSent?.() ?? 0) : this.activity;
      const [action, nonce] = hb.poll(now, activity);
      if (action === "dead") {
        this.client.linkLost(this, "peer did not answer heartbeats");
        return;
      }
      if (action === "ping" && !(keepalive && conn.ping?.(nonce))) {
        const rtt = hb.srttMs === null ? null : Math.round(hb.srttMs * 1000);
        this.sendFrame(this.control, encodeFrame(T.PING, 0, [nonce, rtt]));
      }
      this.hbTimer = setTimeout(tick, hb.nextWakeup(this.client.now()));
      this.hbTimer.unref?.();
    };
    this.hbTimer = setTimeout(tick, hb.nextWakeup(this.client.now()));
    this.hbTimer.unref?.();
  }

  shutdown(err: RpcError): void {
    if (this.state === "closed") return;
    this.state = "closed";
    if (this.hbTimer) clearTimeout(this.hbTimer);
    if (this.ackTimer) clearTimeout(this.ackTimer);
    if (this.partialTimer) clearTimeout(this.partialTimer);
    this.watched.clear();
    this.budget.abandon();
    this.welcomeReject(err);
    for (const call of [...this.calls.values()]) call.finish(err, {});
    this.calls.clear();
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

const utf8 = new TextEncoder();
const RESUME_LABEL = utf8.encode("kcprpc-resume-v1");

/** HMAC-SHA256(token, "kcprpc-resume-v1" || sid || channel binding): a HELLO's resume proof. */
export function resumeProof(token: Uint8Array, sid: string, binding: Uint8Array): Uint8Array {
  // @noble/hashes rather than node:crypto: the browser bundle shares this module
  const h = hmac.create(sha256, token);
  h.update(RESUME_LABEL);
  h.update(utf8.encode(sid));
  h.update(binding);
  return h.digest();
}

/**
 * A kcprpc client over one logical session (reconnecting when a policy is set). Make one with
 * {@link Client.connect} (or the package's `connect()`), then `call`, `unary`, `serverStream`,
 * `clientStream`, `bidi`, `notify`, `on`, `subscribe`.
 */
export class Client implements RpcChannel {
  /** Counters. */
  readonly counters: ClientCounters = {
    bad_frames: 0, stale_frames: 0, events_stale: 0, events_stale_keyed: 0, keys_evicted: 0, events_dropped: 0, recv_frame_waits: 0, recv_frame_timeouts: 0,
    callback_errors: 0, notifications_dropped: 0,
  };
  /** Rooms the server put this client in (ROOMS frames). */
  readonly rooms = new Set<string>();
  /** Topics subscribed to. */
  readonly topics = new Set<string>();
  /** Successful reconnects. */
  reconnects = 0;
  /** Reconnects that resumed the previous session. */
  resumes = 0;
  /** The largest frame body sent or received. */
  readonly maxMessageSize: number;
  /** The most one received body may decode into (estimated). */
  readonly maxDecodedBytes: number;
  /** Bytes of frames received in part, all streams of a connection together. */
  readonly maxPartialFrameBytes: number;
  /** How long a frame received in part may wait for its next byte (ms), or null: forever. */
  readonly partialFrameTimeoutMs: number | null;
  /** The clock (ms). */
  readonly now: () => number;
  private readonly opts: ClientOptions;
  /** Where application callbacks' errors (and the client's own reading errors) are reported. */
  private readonly report: CallbackErrorReporter;
  private readonly connector: () => Promise<RpcConnection>;
  private link: Link | null = null;
  private nextCallId = 0;
  private closing = false;
  private ticket: { sid: string; token: Uint8Array } | null = null;
  private readonly offsets = new Map<string, Position>();
  private readonly latest = new Map<string, Position>();
  private readonly keyed = new Map<string, Position>();
  private readonly handlers = new Map<string, Array<(payload: unknown, info: EventInfo) => void>>();
  private readonly rawHandlers: Array<(ev: RawEvent) => void> = [];
  private reconnecting: Promise<void> | null = null;
  /** Ends what close() must not wait for: the reconnect loop's pause, or the attempt to connect in flight (rejected with why). */
  private interrupt: ((err: RpcError) => void) | null = null;
  private readyWaiters: Array<() => void> = [];
  private gaveUp: RpcError | null = null;
  /** Server info from the last WELCOME. */
  welcomeInfo: { epoch: number | null; maxMessage: number | null; heartbeatMs: number | null } = { epoch: null, maxMessage: null, heartbeatMs: null };

  private readonly rotation: Rotation | null;

  private constructor(connector: () => Promise<RpcConnection>, opts: ClientOptions, rotation: Rotation | null) {
    this.connector = connector;
    this.rotation = rotation;
    this.opts = opts;
    this.maxMessageSize = opts.maxMessageSize ?? 4 * 1024 * 1024;
    this.maxDecodedBytes = opts.maxDecodedBytes ?? Math.max(8 * 1024 * 1024, 2 * this.maxMessageSize);
    this.maxPartialFrameBytes = partialFrameLimit(this.maxMessageSize, opts.maxPartialFrameBytes, opts.partialFrameTimeoutMs);
    this.partialFrameTimeoutMs = opts.partialFrameTimeoutMs === undefined ? 10000 : opts.partialFrameTimeoutMs;
    this.now = opts.now ?? (() => performance.now());
    this.report = opts.onCallbackError ?? rateLimitedReporter();
  }

  /** @internal call application code `f` (named `where`): what it throws or rejects with is reported and counted, never passed on */
  guarded(where: string, f: () => unknown): void {
    callGuarded(this.report, where, f, () => this.counters.callback_errors++);
  }

  /** @internal report an error of the client's own (a bug: the caller drops what it was handling) */
  reportInternal(err: unknown, where: string): void {
    callGuarded(this.report, where, () => {
      throw err;
    });
  }

  /**
   * Dial with `connector`, say HELLO, wait for WELCOME. Throws RpcError UNAVAILABLE (or the
   * refusal's status). With `rotation` (several addresses) an UNAVAILABLE attempt moves on to the
   * next address, once per address, and each failed reconnect attempt rotates too.
   */
  static async connect(connector: () => Promise<RpcConnection>, options: ClientOptions = {}, rotation?: Rotation): Promise<Client> {
    if (options.interceptors !== undefined && (!Array.isArray(options.interceptors) || !options.interceptors.every((f) => typeof f === "function"))) {
      throw new UsageError("interceptors must be an array of functions (details, next) => Promise");
    }
    const c = new Client(connector, options, rotation ?? null);
    for (let left = (rotation?.addresses ?? 1) - 1; ; left--) {
      try {
        await c.connectOnce(false);
        return c;
      } catch (e) {
        if (!isUnavailable(e) || left <= 0) throw e;
      }
    }
  }

  /** The server's session id, while connected. */
  get sessionId(): string | null {
    return this.link?.sessionId ?? null;
  }
  /** The server's address as the connection names it (`host:port`; a web transport's URL), while connected. */
  get remoteAddress(): string | null {
    return this.link?.conn.remoteAddress ?? null;
  }
  /** True while a link is up and not draining. */
  get connected(): boolean {
    return this.link !== null && this.link.state === "ready";
  }
  /** The smoothed RTT in ms (heartbeats), or null before the first PONG. */
  get rttMs(): number | null {
    return this.link?.hb?.srttMs ?? null;
  }
  /** True when the next reconnect will ask to resume the session. */
  get resumable(): boolean {
    return this.ticket !== null;
  }
  /** The position of the last stream event on a topic (or `room`), or null. */
  position(topic: string | null, room?: string): Position | null {
    const key = room !== undefined ? `room:${room}` : `topic:${topic ?? ""}`;
    const p = this.offsets.get(key);
    return p ? [p[0], p[1]] : null;
  }
  /**
   * Move the connection to a new local UDP socket (secure mode: the server follows by connection
   * ID; calls carry on). Throws {@link UsageError} without an open secure connection.
   */
  async rebind(): Promise<void> {
    const l = this.link;
    if (!l || l.state === "closed" || !l.conn.rebind || l.conn.wireMode !== "secure") throw new UsageError("rebind() needs an open secure-mode KCP connection");
    await l.conn.rebind();
  }

  /** The transport's counters. */
  transportStats(): Record<string, number> {
    return this.link?.conn.stats() ?? {};
  }

  private async connectOnce(restore: boolean): Promise<void> {
    // close() abandons the attempt at once (it waits neither for the dial nor for WELCOME)
    const abandoned = new Promise<never>((_, rej) => (this.interrupt = rej));
    void abandoned.catch(() => undefined);
    try {
      if (this.closing) throw new RpcError(Status.CANCELLED, "client closed");
      await this.connectOnceHere(restore, abandoned);
    } catch (e) {
      this.rotation?.rotate();
      throw e;
    } finally {
      this.interrupt = null;
    }
  }

  /** @param abandoned rejects when close() is called */
  private async connectOnceHere(restore: boolean, abandoned: Promise<never>): Promise<void> {
    const timeout = this.opts.connectTimeoutMs ?? 5000;
    let timer: ReturnType<typeof setTimeout> | null = null;
    const timedOut = new Promise<never>((_, rej) => {
      timer = setTimeout(() => rej(new RpcError(Status.UNAVAILABLE, `no connection to the server within ${timeout / 1000} s`)), timeout + 1000);
    });
    let conn: RpcConnection;
    let dialing: Promise<RpcConnection> | null = null;
    try {
      dialing = this.connector();
      conn = await Promise.race([dialing, timedOut, abandoned]);
    } catch (e) {
      // a connection that comes up after all (the client closed, or the dial took too long) is closed at once
      void dialing?.then((c) => (c.abort ? c.abort() : c.close()).catch(() => undefined), () => undefined);
      throw e;
    } finally {
      if (timer) clearTimeout(timer);
    }
    let link: Link | null = null;
    let body: Record<string, unknown>;
    let resume: { sid: string; proof: Uint8Array; last: number } | null = null;
    try {
      const control = await conn.openStream();
      link = new Link(this, conn, control);
      const l = link;
      conn.onClose((info: CloseInfo) => {
        if (info.status !== undefined) l.peerError = new RpcError(statusFromWire(info.status), info.reason);
        else if (info.error) {
          l.peerError = new RpcError(Status.UNAVAILABLE, info.reason);
          l.peerError.cause = info.error;
        }
        // a close without a status after the server's GOAWAY: the drain says why
        this.linkLost(l, info.status === undefined && !info.error && l.drainReason !== null ? l.drainReason : info.reason);
      });
      conn.onDatagram((d) => {
        try {
          l.onDatagram(d);
        } catch (e) {
          // a bug in handling one datagram: it is dropped (reported), the next ones are handled
          this.reportInternal(e, "handling a datagram");
        }
      });
      conn.onDraining?.(() => {
        // a secure-mode transport GOAWAY drains like the RPC GOAWAY frame
        if (l.state === "ready") {
          l.state = "draining";
          this.onGoaway(l);
        }
      });
      let claim: Record<string, unknown> | null = restore ? this.restoreClaim() : null;
      if (this.ticket && conn.channelBinding) {
        const last = this.link?.lastDirect ?? 0; // the numbered direct events handled
        resume = { sid: this.ticket.sid, proof: resumeProof(this.ticket.token, this.ticket.sid, conn.channelBinding), last };
        if (!claim) claim = { offsets: this.restoreClaim().offsets };
      }
      // tping: once WELCOME says tping too, this client heartbeats over the transport and its mux needs no NOPs
      // numbered: this client takes numbered direct events (they survive a resume exactly)
      const hello: Record<string, unknown> = { v: PROTOCOL_VERSION, md: this.opts.metadata ?? {}, tping: true, numbered: true };
      if (claim) hello.restore = claim;
      if (resume) hello.resume = resume;
      l.sendFrame(control, encodeFrame(T.HELLO, 0, hello));
      void l.readLoop(control, null);
      let wt: ReturnType<typeof setTimeout> | null = null;
      const noAnswer = new Promise<never>((_, rej) => {
        wt = setTimeout(
          () => {
            // a KCP connection's likely causes; a web transport (no wire mode) got this far over TCP or QUIC
            const hint = conn.wireMode === null ? "" : ": is the server running and reachable over UDP (address, port, firewall), with the same wire mode, key and FEC?";
            rej(new RpcError(Status.UNAVAILABLE, `no answer from ${conn.remoteAddress} within ${timeout / 1000} s${hint}`));
          },
          timeout,
        );
      });
      try {
        body = await Promise.race([l.welcome, noAnswer, abandoned]);
      } finally {
        if (wt) clearTimeout(wt);
      }
      // WELCOME came, but close() ran before this went on: the connection is not the client's
      if (this.closing) throw new RpcError(Status.CANCELLED, "client closed");
    } catch (e) {
      link?.shutdown(new RpcError(Status.UNAVAILABLE, "connect failed"));
      // the peer never answered: nothing to linger for
      await (conn.abort ? conn.abort() : conn.close()).catch(() => undefined);
      // the transport ended before HELLO was answered (a server's CLOSE right after the handshake):
      // the mux error says why
      if (e instanceof MuxClosedError) throw new RpcError(Status.UNAVAILABLE, `connect failed: ${e.message}`);
      throw e;
    }
    link.sessionId = typeof body.sid === "string" ? body.sid : null;
    // the server asks for held acks (docs/tuning.md "Delayed acks"); the session's own setting wins
    if (isInt(body.ackhold) && body.ackhold > 0) conn.holdAcks?.(body.ackhold);
    const hbMs = isInt(body.hb) ? body.hb : null;
    this.welcomeInfo = { epoch: isInt(body.epoch) ? body.epoch : null, maxMessage: isInt(body.max_msg) ? body.max_msg : null, heartbeatMs: hbMs };
    const previous = this.ticket;
    const t = isMap(body.resume) ? body.resume.token : null;
    this.ticket = link.sessionId && t instanceof Uint8Array && t.length === 32 ? { sid: link.sessionId, token: t } : null;
    if (resume && previous) {
      if (body.resumed === true) this.resumes++;
      else {
        const reason = typeof body.resume_error === "string" ? body.resume_error : "session expired";
        this.local("kcprpc.SessionExpired", { session_id: previous.sid, reason });
      }
    }
    const resumed = resume !== null && body.resumed === true;
    // a resumed session's numbered direct events: [sent again, missed] (anything else reads as absent)
    const d = body.direct;
    const direct = resumed && Array.isArray(d) && d.length === 2 && d.every((x) => isInt(x) && x >= 0) ? (d as [number, number]) : null;
    // what came before the WELCOME (replays, the session's own events): after SessionExpired, before the recovery reports
    let last = resumed && resume ? resume.last : 0;
    // the missed ones follow last: told once (the Recovered below), then passed
    if (direct && direct[1] > 0) last = ((last - 1 + direct[1]) % 0xffffffff) + 1;
    link.releaseHeld(last);
    if (restore || resume) this.restored(isMap(body.restored) ? body.restored : null);
    if (direct && (direct[0] || direct[1])) {
      // its numbered direct events sent again, and those the server no longer had
      this.local("kcprpc.Recovered", { key: "session", recovered: direct[1] === 0, replayed: direct[0], missed: direct[1], position: [0, link.lastDirect] });
    }
    const old = this.link;
    const hbCfg = this.opts.heartbeat === undefined ? { intervalMs: 1000, timeoutMs: 5000 } : this.opts.heartbeat;
    // HELLO and WELCOME both said tping: liveness is the transport's (its keepalives), the mux goes quiet
    if (body.tping === true) link.conn.useTransportKeepalive?.();
    if (hbCfg) link.startHeartbeat(hbCfg, hbMs, old?.hb?.srttMs ?? null, body.tping === true);
    this.link = link;
    this.gaveUp = null;
    const w = this.readyWaiters;
    this.readyWaiters = [];
    for (const f of w) f();
  }

  /** @internal the link ended */
  linkLost(link: Link, reason: string): void {
    if (link.state === "closed") return;
    link.shutdown(link.peerError ?? new RpcError(Status.UNAVAILABLE, reason));
    void link.conn.close().catch(() => undefined);
    if (this.closing || this.link !== link) return;
    const hook = this.opts.onDisconnect;
    // (one that throws must not keep the reconnect from starting, nor throw into the transport)
    if (hook) this.guarded("onDisconnect", () => hook(reason));
    this.startReconnect();
  }

  /** @internal the server drains this link */
  onGoaway(link: Link): void {
    if (link.goaway) return;
    link.goaway = true;
    if (this.link === link && !this.closing) this.startReconnect();
  }

  private startReconnect(): void {
    const policy = this.opts.reconnect;
    if (!policy) {
      // nothing will connect again: what waits for a connection fails now (it waited for its whole timeout)
      this.gaveUp = new RpcError(Status.UNAVAILABLE, "connection lost, and no reconnect policy");
      const w = this.readyWaiters;
      this.readyWaiters = [];
      for (const f of w) f();
      return;
    }
    if (this.reconnecting) return;
    this.reconnecting = this.reconnectLoop(policy)
      .catch((e: unknown) => {
        // a bug in the loop itself: not silent, and calls waiting for the link fail instead of waiting on
        this.reportInternal(e, "the reconnect loop");
        this.gaveUp = new RpcError(Status.UNAVAILABLE, `reconnecting failed: ${e instanceof Error ? e.message : String(e)}`);
        const w = this.readyWaiters;
        this.readyWaiters = [];
        for (const f of w) f();
      })
      .finally(() => {
        this.reconnecting = null;
      });
  }

  private async reconnectLoop(policy: ReconnectPolicy): Promise<void> {
    let attempt = 0;
    let last: unknown = null;
    while (!this.closing) {
      if (policy.maxAttempts != null && attempt >= policy.maxAttempts) {
        const why = last instanceof RpcError ? last.statusMessage : last instanceof Error ? last.message : "no attempt";
        this.gaveUp = new RpcError(Status.UNAVAILABLE, `gave up reconnecting after ${attempt} attempts: ${why}`);
        const w = this.readyWaiters;
        this.readyWaiters = [];
        for (const f of w) f();
        const hook = this.opts.onGiveUp;
        const err = this.gaveUp;
        if (hook) this.guarded("onGiveUp", () => hook(err));
        return;
      }
      await this.pause(reconnectDelay(policy, attempt, this.opts.random));
      attempt++;
      if (this.closing) return;
      try {
        await this.connectOnce(policy.restore ?? true);
      } catch (e) {
        last = e;
        continue;
      }
      this.reconnects++;
      const hook = this.opts.onReconnect;
      // (the connection is up all the same)
      if (hook) this.guarded("onReconnect", () => hook());
      return;
    }
  }

  /** Wait `ms` before the next reconnect attempt, or until close(). */
  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(t);
        this.interrupt = null;
        resolve();
      };
      const t = setTimeout(done, ms);
      this.interrupt = done;
    });
  }

  /**
   * Wait until connected, at most `timeoutMs`. Fails at once when nothing will connect again: with
   * CANCELLED after {@link close}, with the give-up's UNAVAILABLE once the reconnect policy gave up
   * (or, without a policy, once the connection is lost).
   */
  async waitConnected(timeoutMs = 10000): Promise<void> {
    const deadline = this.now() + timeoutMs;
    while (!this.connected) {
      if (this.closing) throw new RpcError(Status.CANCELLED, "client closed");
      if (this.gaveUp) throw this.gaveUp;
      const left = deadline - this.now();
      if (left <= 0) throw new RpcError(Status.UNAVAILABLE, "not connected");
      await Promise.race([new Promise<void>((r) => this.readyWaiters.push(r)), sleep(Math.min(left, 50))]);
    }
  }

  /**
   * Close: tell the server (GOAWAY [0, "client closed"]: the session ends for good), fail calls
   * with CANCELLED. What is still queued (reliable notifies, the GOAWAY) goes out first: resolves
   * once the transport has ended, after at most its close linger (`session.closeLingerMs`, 5 s)
   * while sent data is unacknowledged. A reconnect attempt in flight (dialing, or waiting for
   * WELCOME) is abandoned: a connection it makes all the same is closed at once.
   */
  async close(): Promise<void> {
    this.closing = true;
    this.ticket = null;
    // a reconnect attempt in flight is abandoned: its connection, should it come up, is closed, never the link
    this.interrupt?.(new RpcError(Status.CANCELLED, "client closed"));
    const link = this.link;
    if (link && link.state !== "closed") {
      link.sendFrame(link.control, encodeFrame(T.GOAWAY, 0, [0, "client closed"]));
      link.shutdown(new RpcError(Status.CANCELLED, "client closed"));
      await link.conn.close();
    }
    const w = this.readyWaiters;
    this.readyWaiters = [];
    for (const f of w) f();
  }

  // ---------------------------------------------------------------- calls

  private requireLink(): Link {
    const l = this.link;
    if (this.closing) throw new RpcError(Status.CANCELLED, "client closed");
    if (!l || l.state === "closed") throw this.gaveUp ?? new RpcError(Status.UNAVAILABLE, "not connected");
    if (l.state === "draining") throw new RpcError(Status.UNAVAILABLE, "server shutting down");
    return l;
  }

  /** The next call id: 1, 2, 3 … wrapping at 2³², never 0, and never one a call in flight on `link` still holds (after the wrap, a subscription opened 2³² calls ago may still run). */
  private newCallId(link: Link): number {
    let id = (this.nextCallId + 1) >>> 0 || 1;
    while (link.calls.has(id)) id = (id + 1) >>> 0 || 1; // bounded: at most as many calls as the server lets run at once
    this.nextCallId = id;
    return id;
  }

  private async begin<Res>(method: string, kind: Kind, payload: unknown, opts: CallOptions): Promise<ActiveCall<Res>> {
    if (typeof method !== "string" || !method.includes("/")) throw new UsageError(`method must be a wire name "<service>/<method>", got ${String(method)}`);
    if (opts.signal?.aborted) throw new RpcError(Status.CANCELLED, "cancelled by the caller");
    let timeoutMs = opts.timeoutMs ?? this.opts.defaultTimeoutMs;
    if (timeoutMs !== undefined && (!(timeoutMs >= 0) || !Number.isFinite(timeoutMs))) throw new UsageError("timeoutMs must be a finite number >= 0");
    if (this.opts.waitForReady && !this.connected && !this.closing && this.reconnecting) {
      const t0 = this.now();
      try {
        await this.waitConnected(timeoutMs ?? 2 ** 31 - 1);
      } catch (e) {
        if (e instanceof RpcError && e.code === Status.UNAVAILABLE && timeoutMs !== undefined && !this.gaveUp) {
          throw new RpcError(Status.DEADLINE_EXCEEDED, "deadline exceeded while waiting for a connection");
        }
        throw e;
      }
      if (timeoutMs !== undefined) timeoutMs = Math.max(0, timeoutMs - (this.now() - t0));
    }
    const link = this.requireLink();
    const end = kind === "unary" || kind === "server";
    const id = this.newCallId(link);
    const frame = encodeFrame(T.CALL, id, [method, opts.metadata ?? null, timeoutMs === undefined ? null : Math.max(0, Math.floor(timeoutMs)), end ? FLAG_END : 0, end ? payload : null]);
    if (frame.length - FRAME_HEADER_SIZE > this.maxMessageSize) throw new RpcError(Status.RESOURCE_EXHAUSTED, "request larger than max_message_size");
    const framing = kind === "unary" ? (this.opts.unaryFraming ?? "shared") : (this.opts.streamFraming ?? "stream");
    const own = framing === "stream";
    const stream = own ? await link.conn.openStream() : link.control;
    const call = new ActiveCall<Res>(link, id, kind, stream, own);
    link.calls.set(id, call as ActiveCall<unknown>);
    link.activity++;
    if (own) void link.readLoop(stream, call as ActiveCall<unknown>);
    link.sendFrame(stream, frame);
    call.watch(opts, timeoutMs);
    return call;
  }

  private async sendMessage(call: ActiveCall<unknown>, message: unknown): Promise<void> {
    if (call.ended) {
      if (call.error) throw call.error;
      throw new UsageError("the call has ended");
    }
    const frame = encodeFrame(T.MSG, call.id, message);
    if (frame.length - FRAME_HEADER_SIZE > this.maxMessageSize) throw new RpcError(Status.RESOURCE_EXHAUSTED, "request larger than max_message_size");
    call.link.sendFrame(call.stream, frame);
    call.link.activity++;
    await call.stream.drain().catch(() => undefined);
  }

  private async result<Res>(call: ActiveCall<Res>): Promise<Res> {
    await call.done;
    if (call.error) throw call.error;
    if (call.reply) return call.reply.value;
    const last = call.queue.pop();
    if (last !== undefined) return last;
    throw new RpcError(Status.INTERNAL, "the call ended without a response");
  }

  /** A unary call: `service` and `method` or one wire name `"svc/method"` (`call("a.B", "m", req)`). */
  call<Req, Res>(service: string, method: string, request: Req, options: CallOptions = {}): Promise<Res> {
    return this.unary<Req, Res>(`${service}/${method}`, request, options);
  }

  /** A unary call by wire name. */
  async unary<Req, Res>(method: string, request: Req, options: CallOptions = {}): Promise<Res> {
    if (this.opts.interceptors?.length) {
      return (await this.intercept("unary", method, request, options, async (o, r) => this.result(await this.begin<Res>(method, "unary", r, o)))) as Res;
    }
    const call = await this.begin<Res>(method, "unary", request, options);
    return this.result(call);
  }

  /** Run the interceptors around `last`, which gets the options and request they left. */
  private intercept(kind: Kind, method: string, request: unknown, options: CallOptions, last: (o: CallOptions, request: unknown) => Promise<unknown>): Promise<unknown> {
    const details: ClientCallDetails = { method, kind, request, metadata: { ...(options.metadata ?? {}), }, timeoutMs: options.timeoutMs ?? this.opts.defaultTimeoutMs };
    return chainInterceptors(this.opts.interceptors ?? [], details, (d) => {
      const o: CallOptions = { ...options, metadata: d.metadata };
      if (d.timeoutMs === undefined) delete o.timeoutMs;
      else o.timeoutMs = d.timeoutMs;
      return last(o, d.request);
    });
  }

  /** begin(), through the interceptors for a streaming call (they see it started). */
  private beginStreaming<Res>(method: string, kind: Kind, request: unknown, options: CallOptions): Promise<ActiveCall<Res>> {
    if (!this.opts.interceptors?.length) return this.begin<Res>(method, kind, request, options);
    let started: ActiveCall<Res> | null = null;
    return this.intercept(kind, method, request, options, async (o, r) => {
      started = await this.begin<Res>(method, kind, r, o);
      return started;
    }).then(() => {
      if (!started) throw new RpcError(Status.INTERNAL, "an interceptor did not call next()");
      return started;
    });
  }

  private streamHandle<Res>(callP: Promise<ActiveCall<Res>>): ServerStreamCall<Res> {
    let cancelled = false;
    void callP.catch(() => undefined);
    return {
      [Symbol.asyncIterator]: (): AsyncIterator<Res> => ({
        next: async () => (await callP).next(),
        return: async () => {
          const c = await callP;
          c.cancel(new RpcError(Status.CANCELLED, "iteration stopped"));
          return { value: undefined, done: true };
        },
      }),
      headers: async () => {
        const c = await callP;
        await c.headersSeen;
        if (c.headers) return c.headers;
        if (c.error) throw c.error;
        return {};
      },
      trailers: async () => {
        const c = await callP;
        await c.done;
        if (c.error) throw c.error;
        return c.trailers ?? {};
      },
      cancel: () => {
        if (cancelled) return;
        cancelled = true;
        void callP.then((c) => c.cancel(new RpcError(Status.CANCELLED, "cancelled by the caller")), () => undefined);
      },
    };
  }

  /** A server-streaming call: iterate the responses. */
  serverStream<Req, Res>(method: string, request: Req, options: CallOptions = {}): ServerStreamCall<Res> {
    return this.streamHandle(this.beginStreaming<Res>(method, "server", request, options));
  }

  /** A client-streaming call: requests from an (async) iterable, one response. */
  async clientStream<Req, Res>(method: string, requests: Iterable<Req> | AsyncIterable<Req>, options: CallOptions = {}): Promise<Res> {
    if (this.opts.interceptors?.length) {
      return (await this.intercept("client", method, requests, options, (o, r) => this.clientStreamCore<Req, Res>(method, r as Iterable<Req> | AsyncIterable<Req>, o))) as Res;
    }
    return this.clientStreamCore(method, requests, options);
  }

  private async clientStreamCore<Req, Res>(method: string, requests: Iterable<Req> | AsyncIterable<Req>, options: CallOptions): Promise<Res> {
    const call = await this.begin<Res>(method, "client", null, options);
    try {
      for await (const r of requests as AsyncIterable<Req>) {
        if (call.ended) break;
        await this.sendMessage(call as ActiveCall<unknown>, r);
      }
    } catch (e) {
      call.cancel(e instanceof RpcError ? e : new RpcError(Status.CANCELLED, `the request iterable failed: ${String(e)}`));
      throw e;
    }
    if (!call.ended) call.link.sendFrame(call.stream, encodeFrame(T.END, call.id, null));
    return this.result(call);
  }

  /** A bidi call: `send()`, `end()`, iterate responses. */
  bidi<Req, Res>(method: string, options: CallOptions = {}): BidiCall<Req, Res> {
    const callP = this.beginStreaming<Res>(method, "bidi", null, options);
    const h = this.streamHandle(callP);
    let ended = false;
    return {
      ...h,
      [Symbol.asyncIterator]: h[Symbol.asyncIterator],
      send: async (m: Req) => {
        if (ended) throw new UsageError("send() after end()");
        await this.sendMessage((await callP) as ActiveCall<unknown>, m);
      },
      end: () => {
        if (ended) return;
        ended = true;
        void callP.then((c) => {
          if (!c.ended) c.link.sendFrame(c.stream, encodeFrame(T.END, c.id, null));
        }, () => undefined);
      },
    };
  }

  /**
   * Fire-and-forget: a datagram when it fits (unreliable), else on the control stream. Nothing
   * comes back, so nothing fails: while the client is not connected (before `connect`, during a
   * reconnect, after `close`) the message is dropped and counted in `counters.notifications_dropped`,
   * as the Python client does (it threw UNAVAILABLE, which a game loop sending inputs did not expect).
   */
  notify(method: string, payload: unknown, options: NotifyOptions = {}): void {
    const link = this.link;
    if (this.closing || !link || link.state === "closed" || link.state === "draining") {
      this.counters.notifications_dropped++;
      return;
    }
    const frame = encodeFrame(T.NOTIFY, 0, [method, payload, options.metadata ?? null]);
    if (frame.length - FRAME_HEADER_SIZE > this.maxMessageSize) throw new RpcError(Status.RESOURCE_EXHAUSTED, "request larger than max_message_size");
    link.activity++;
    if (!options.reliable && frame.length <= link.conn.maxDatagramSize) link.conn.sendDatagram(frame);
    else link.sendFrame(link.control, frame);
  }

  // ---------------------------------------------------------------- events

  /** Handle pushed events of one wire name; returns the unsubscribe function. */
  on<TP>(eventName: string, handler: (payload: TP, info: EventInfo) => void): () => void {
    const list = this.handlers.get(eventName) ?? [];
    const h = handler as (payload: unknown, info: EventInfo) => void;
    list.push(h);
    this.handlers.set(eventName, list);
    return () => {
      const i = list.indexOf(h);
      if (i >= 0) list.splice(i, 1);
    };
  }

  /**
   * Pushed events of one wire name as an async iterable of `[payload, info]` (registered when the
   * iteration starts, removed when it stops). At most `maxQueued` (default 4096) wait unread; past
   * that the oldest is dropped and counted in `counters.events_dropped`.
   */
  events<TP>(eventName: string, options: { maxQueued?: number } = {}): AsyncIterable<[TP, EventInfo]> {
    const max = options.maxQueued ?? 4096;
    if (!Number.isInteger(max) || max <= 0) throw new UsageError("maxQueued must be a positive integer");
    return {
      [Symbol.asyncIterator]: (): AsyncIterator<[TP, EventInfo]> => {
        const queue: Array<[TP, EventInfo]> = [];
        let wake: (() => void) | null = null;
        let done = false;
        const off = this.on<TP>(eventName, (p, info) => {
          if (queue.length >= max) {
            queue.shift();
            this.counters.events_dropped++;
          }
          queue.push([p, info]);
          wake?.();
        });
        return {
          next: async (): Promise<IteratorResult<[TP, EventInfo]>> => {
            while (!queue.length && !done) await new Promise<void>((r) => (wake = r));
            wake = null;
            const v = queue.shift();
            return v ? { value: v, done: false } : { value: undefined, done: true };
          },
          return: async (): Promise<IteratorResult<[TP, EventInfo]>> => {
            done = true;
            off();
            wake?.();
            return { value: undefined, done: true };
          },
        };
      },
    };
  }

  /** Every pushed event, raw. */
  onRawEvent(handler: (ev: RawEvent) => void): () => void {
    this.rawHandlers.push(handler);
    return () => {
      const i = this.rawHandlers.indexOf(handler);
      if (i >= 0) this.rawHandlers.splice(i, 1);
    };
  }

  /** @internal one EVENT body (`unreliable`: it came as a datagram) */
  handleEvent(body: unknown, unreliable: boolean): void {
    if (!Array.isArray(body) || body.length < 5 || body.length > 7 || typeof body[0] !== "string") {
      this.counters.bad_frames++;
      return;
    }
    const name = body[0];
    const payload: unknown = body[1];
    const key = typeof body[2] === "string" ? body[2] : null;
    const seq = isInt(body[3]) ? body[3] : null;
    const epoch = isInt(body[4]) ? body[4] : null;
    const flags = isInt(body[5]) ? body[5] : 0;
    const lw = typeof body[6] === "string" ? body[6] : null;
    if (lw !== null && !this.keepKeyed(key, lw, seq, epoch, unreliable)) return;
    if (key !== null && seq !== null && epoch !== null && (lw === null || !unreliable)) {
      const table = unreliable ? this.latest : this.offsets;
      const prev = table.get(key);
      if (prev && prev[0] === epoch && seq <= prev[1]) {
        if (unreliable) this.counters.events_stale++;
        return;
      }
      if (!prev && table.size >= MAX_LATEST_KEYS) {
        // a server naming ever new keys cannot grow the table: the oldest entry goes
        table.delete(table.keys().next().value as string);
        this.counters.keys_evicted++;
      }
      table.set(key, [epoch, seq]);
    }
    this.deliver({
      name, payload, key, unreliable, latestKey: lw, replayed: (flags & EVENT_REPLAYED) !== 0,
      position: seq !== null && epoch !== null ? [epoch, seq] : null,
    });
  }

  private deliver(ev: RawEvent): void {
    // a handler's error (or an async handler's rejection) is the application's: reported, the connection goes on
    for (const h of [...this.rawHandlers]) this.guarded("raw event handler", () => h(ev));
    const { payload, ...info } = ev;
    for (const h of [...(this.handlers.get(ev.name) ?? [])]) this.guarded(`event handler for ${ev.name}`, () => h(payload, info));
  }

  private keepKeyed(key: string | null, lw: string, seq: number | null, epoch: number | null, unreliable: boolean): boolean {
    if (seq === null || epoch === null) return true;
    const k = `${key === null ? "\u0000" : "k" + key}\u0000${lw}`;
    const prev = this.keyed.get(k);
    if (prev && prev[0] === epoch) {
      if (seq <= prev[1]) {
        if (unreliable) {
          this.counters.events_stale_keyed++;
          this.counters.events_stale++;
          return false;
        }
        return true;
      }
      this.keyed.delete(k);
    } else if (!prev && this.keyed.size >= MAX_LATEST_KEYS) {
      const oldest = this.keyed.keys().next().value as string;
      this.keyed.delete(oldest);
      this.counters.keys_evicted++;
    } else if (prev) this.keyed.delete(k);
    this.keyed.set(k, [epoch, seq]);
    return true;
  }

  private local(name: string, payload: Record<string, unknown>): void {
    this.deliver({ name, payload, key: null, position: null, replayed: false, unreliable: false, latestKey: null });
  }

  /** @internal a ROOMS frame */
  roomChanged(joined: boolean, room: string): void {
    if (joined) this.rooms.add(room);
    else this.rooms.delete(room);
  }

  private restoreClaim(): { rooms: string[]; topics: string[]; offsets: Record<string, Position> } {
    const keys = new Set([...[...this.rooms].map((r) => `room:${r}`), ...[...this.topics].map((t) => `topic:${t}`)]);
    const offsets: Record<string, Position> = {};
    for (const [k, v] of this.offsets) if (keys.has(k)) offsets[k] = [v[0], v[1]];
    return { rooms: [...this.rooms].sort(), topics: [...this.topics].sort(), offsets };
  }

  private advance(key: string, pos: Position): void {
    const prev = this.offsets.get(key);
    if (!prev || prev[0] !== pos[0] || prev[1] < pos[1]) this.offsets.set(key, pos);
  }

  private restored(r: Record<string, unknown> | null): void {
    if (!r) return;
    const strs = (v: unknown): Set<string> => new Set(Array.isArray(v) ? v.filter((x): x is string => typeof x === "string") : []);
    const backRooms = strs(r.rooms);
    const backTopics = strs(r.topics);
    const lost = [...[...this.rooms].filter((x) => !backRooms.has(x)).sort().map((x) => `room:${x}`), ...[...this.topics].filter((x) => !backTopics.has(x)).sort().map((x) => `topic:${x}`)];
    this.rooms.clear();
    for (const x of backRooms) this.rooms.add(x);
    this.topics.clear();
    for (const x of backTopics) this.topics.add(x);
    for (const key of lost) {
      const [epoch, seq] = this.offsets.get(key) ?? [0, 0];
      this.offsets.delete(key);
      this.latest.delete(key);
      this.local("kcprpc.ResumeFailed", { key, epoch, last_seq: seq, reason: "not restored" });
    }
    if (isMap(r.recovery)) for (const [key, rep] of Object.entries(r.recovery)) this.recovered(key, rep);
  }

  private recovered(key: string, rep: unknown): void {
    if (!Array.isArray(rep) || rep.length < 4) return;
    const [ok, replayed, missed, pos] = rep as [unknown, unknown, unknown, unknown];
    if (!isInt(replayed) || !(missed === null || isInt(missed)) || !Array.isArray(pos) || pos.length !== 2 || !pos.every(isInt)) return;
    const name = key.slice(key.indexOf(":") + 1);
    if (key.startsWith("room:")) {
      if (!this.rooms.has(name)) return;
    } else if (!key.startsWith("topic:") || !this.topics.has(name)) return;
    this.advance(key, [pos[0] as number, pos[1] as number]);
    const p = this.offsets.get(key) as Position;
    this.local("kcprpc.Recovered", { key, recovered: ok === true, replayed, missed, position: [p[0], p[1]] });
  }

  /** Subscribe to a topic (`since`: replay what was published after that position). */
  async subscribe(topic: string, since?: Position): Promise<Record<string, unknown>> {
    const req: Record<string, unknown> = { topic };
    if (since) req.since = since;
    const reply = await this.unary<Record<string, unknown>, Record<string, unknown>>("kcprpc.Push/Subscribe", req);
    this.topics.add(topic);
    const key = `topic:${topic}`;
    const pos = reply.position;
    if (Array.isArray(pos) && pos.length === 2 && pos.every(isInt)) {
      if (!since) this.advance(key, [pos[0] as number, pos[1] as number]);
      else this.recovered(key, [reply.recovered, reply.replayed, reply.missed ?? null, pos]);
    }
    return reply;
  }

  /**
   * The kept messages of a topic this client is subscribed to (or a room it is in): `kcprpc.Push/History`,
   * reply `{messages: [{name, payload, position}], position, missed, truncated}`.
   */
  async history(where: { topic: string } | { room: string }, options: { since?: Position; limit?: number } = {}): Promise<Record<string, unknown>> {
    const req: Record<string, unknown> = { ...where };
    if (options.since) req.since = options.since;
    if (options.limit !== undefined) req.limit = options.limit;
    return this.unary("kcprpc.Push/History", req);
  }

  /** Who is in a room (or subscribed to a topic): `kcprpc.Push/Members`, reply `{key, members: [{id, info}], total, truncated}`. */
  async members(where: { topic: string } | { room: string }): Promise<Record<string, unknown>> {
    const w = where as { topic?: string; room?: string };
    if ((w.room === undefined) === (w.topic === undefined)) throw new UsageError("members() takes { room } or { topic } (one of them)");
    return this.unary("kcprpc.Push/Members", { room: w.room ?? null, topic: w.topic ?? null });
  }

  /** Unsubscribe from a topic. */
  async unsubscribe(topic: string): Promise<void> {
    this.topics.delete(topic);
    await this.unary("kcprpc.Push/Unsubscribe", { topic });
  }
}
