/**
 * KCP sessions over UDP: {@link KcpSession} and {@link dial} (compat mode). The TypeScript
 * counterpart of the Python `kcp/session.py` + `kcp/client.py`.
 *
 * A session runs one KCP {@link Kcp} engine behind its packet {@link Pipeline} (crypt, crc32,
 * FEC, OOB) and sends through a {@link Path} (path.ts): {@link CompatPath} for kcp-go's format, or a
 * secure path (src/secure/). The path owns the socket; it hands every received datagram to
 * {@link KcpSession.feed} (after opening it, in secure mode).
 *
 * Timing: no busy polling. Received datagrams are processed as they arrive; at the end of that
 * turn of the event loop (`setImmediate`) the session delivers data, flushes acks and whatever the
 * acks let out, then arms one `setTimeout` for the engine's next `check()` (or only the idle
 * deadline when nothing is in flight).
 *
 * KCP has no FIN: a session ends on {@link KcpSession.close} (after a bounded linger while sent
 * data is unacknowledged), {@link KcpSession.abort}, the idle timeout ({@link IdleTimeoutError}),
 * a dead link ({@link DeadLinkError}), or the path (secure mode: the peer's CLOSE). Bad datagrams
 * are dropped and counted in {@link KcpSession.counters}; the receive path never throws.
 */
import type { Counters } from "./counters.js";
import { newCounters } from "./counters.js";
import { deriveKey, newCrypt, type CryptName, type PacketCrypt } from "./crypt.js";
import type { BbrLite } from "./congestion.js";
import { ACK_HOLD_MAX, IKCP_ASK_SEND, IKCP_ASK_TELL, Kcp } from "./engine.js";
import { ConnectionClosedError, DeadLinkError, KcpUsageError } from "./errors.js";
import { UdpLink } from "./link.js";
import { CompatPath, compatConv, type Path, type PathOwner } from "./path.js";
import { bareKcp, defaultRandom, KIND_KCP, KIND_OOB, Pipeline, type RandomSource } from "./pipeline.js";
import { SessionCc } from "./sessionCc.js";

/** The session ended because nothing arrived from the peer for `idleTimeoutMs`. */
export class IdleTimeoutError extends ConnectionClosedError {}

/**
 * The default write buffer (segments) with `congestion: "bbr"`; a bulk flow whose controller's
 * window is larger gets twice that window (the Python `kcp.session_setup.WRITE_BUFFER`).
 */
export const WRITE_BUFFER = 256;
/** The default send and receive windows (segments), as the Python `SessionConfig`'s. */
export const DEFAULT_WND = 512;
/** kcp-go's initial remote window (its IKCP_WND_RCV), assumed until the peer's first packet. */
export const KCPGO_INITIAL_RMT_WND = 32;
/** Lone acks in a row that found no data to ride with, after which lone acks go at once. */
export const LONE_ACKS = 8;
/** Every LONE_ACK_PROBE-th lone ack after that waits again (one more try at a ride). */
export const LONE_ACK_PROBE = 32;
/** Lone acks sent at once after a loss before a holding session holds again. */
export const HOLD_QUIET = 512;
/** Segments unacked at most for the sparse-flight loss recovery (a call, an event). */
export const SPARSE_FLIGHT = 8;
/** `leadCopies: "auto"` picks 0..this many copies ahead of any loss. */
export const AUTO_LEAD_MAX = 2;
/** ms before the first window probe while the peer's window is 0 (`lossRecovery: "adaptive"`; ikcp: 7 s). */
export const WINDOW_PROBE_INIT = 100;
/** ms between window probes at most (`lossRecovery: "adaptive"`; ikcp: 120 s). */
export const WINDOW_PROBE_LIMIT = 1000;
/**
 * How many more times a receiver sends the window update that reopened its full receive window
 * (after an RTO, then two, then four, while no data comes; `lossRecovery: "adaptive"`; ikcp: once).
 */
export const WINDOW_UPDATE_REPEATS = 3;

/** Set the engine's sparse-flight loss recovery from `options` (the Python `make_engine`'s part). */
function setLossRecovery(eng: Kcp, options: SessionOptions): void {
  const mode = options.lossRecovery ?? "adaptive";
  const maxCopies = options.maxCopies ?? 6;
  const gap = options.copyGapMs ?? 10;
  const lead = options.leadCopies ?? 0;
  if (mode !== "adaptive" && mode !== "ikcp") {
    throw new KcpUsageError(`lossRecovery must be "adaptive" or "ikcp", got ${String(mode)}`);
  }
  if (lead !== "auto" && !(Number.isInteger(lead) && lead >= 0 && lead <= 8)) {
    throw new KcpUsageError(`leadCopies must be "auto" or in 0..8, got ${String(lead)}`);
  }
  if (!(Number.isInteger(maxCopies) && maxCopies >= 1 && maxCopies <= 16) || !(Number.isInteger(gap) && gap >= 1 && gap <= 1000)) {
    throw new KcpUsageError(`maxCopies must be in 1..16, copyGapMs in 1..1000 ms, got ${maxCopies} and ${gap}`);
  }
  if (mode !== "adaptive") return;
  eng.recoveryFlight = SPARSE_FLIGHT;
  eng.recoveryAdaptive = true;
  eng.recoveryMaxCopies = maxCopies;
  eng.recoveryCopies = Math.min(2, maxCopies);
  eng.recoveryGap = gap;
  eng.probeInit = WINDOW_PROBE_INIT;
  eng.probeLimit = WINDOW_PROBE_LIMIT;
  eng.winsRepeat = WINDOW_UPDATE_REPEATS;
  if (lead === "auto") eng.recoveryAutoLead = AUTO_LEAD_MAX;
  else eng.recoveryLead = lead;
}

/** Tuning of one session (defaults as the Python `kcp.SessionConfig`). */
export interface SessionOptions {
  /** UDP payload size; the engine gets this minus the packet-layer and path overheads. Default 1400. */
  mtu?: number;
  /**
   * Send window in segments. Default 512, as the Python `SessionConfig.snd_wnd`: a bulk flow keeps
   * up to this many segments past the oldest unacknowledged one, so it bounds its throughput at
   * about `sndWnd × mss / RTT`.
   */
  sndWnd?: number;
  /** Receive window in segments (at least 128): at most this many are buffered out of order. Default 512. */
  rcvWnd?: number;
  /** ikcp's nodelay(nodelay, interval, resend, nc). Default [1, 10, 2, 1]. */
  nodelay?: [nodelay: number, interval: number, resend: number, nc: number];
  /** KCP stream mode (writes packed into full segments). Default true. */
  stream?: boolean;
  /** Flush acks right after each receive batch. Default true. */
  ackNodelay?: boolean;
  /**
   * Delayed acks (ms; docs/tuning.md "Delayed acks"): a receive batch that leaves one lone ack lets
   * it wait up to this long for data going the same way (the next call); two or more acks go at
   * once. 0: an ack datagram per receive batch. Default 5, as the Python `SessionConfig.ack_delay`.
   */
  ackDelayMs?: number;
  /**
   * Held acks (ms, 0..250; docs/tuning.md "Delayed acks"): a session that only receives (a
   * subscriber) holds a lone ack up to this long for a second segment, so that one datagram acks
   * both. Only in secure mode, with a server that agreed to held acks in the handshake; a server's
   * WELCOME may ask for it too (`ackhold`), this setting wins. Default 0: off, as the Python
   * `SessionConfig.ack_hold`.
   */
  ackHoldMs?: number;
  /** Transmissions of one segment that mean a dead link. Default 20. */
  deadLink?: number;
  /**
   * How a small flight (a call, an event: at most 8 segments unacked) is retransmitted, as the
   * Python `SessionConfig.loss_recovery` (docs/tuning.md "Loss recovery"): `"adaptive"` (the
   * default) sends each recovery round as up to `maxCopies` copies `copyGapMs` apart, as many as
   * the loss seen on this session calls for, with no backoff for the first four rounds and then
   * one capped at 4 RTOs, and probes a closed receive window after 100 ms, backing off to 1 s
   * (ikcp: 7 s); `"ikcp"` is ikcp's one retransmission per RTO with its backoff, and its probes.
   * Sender-side only: any peer is unaffected.
   */
  lossRecovery?: "adaptive" | "ikcp";
  /** The most copies of one recovery round (1..16). Default 6. */
  maxCopies?: number;
  /** ms between the copies of a round (1..1000; rounded up to the flush interval). Default 10. */
  copyGapMs?: number;
  /**
   * Spaced copies of every small flight sent right away (0..8), or `"auto"`: 0 to 2, picked from
   * the loss this session sees (none on a clean link or under bursts). Bandwidth for p99 under
   * random loss. Default 0.
   */
  leadCopies?: number | "auto";
  /**
   * The sender's congestion control, as the Python `SessionConfig.congestion` (docs/tuning.md
   * "Congestion control"): `"bbr"` (the default) paces bulk data to the measured bottleneck
   * bandwidth and keeps about one bandwidth-delay product in flight, so a rate-limited link's
   * queue stays short, and reads random loss as loss, not congestion; calls and events (at most 8
   * segments queued or in flight, nothing measured yet) are sent exactly as with `"ikcp"`, which
   * is ikcp's own window with the configured `nc` (none with the default nodelay). Sender-side
   * only: any peer is unaffected.
   */
  congestion?: "bbr" | "ikcp";
  /** End the session when nothing arrived for this long (ms); 0 or null: never. Default 60000. */
  idleTimeoutMs?: number | null;
  /** How long close() waits for sent data to be acknowledged (ms). Default 5000. */
  closeLingerMs?: number;
  /** Received OOB datagrams kept while no onDatagram handler is set (more are dropped and counted). Default 256. */
  datagramQueue?: number;
  /**
   * Send-queue high-water mark in segments (write() returns false above it). Default: 256, or twice
   * the congestion controller's window once a bulk flow has a larger one; with `congestion: "ikcp"`,
   * twice `sndWnd`. As the Python `SessionConfig.write_buffer`.
   */
  writeBuffer?: number;
  /** The clock in ms (monotonic). Default: `performance.now()` floored. */
  clock?: () => number;
  /** Random bytes (nonces, conv). Default: the OS CSPRNG. */
  random?: RandomSource;
}

/** kcp-go's packet format (no handshake: both ends must agree). Mirrors the Python `kcp.CompatWire`. */
export interface CompatWireOptions {
  /** `"compat"` (the default). */
  mode?: "compat";
  /** kcptun cipher name; `"null"` or omitted: no crypt layer. */
  crypt?: CryptName;
  /** A passphrase (run through kcptun's PBKDF2) or the 32 derived key bytes. Required with a cipher. */
  key?: string | Uint8Array;
  /** [dataShards, parityShards]; [0, 0] (the default) is off. */
  fec?: [number, number];
}

/** Options of {@link dial}. */
export interface DialOptions {
  /** The wire format. Default: compat, no crypt, no FEC. */
  wire?: CompatWireOptions;
  /** Session tuning. */
  session?: SessionOptions;
  /** The conversation id. Default: random ({@link compatConv}: its first byte never looks like a secure transport packet). */
  conv?: number;
}

/** What {@link KcpSession} takes besides its path and conv. */
export interface KcpSessionOptions extends SessionOptions {
  /** The packet cipher (from {@link newCrypt}); null: none (the default, and what a secure path wants). */
  crypt?: PacketCrypt | null;
  /** FEC [dataShards, parityShards]. Default [0, 0]. */
  fec?: [number, number];
}

/** Where a session is: open → closing (linger while sent data is unacknowledged) → closed. */
export type SessionState = "open" | "closing" | "closed";

const defaultClock = (): number => Math.floor(performance.now());

/** A reliable, ordered byte stream (plus unreliable datagrams) to one peer over KCP. */
export class KcpSession implements PathOwner {
  /** Everything counted: I/O, engine, packet layer (garbage included). */
  readonly counters: Counters = newCounters();
  /** The engine (for inspection; do not drive it directly). */
  readonly engine: Kcp;
  /** Why the session ended ("" while open). */
  closeReason = "";
  /** The close code given to close()/abort() or by the peer (secure mode). */
  closeCode: number | null = null;
  /** The error the session ended with (null for a normal close). */
  error: Error | null = null;

  private readonly pipeline: Pipeline;
  private readonly cc: SessionCc | null;
  private readonly plain: boolean;
  private readonly overhead: number;
  private readonly clock: () => number;
  private readonly ackNodelay: boolean;
  private readonly ackDelay: number;
  /** When a delayed lone ack goes alone (-1: none waits). */
  private ackDue = -1;
  private loneAcks = 0; // lone acks in a row that found no data to ride with (delayed, then sent alone)
  private hold = 0; // ms a lone ack may wait once this session only receives (held acks), 0: off
  private readonly ownHold: number; // SessionOptions.ackHoldMs (wins over a server's ask)
  private heldAt = -1; // when the ack being held started waiting
  private disorderSeen = 0; // the engine's disorder count last looked at
  private readonly idleMs: number;
  private readonly lingerMs: number;
  private readonly dgramLimit: number;
  private readonly ownWriteBuffer: number; // SessionOptions.writeBuffer (0: follow the window that sends)
  private highWater = 0;
  private lowWater = 0;
  private st: SessionState = "open";
  private lastRecv: number;
  private lingerUntil = 0;
  private tickPending = false;
  private flushWanted = false;
  private inputDirty = false;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private timerDue = -1;
  private dataHandler: ((data: Uint8Array) => void) | null = null;
  private dgramHandler: ((data: Uint8Array) => void) | null = null;
  private readonly dgrams: Uint8Array[] = [];
  private closeHandlers: ((err?: Error) => void)[] = [];
  private paused = false;
  private accepted = false;
  private drainWaiters: (() => void)[] = [];
  private readonly closedPromise: Promise<void>;
  private resolveClosed!: () => void;

  /**
   * A session on `path` for conversation `conv`. Normally made by {@link dial} (compat) or by the
   * secure dialer after its handshake. Attaches itself to the path at once.
   */
  constructor(
    readonly path: Path,
    readonly conv: number,
    options: KcpSessionOptions = {},
  ) {
    this.clock = options.clock ?? defaultClock;
    const fec = options.fec ?? [0, 0];
    // secure mode's handshake agreed on the FEC both ends run; a compat peer shows it with its packets
    this.pipeline = new Pipeline(options.crypt ?? null, fec[0], fec[1], this.counters, options.random ?? defaultRandom, path.mode === "secure");
    this.plain = (options.crypt ?? null) === null && !this.pipeline.fecEnabled;
    this.overhead = this.pipeline.overhead + path.overhead;
    const eng = (this.engine = new Kcp(conv, (d) => this.output(d)));
    eng.counters = this.counters;
    const [nd, interval, resend, nc] = options.nodelay ?? [1, 10, 2, 1];
    eng.nodelay(nd, interval, resend, nc);
    const sndWnd = options.sndWnd ?? DEFAULT_WND;
    const rcvWnd = options.rcvWnd ?? DEFAULT_WND;
    if (!(Number.isInteger(sndWnd) && Number.isInteger(rcvWnd) && sndWnd >= 1 && rcvWnd >= 1 && sndWnd <= 65535 && rcvWnd <= 65535)) {
      throw new KcpUsageError(`sndWnd and rcvWnd must be in 1..65535, got ${sndWnd} and ${rcvWnd}`);
    }
    eng.wndsize(sndWnd, rcvWnd);
    eng.rmtWnd = KCPGO_INITIAL_RMT_WND;
    if (eng.setMtu((options.mtu ?? 1400) - this.overhead) < 0) {
      throw new KcpUsageError(`mtu ${options.mtu ?? 1400} is too small for the packet-layer overhead (${this.overhead})`);
    }
    eng.stream = options.stream === false ? 0 : 1;
    eng.deadLink = options.deadLink ?? 20;
    setLossRecovery(eng, options);
    const congestion = options.congestion ?? "bbr";
    if (congestion !== "bbr" && congestion !== "ikcp") {
      throw new KcpUsageError(`congestion must be "bbr" or "ikcp", got ${String(congestion)}`);
    }
    this.cc = congestion === "bbr" ? new SessionCc(eng) : null;
    const hold = options.ackHoldMs ?? 0;
    if (!(Number.isInteger(hold) && hold >= 0 && hold <= ACK_HOLD_MAX)) {
      throw new KcpUsageError(`ackHoldMs must be in 0..${ACK_HOLD_MAX}, got ${hold}`);
    }
    this.ownHold = hold;
    eng.holdAware = path.heldAcks;
    eng.ackRepeat = path.ackRepeat; // (docs/tuning.md "Repeated acks")
    this.hold = path.heldAcks ? hold : 0;
    this.ackNodelay = options.ackNodelay ?? true;
    this.ackDelay = options.ackDelayMs ?? 5;
    if (!(this.ackDelay >= 0)) throw new KcpUsageError(`ackDelayMs must be >= 0, got ${options.ackDelayMs}`);
    const idle = options.idleTimeoutMs === undefined ? 60000 : options.idleTimeoutMs;
    this.idleMs = idle ? idle : 0;
    this.lingerMs = options.closeLingerMs ?? 5000;
    this.dgramLimit = options.datagramQueue ?? 256;
    this.ownWriteBuffer = options.writeBuffer ?? 0;
    if (!(Number.isInteger(this.ownWriteBuffer) && this.ownWriteBuffer >= 0)) {
      throw new KcpUsageError(`writeBuffer must be an integer >= 0 (0: the default), got ${this.ownWriteBuffer}`);
    }
    this.setWaterMarks(0);
    this.lastRecv = this.clock();
    this.closedPromise = new Promise((r) => {
      this.resolveClosed = r;
    });
    path.attach(this);
    this.post(this.lastRecv);
  }

  // -------------------------------------------------------------- state

  /** `"compat"` or `"secure"`. */
  get mode(): "compat" | "secure" {
    return this.path.mode;
  }

  /** open, closing (lingering) or closed. */
  get state(): SessionState {
    return this.st;
  }

  /** True once the session has fully ended. */
  get closed(): boolean {
    return this.st === "closed";
  }

  /** PathOwner: true once the session has fully ended. */
  get ended(): boolean {
    return this.st === "closed";
  }

  /** PathOwner: the session's clock (ms). */
  now(): number {
    return this.clock();
  }

  /** Resolves once the session has fully ended. */
  whenClosed(): Promise<void> {
    return this.closedPromise;
  }

  /** The sender's controller with `congestion: "bbr"` (its `bw`, `minRtt`, `cwnd`, `state`, `pacingRate`), else null. */
  get congestionController(): BbrLite | null {
    return this.cc !== null ? this.cc.cc : null;
  }

  /** The counters plus the engine's RTT and window state, as one flat record. */
  get stats(): Record<string, number> {
    const e = this.engine;
    const out: Record<string, number> = { ...this.counters };
    Object.assign(out, {
      srtt: e.rxSrtt,
      rttvar: e.rxRttval,
      rto: e.rxRto,
      cwnd: e.cwnd,
      rmtWnd: e.rmtWnd,
      sndWnd: e.sndWnd,
      rcvWnd: e.rcvWnd,
      waitSnd: e.waitsnd(),
      mtu: e.mtu,
      datagramsQueued: this.dgrams.length,
    });
    this.path.addStats(out);
    return out;
  }

  // -------------------------------------------------------------- tuning

  /**
   * Hold lone acks up to `ms` once this session only receives, as {@link SessionOptions.ackHoldMs}
   * would (a kcprpc server's WELCOME asks it: `ServerConfig.ack_hold`). False, and nothing changed,
   * when the peer did not agree to held acks (compat mode, an older server), the session's own
   * `ackHoldMs` is set (it wins), or `ms` is not in 1..250.
   */
  holdAcks(ms: number): boolean {
    if (!this.engine.holdAware || this.ownHold || !(Number.isInteger(ms) && ms > 0 && ms <= ACK_HOLD_MAX)) return false;
    this.hold = ms;
    // already acking at once: the next lone ack tells the peer, then they are held
    if (this.loneAcks >= LONE_ACKS && !this.engine.ackFrg) this.loneAcks = LONE_ACKS - 1;
    return true;
  }

  /**
   * Acks go at once again (a loss): the held one, if any, says how long it waited; the rest (frg
   * 0) tell the peer that acks no longer wait (docs/wire-format/kcp.md "Held acks").
   */
  private stopHold(now: number): void {
    if (this.heldAt >= 0) {
      this.engine.holdFirstAck(now - this.heldAt);
      this.heldAt = -1;
      this.ackDue = -1;
    }
    this.engine.ackFrg = 0;
    this.loneAcks = LONE_ACKS - HOLD_QUIET;
  }

  /** ikcp nodelay(): e.g. (1, 10, 2, 1) for the fastest retransmission. */
  setNodelay(nodelay: number, interval: number, resend: number, nc: number): void {
    this.engine.nodelay(nodelay, interval, resend, nc);
  }

  /** Send and receive windows, in segments (the receive window is at least 128). */
  setWindow(sndWnd: number, rcvWnd: number): void {
    this.engine.wndsize(sndWnd, rcvWnd);
    if (this.cc === null) this.setWaterMarks(0); // "ikcp"'s follow the send window
  }

  /**
   * The write buffer's marks (write() is false above high; drained() resolves below low), as the
   * Python `water_marks`: `writeBuffer` if set; with `"bbr"`, {@link WRITE_BUFFER} or twice `cwnd`
   * (the controller's window) if larger, enough queued to keep a bulk flow's window full and no
   * deeper; with `"ikcp"`, which sends its whole window, twice `sndWnd`.
   */
  private setWaterMarks(cwnd: number): void {
    let high = this.ownWriteBuffer;
    if (!high) high = this.cc === null ? 2 * this.engine.sndWnd : cwnd > WRITE_BUFFER >> 1 ? 2 * cwnd : WRITE_BUFFER;
    this.highWater = high;
    this.lowWater = Math.max(high >> 1, 1);
  }

  /** PathOwner and user: the UDP payload size; the engine gets `mtu` minus all overheads. */
  setMtu(mtu: number): void {
    if (this.engine.setMtu(mtu - this.overhead) < 0) throw new KcpUsageError(`mtu ${mtu} is too small`);
  }

  /** KCP stream mode on or off. */
  setStreamMode(enable: boolean): void {
    this.engine.stream = enable ? 1 : 0;
  }

  // -------------------------------------------------------------- receiving

  /** Set the handler for received stream bytes (replaces any earlier one); data held back so far is delivered at once. */
  onData(handler: ((data: Uint8Array) => void) | null): void {
    this.dataHandler = handler;
    if (handler !== null && this.engine.nrcvQue) this.schedule(false);
  }

  /** Set the handler for received out-of-band datagrams; queued ones are delivered at once. */
  onDatagram(handler: ((data: Uint8Array) => void) | null): void {
    this.dgramHandler = handler;
    while (handler !== null && this.dgrams.length && this.dgramHandler === handler) handler(this.dgrams.shift()!);
  }

  /**
   * Call `handler(error)` once the session ended (soon, if it already has): `error` is undefined
   * for a local close, else why it ended ({@link IdleTimeoutError}, {@link DeadLinkError}...).
   */
  onClose(handler: (err?: Error) => void): void {
    if (this.st === "closed") queueMicrotask(() => handler(this.error ?? undefined));
    else this.closeHandlers.push(handler);
  }

  /** Stop delivering stream bytes (backpressure: they stay in the engine, whose window then closes). */
  pause(): void {
    this.paused = true;
  }

  /** Resume delivering stream bytes (what arrived meanwhile is delivered at once). */
  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    if (this.engine.nrcvQue) this.schedule(false);
  }

  /** The peer's address as `host:port` (`[host]:port` for IPv6), or "" if the path does not know it. */
  get remoteAddress(): string {
    const r = this.path.remote;
    if (r === undefined) return "";
    return r.address.includes(":") ? `[${r.address}]:${r.port}` : `${r.address}:${r.port}`;
  }

  /** PathOwner: one datagram from the peer (already opened by the path). Never throws. */
  feed(data: Uint8Array, now: number): void {
    if (this.st === "closed") return;
    this.lastRecv = now;
    const c = this.counters;
    c.inPkts++;
    c.bytesReceived += data.length;
    const eng = this.engine;
    if (this.plain && bareKcp(data)) {
      if (eng.input(data, now) === 0) this.accepted = true;
    } else {
      for (const [kind, payload] of this.pipeline.open(data)) {
        if (kind === KIND_OOB) {
          if (this.st !== "open") continue;
          if (this.dgramHandler !== null) this.callSafely(this.dgramHandler, payload);
          else if (this.dgrams.length < this.dgramLimit) this.dgrams.push(payload);
          else c.oobDropped++;
        } else {
          if (eng.input(payload, now, kind === KIND_KCP) === 0) this.accepted = true;
        }
      }
    }
    this.inputDirty = true;
    this.schedule(false);
  }

  /** PathOwner: true once the engine accepted a packet from the peer. */
  get answered(): boolean {
    return this.accepted;
  }

  /** PathOwner: end the session at once with `error`. */
  fail(now: number, error: Error, reason: string): void {
    this.finish(now, error, reason);
  }

  /** PathOwner: authenticated traffic without payload arrived (the peer is alive). */
  touch(now: number): void {
    this.lastRecv = now;
  }

  /** PathOwner: flush the engine at the end of this turn of the event loop. */
  requestFlush(): void {
    this.schedule(true);
  }

  /** PathOwner: the peer closed the connection (secure mode): end at once. */
  peerClosed(now: number, code: number, reason: string): void {
    this.closeCode = code;
    if (this.st === "open") this.deliver();
    this.finish(now, null, reason);
  }

  private callSafely(handler: (d: Uint8Array) => void, d: Uint8Array): void {
    try {
      handler(d);
    } catch (err) {
      // a throwing handler is the application's bug; it must not break the receive path
      queueMicrotask(() => {
        throw err;
      });
    }
  }

  private deliver(): void {
    const eng = this.engine;
    if (this.st !== "open") {
      while (eng.recv() !== null); // nobody reads any more: keep the window open
      return;
    }
    const h = this.dataHandler;
    if (h === null || this.paused) return; // held in the engine: its window closes, the peer waits (bounded)
    for (let m = eng.recv(); m !== null; m = eng.recv()) {
      if (m.length) this.callSafely(h, m);
      if (this.dataHandler !== h || this.st !== "open" || this.paused) break;
    }
    if (eng.probe & IKCP_ASK_TELL) this.flushWanted = true;
  }

  // -------------------------------------------------------------- sending

  private output(packet: Uint8Array): void {
    const now = this.clock();
    const c = this.counters;
    const datagrams = this.plain ? [packet] : this.pipeline.seal(packet, now);
    for (const d of datagrams) {
      c.outPkts++;
      c.bytesSent += d.length;
      this.path.send(d, now);
    }
  }

  private checkWritable(): void {
    if (this.st !== "open") {
      if (this.error !== null) throw this.error;
      throw new ConnectionClosedError(`KCP session ${this.conv} is closed (${this.closeReason || "closed"})`);
    }
  }

  /**
   * Queue `data` for reliable, ordered delivery; never blocks. Returns false when the send queue
   * is at or above its high-water mark (then wait for {@link drained}). Throws
   * {@link ConnectionClosedError} (or the session's error) after the end.
   */
  write(data: Uint8Array): boolean {
    this.checkWritable();
    const eng = this.engine;
    const chunk = eng.mss * 120;
    for (let off = 0; off < data.length; off += chunk) eng.send(data.subarray(off, off + chunk));
    if (data.length) this.schedule(true);
    return eng.waitsnd() < this.highWater;
  }

  /** Resolves when the send queue is below the high-water mark (at once if it is); rejects if the session ends first. */
  drained(): Promise<void> {
    this.checkWritable();
    if (this.engine.waitsnd() < this.highWater) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.drainWaiters.push(() => {
        if (this.st === "open") resolve();
        else reject(this.error ?? new ConnectionClosedError(`KCP session ${this.conv} is closed (${this.closeReason})`));
      });
    });
  }

  /** Segments queued or in flight and not yet acknowledged. */
  get pendingSegments(): number {
    return this.engine.waitsnd();
  }

  /** Largest payload {@link sendDatagram} accepts. */
  maxDatagramSize(): number {
    return this.pipeline.oobMaxSize(this.engine.mtu);
  }

  /** Send one unreliable out-of-band datagram (kcp-go's OOB packet, flag 0xf3) at once. */
  sendDatagram(data: Uint8Array): void {
    this.checkWritable();
    const limit = this.maxDatagramSize();
    if (data.length > limit) throw new KcpUsageError(`datagram of ${data.length} bytes exceeds the limit of ${limit}`);
    const now = this.clock();
    if (this.flushWanted) this.flushNow(now); // keep the order of write() and sendDatagram()
    const d = this.pipeline.sealOob(data, this.conv);
    this.counters.outPkts++;
    this.counters.bytesSent += d.length;
    this.path.send(d, now);
  }

  /** Ask the peer for its window now (a WASK). */
  probePeer(): void {
    if (this.st === "closed") return;
    this.engine.probe |= IKCP_ASK_SEND;
    this.schedule(true);
  }

  // -------------------------------------------------------------- timing

  private schedule(flush: boolean): void {
    if (flush) this.flushWanted = true;
    if (this.tickPending || this.st === "closed") return;
    this.tickPending = true;
    setImmediate(() => this.tick());
  }

  /** The end of a turn of the event loop: deliver, flush what is due, re-arm the timer. */
  private tick(): void {
    this.tickPending = false;
    if (this.st === "closed") return;
    const now = this.clock();
    const eng = this.engine;
    if (this.inputDirty || eng.nrcvQue) {
      this.inputDirty = false;
      if (eng.nrcvQue) this.deliver();
      const cc = this.cc;
      if (cc !== null) {
        cc.afterInput(eng, now);
        if (cc.measuring && !this.ownWriteBuffer) this.setWaterMarks(cc.cc.cwnd); // a bulk flow's window
      }
      let lost = false;
      if (this.hold && eng.disorder !== this.disorderSeen) {
        // a segment out of order or again: a loss; acks go at once until the session is quiet again
        this.disorderSeen = eng.disorder;
        lost = this.loneAcks >= LONE_ACKS;
        if (lost) this.stopHold(now);
      }
      if (eng.waitsnd() || (this.ackNodelay && eng.probe)) this.flushWanted = true; // acks may have opened the window
      else if (this.ackNodelay && !this.flushWanted) {
        // one lone ack may wait for data to ride with (until ackDue); two or more go at once, as
        // TCP acks every second segment, so bulk flows keep their ack clock
        const acks = eng.acksPending();
        if (!acks) {
          // nothing to ack
        } else if (lost) this.flushWanted = true;
        else if (this.ackDelay > 0 && acks === 1 && this.loneAcks < LONE_ACKS) {
          if (this.ackDue < 0) this.ackDue = now + this.ackDelay;
        } else if (acks === 1 && this.hold && eng.ackFrg) {
          // receive-only, and the peer was told: the ack waits for a second segment
          if (this.heldAt < 0) {
            this.heldAt = now;
            this.ackDue = now + this.hold;
            this.counters.acksHeld++;
          }
        } else {
          if (this.heldAt >= 0) {
            // a second segment came: both acks go now
            eng.holdFirstAck(now - this.heldAt);
            this.heldAt = -1;
            this.ackDue = -1;
          } else if (acks === 1 && this.ackDelay > 0) {
            // its lone acks found no ride lately; every LONE_ACK_PROBE-th waits again
            const n = this.loneAcks + 1;
            this.loneAcks = n >= LONE_ACKS + LONE_ACK_PROBE ? LONE_ACKS - 1 : n;
          }
          this.flushWanted = true;
        }
      }
    }
    if (this.flushWanted) this.flushNow(now);
    else this.post(now);
  }

  private flushNow(now: number): void {
    this.flushWanted = false;
    if (this.st === "closed") return;
    if (this.heldAt >= 0) {
      // the held ack goes with what this flush sends
      this.engine.holdFirstAck(now - this.heldAt);
      this.heldAt = -1;
    }
    this.flushEngine(now);
    if (this.engine.state !== 0) return this.die(now);
    this.post(now);
  }

  /** The engine's flush, under the congestion controller when there is one. */
  private flushEngine(now: number): void {
    if (this.cc !== null) this.cc.flush(this.engine, now);
    else this.engine.flush(now);
  }

  private onTimer(): void {
    this.timer = null;
    this.timerDue = -1;
    if (this.st === "closed") return;
    const now = this.clock();
    const pt = this.path.timer();
    if (pt >= 0 && pt <= now) {
      this.path.onTimer(now);
      if (this.ended) return; // the path may have ended the session
    }
    if (this.idleMs && now - this.lastRecv >= this.idleMs) {
      return this.finish(now, new IdleTimeoutError(`KCP session ${this.conv}: nothing received for ${this.idleMs} ms`), "idle timeout");
    }
    if (this.st === "closing" && now >= this.lingerUntil) return this.finish(now, null, this.closeReason || "closed");
    const eng = this.engine;
    if (this.ackDue >= 0 && this.ackDue <= now) {
      // the delayed ack found nothing to ride with: it goes alone
      this.ackDue = -1;
      if (eng.acksPending()) {
        if (this.heldAt >= 0) {
          // a held ack's time is up
          eng.holdFirstAck(now - this.heldAt);
          this.heldAt = -1;
        } else if (this.loneAcks < LONE_ACKS) {
          this.loneAcks++;
          if (this.loneAcks === LONE_ACKS && this.hold) eng.ackFrg = 1; // this ack tells the peer, before any is held
        }
        this.flushEngine(now);
      }
    } else if (this.heldAt >= 0) eng.holdFirstAck(now - this.heldAt); // the update below may send the held ack
    if (this.cc !== null) this.cc.update(eng, now);
    else eng.update(now);
    if (this.engine.state !== 0) return this.die(now);
    this.post(now);
  }

  /** Wake writers, finish a lingering close, and arm the one timer for the next due time. */
  private post(now: number): void {
    const eng = this.engine;
    const ws = eng.waitsnd();
    if (ws < this.lowWater && this.drainWaiters.length) {
      const waiters = this.drainWaiters;
      this.drainWaiters = [];
      for (const w of waiters) w();
    }
    if (this.st === "closing" && ws === 0) return this.finish(now, null, this.closeReason || "closed");
    let due: number;
    if (ws && eng.ackFrg) {
      // it sends data now: no longer receive-only, its acks go at once
      eng.ackFrg = 0;
      this.loneAcks = 0;
    }
    if (this.ackDue >= 0 && !eng.acksPending()) {
      // a flush took the delayed ack (with data: it rode)
      this.ackDue = -1;
      this.heldAt = -1;
      if (ws) this.loneAcks = 0;
    }
    // a delayed ack has its own due time; other pending acks go at the engine's next flush
    if (ws || eng.probe || (this.ackDue < 0 && eng.acksPending()) || eng.rmtWnd === 0 || eng.winsPending()) {
      due = eng.check(now);
      if (this.cc !== null && eng.nsndQue) {
        // the pacer only waits with data queued
        const t = this.cc.nextSend(eng, now);
        if (t >= 0 && t < due) due = t;
      }
      if (this.idleMs) due = Math.min(due, this.lastRecv + this.idleMs);
    } else {
      due = this.idleMs ? this.lastRecv + this.idleMs : -1;
    }
    if (this.ackDue >= 0 && (due < 0 || this.ackDue < due)) due = this.ackDue;
    if (this.st === "closing" && (due < 0 || this.lingerUntil < due)) due = this.lingerUntil;
    const pt = this.path.timer();
    if (pt >= 0 && (due < 0 || pt < due)) due = pt;
    this.arm(due, now);
  }

  private arm(due: number, now: number): void {
    if (due === this.timerDue && this.timer !== null) return;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.timerDue = due;
    if (due < 0) return;
    this.timer = setTimeout(() => this.onTimer(), Math.max(0, due - now));
  }

  private die(now: number): void {
    this.finish(
      now,
      new DeadLinkError(`KCP session ${this.conv}: dead link (a segment was sent ${this.engine.deadLink} times without an ack)`),
      "dead link",
    );
  }

  // -------------------------------------------------------------- closing

  /**
   * Stop reading and writing; unacknowledged data gets up to `closeLingerMs` to arrive. Compat mode
   * has no close on the wire (the peer notices by its idle timeout); a secure path sends CLOSE with
   * `code` and `reason`.
   */
  close(code = 0, reason = ""): void {
    if (this.st !== "open") return;
    if (!Number.isInteger(code) || code < 0 || code > 0xffff) throw new KcpUsageError("close code must be in 0..65535");
    this.st = "closing";
    this.closeCode = code;
    this.closeReason = reason || "closed";
    this.dgrams.length = 0;
    const now = this.clock();
    if (this.engine.waitsnd() === 0 || this.lingerMs <= 0) {
      this.engine.flush(now);
      return this.finish(now, null, this.closeReason);
    }
    this.lingerUntil = now + this.lingerMs;
    this.schedule(true);
    this.post(now);
  }

  /** End the session at once, dropping unsent data. */
  abort(reason = "aborted", code: number | null = null): void {
    if (code !== null) this.closeCode = code;
    this.finish(this.clock(), null, reason);
  }

  private finish(now: number, err: Error | null, reason: string): void {
    if (this.st === "closed") return;
    this.st = "closed";
    if (err !== null && this.error === null) this.error = err;
    this.closeReason = reason;
    try {
      this.path.finish(now, this.closeCode, reason);
    } catch {
      // the path's own cleanup failing must not keep the session open
    }
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.engine.dropUnsent();
    this.dgrams.length = 0;
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const w of waiters) w();
    const handlers = this.closeHandlers;
    this.closeHandlers = [];
    for (const h of handlers) {
      try {
        h(this.error ?? undefined);
      } catch (e) {
        queueMicrotask(() => {
          throw e;
        });
      }
    }
    this.resolveClosed();
  }
}

/** Turn compat wire options into the packet cipher and FEC (derives the key: ~10 ms, done once). */
export function compatWire(wire: CompatWireOptions = {}): { crypt: PacketCrypt | null; fec: [number, number] } {
  if (wire.mode !== undefined && wire.mode !== "compat") throw new KcpUsageError(`dial: wire mode ${String(wire.mode)} is not compat`);
  const fec = wire.fec ?? [0, 0];
  const name = wire.crypt ?? "null";
  if (name === "null") return { crypt: null, fec };
  if (wire.key === undefined) throw new KcpUsageError(`cipher ${name} needs a key (a passphrase string or the derived key bytes)`);
  const key = typeof wire.key === "string" ? deriveKey(wire.key) : wire.key;
  return { crypt: newCrypt(name, key), fec };
}

/**
 * Open a compat-mode KCP session to `host:port` on its own UDP socket (kcp-go's DialWithOptions:
 * no handshake, so it resolves as soon as the socket is connected). Throws {@link KcpUsageError}
 * for bad options; a DNS failure rejects with its own error.
 */
export async function dial(host: string, port: number, options: DialOptions = {}): Promise<KcpSession> {
  const { crypt, fec } = compatWire(options.wire);
  const session = options.session ?? {};
  const random = session.random ?? defaultRandom;
  let conv = options.conv;
  if (conv === undefined) conv = compatConv(random(4));
  if (!Number.isInteger(port) || port <= 0 || port > 65535) throw new KcpUsageError(`bad port ${port}`);
  const link = await UdpLink.open(host, port);
  try {
    return new KcpSession(new CompatPath(link), conv, { ...session, crypt, fec });
  } catch (err) {
    link.close();
    throw err;
  }
}


