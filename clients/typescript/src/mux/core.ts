/**
 * Sans-I/O smux session (docs/wire-format/smux.md), a port of kcprpc/mux/core.py: takes received
 * bytes and `now` (ms), hands back outgoing bytes and events. It owns every per-stream buffer,
 * the session-wide receive token bucket, the version 2 per-stream windows, keepalive and counters.
 * Hostile frames (wrong version, unknown command, lying length, UPD acknowledging unsent bytes)
 * end the session with a counted protocol error; data for unknown or finished streams is dropped
 * and counted; nothing is thrown out of {@link MuxCore.receiveData}.
 */
import {
  CMD_FIN, CMD_NOP, CMD_PSH, CMD_SYN, CMD_UPD, HEADER_SIZE, INITIAL_PEER_WINDOW, MAX_PAYLOAD,
  MuxProtocolError, MuxUsageError, SmuxFrameDecoder, packHeader, packUpd, unpackUpd,
} from "./frame.js";
import { concat } from "../bytes.js";

/** The session died (transport EOF/failure, keepalive timeout, protocol error, local close). */
export class MuxClosedError extends Error {
  /** @param message why */
  constructor(message: string) {
    super(message);
    this.name = "MuxClosedError";
  }
}

/** A write after our own close, or a read of an aborted stream. */
export class MuxStreamClosedError extends MuxClosedError {
  /** @param message why */
  constructor(message: string) {
    super(message);
    this.name = "MuxStreamClosedError";
  }
}

/** Nothing arrived from the peer during a whole keepalive timeout: the session was closed. */
export class MuxKeepaliveTimeoutError extends MuxClosedError {
  /** @param message why */
  constructor(message: string) {
    super(message);
    this.name = "MuxKeepaliveTimeoutError";
  }
}

/** A new error like the session's stored one (same class and message), to throw in its place. */
function fresh(err: MuxClosedError): MuxClosedError {
  const Ctor = err.constructor as new (message: string) => MuxClosedError;
  return new Ctor(err.message);
}

/** Multiplexer settings (durations in seconds), defaults equal to smux's where peers must agree. */
export interface MuxConfig {
  /** 1 or 2; must match the peer. */
  version: number;
  /** Seconds between NOPs. */
  keepaliveInterval: number;
  /** Seconds of silence after which the session dies. */
  keepaliveTimeout: number;
  /** No NOPs, no timeout check. */
  keepaliveDisabled: boolean;
  /** Largest PSH we send. */
  maxFrameSize: number;
  /** Session-wide receive token bucket. */
  maxReceiveBuffer: number;
  /** The version 2 window we announce per stream. */
  maxStreamBuffer: number;
  /** Streams in the table at most (a SYN beyond is answered with FIN). */
  maxStreams: number;
  /** Queued bytes per stream above which `drain()` waits. */
  streamSendBuffer: number;
}

/** smux's defaults (version 1). */
export const DEFAULT_MUX_CONFIG: Readonly<MuxConfig> = Object.freeze({
  version: 1,
  keepaliveInterval: 10,
  keepaliveTimeout: 30,
  keepaliveDisabled: false,
  maxFrameSize: 32768,
  maxReceiveBuffer: 4 * 1024 * 1024,
  maxStreamBuffer: 65536,
  maxStreams: 4096,
  streamSendBuffer: 65536,
});

/** What kcprpc peers speak: version 2 with a 512 KiB per-stream window (kcprpc.config.RPC_MUX_CONFIG). */
export const RPC_MUX_CONFIG: Readonly<MuxConfig> = Object.freeze({ ...DEFAULT_MUX_CONFIG, version: 2, maxStreamBuffer: 512 * 1024 });

/** Fill in defaults and validate as smux's VerifyConfig does; throws {@link MuxUsageError}. */
export function muxConfig(partial: Partial<MuxConfig> = {}, base: Readonly<MuxConfig> = DEFAULT_MUX_CONFIG): MuxConfig {
  const c: MuxConfig = { ...base, ...partial };
  if (c.version !== 1 && c.version !== 2) throw new MuxUsageError(`unsupported smux protocol version ${c.version}: use 1 or 2`);
  for (const k of ["keepaliveInterval", "keepaliveTimeout"] as const) {
    if (typeof c[k] !== "number" || !Number.isFinite(c[k])) throw new MuxUsageError(`${k} must be a finite number of seconds`);
  }
  if (!c.keepaliveDisabled) {
    if (c.keepaliveInterval <= 0) throw new MuxUsageError("keepaliveInterval must be positive");
    if (c.keepaliveTimeout < c.keepaliveInterval) throw new MuxUsageError("keepaliveTimeout must not be smaller than keepaliveInterval");
  }
  for (const k of ["maxFrameSize", "maxReceiveBuffer", "maxStreamBuffer", "maxStreams", "streamSendBuffer"] as const) {
    if (!Number.isInteger(c[k]) || c[k] <= 0) throw new MuxUsageError(`${k} must be a positive integer, got ${String(c[k])}`);
  }
  if (c.maxFrameSize > MAX_PAYLOAD) throw new MuxUsageError(`maxFrameSize must not be larger than ${MAX_PAYLOAD}`);
  if (c.maxReceiveBuffer > 0x7fffffff) throw new MuxUsageError("maxReceiveBuffer must fit in int32");
  if (c.maxStreamBuffer > c.maxReceiveBuffer) throw new MuxUsageError("maxStreamBuffer must not be larger than maxReceiveBuffer");
  return c;
}

/** A stream's state (docs/wire-format/smux.md, "Closing"). */
export enum StreamState {
  OPEN = 1,
  CLOSING_LOCAL = 2,
  HALF_CLOSED_LOCAL = 3,
  HALF_CLOSED_REMOTE = 4,
  CLOSING = 5,
  CLOSED = 6,
  RESET = 7,
  DEAD = 8,
}
const S = StreamState;
const WRITABLE = new Set([S.OPEN, S.HALF_CLOSED_REMOTE]);
const PEER_SENDING = new Set([S.OPEN, S.CLOSING_LOCAL, S.HALF_CLOSED_LOCAL]);
const FIN_PENDING = new Set([S.CLOSING_LOCAL, S.CLOSING]);
const FIN_UNSENT = new Set([...WRITABLE, ...FIN_PENDING]);
const LIVE = new Set([S.OPEN, S.CLOSING_LOCAL, S.HALF_CLOSED_LOCAL, S.HALF_CLOSED_REMOTE, S.CLOSING]);
const READ_EOF = new Set([S.HALF_CLOSED_REMOTE, S.CLOSING, S.CLOSED]);
const ON_CLOSE: Record<StreamState, StreamState> = {
  [S.OPEN]: S.CLOSING_LOCAL, [S.HALF_CLOSED_REMOTE]: S.CLOSING, [S.CLOSING_LOCAL]: S.CLOSING_LOCAL,
  [S.HALF_CLOSED_LOCAL]: S.HALF_CLOSED_LOCAL, [S.CLOSING]: S.CLOSING, [S.CLOSED]: S.CLOSED, [S.RESET]: S.RESET, [S.DEAD]: S.DEAD,
};
const ON_FIN_SENT = new Map([[S.CLOSING_LOCAL, S.HALF_CLOSED_LOCAL], [S.CLOSING, S.CLOSED]]);
const ON_RECV_FIN = new Map([[S.OPEN, S.HALF_CLOSED_REMOTE], [S.CLOSING_LOCAL, S.CLOSING], [S.HALF_CLOSED_LOCAL, S.CLOSED]]);
const ON_SESSION_END = new Map([
  [S.OPEN, S.DEAD], [S.CLOSING_LOCAL, S.DEAD], [S.HALF_CLOSED_LOCAL, S.DEAD], [S.HALF_CLOSED_REMOTE, S.CLOSED], [S.CLOSING, S.CLOSED],
]);

/** Session state: OPEN, CLOSING (local close began) or CLOSED (dead). */
export type SessionState = "open" | "closing" | "closed";

/** Counter names of {@link MuxCore.counters}, as kcprpc.mux.core.COUNTER_NAMES. */
export const MUX_COUNTER_NAMES = [
  "frames_in", "frames_out", "bytes_in", "bytes_out", "syn_in", "syn_out", "fin_in", "fin_out", "nop_in", "nop_out",
  "upd_in", "upd_out", "streams_opened", "streams_accepted", "streams_refused", "streams_released", "duplicate_syn",
  "duplicate_fin", "dropped_unknown_stream", "dropped_after_fin", "bad_version", "bad_cmd", "bad_length", "bad_upd",
  "protocol_errors", "keepalive_timeouts", "recv_paused",
] as const;
/** One mux counter's name. */
export type MuxCounter = (typeof MUX_COUNTER_NAMES)[number];

/** Events the core produces. */
export type MuxEvent =
  | { type: "opened"; streamId: number }
  | { type: "data"; streamId: number }
  | { type: "ended"; streamId: number }
  | { type: "window"; streamId: number }
  | { type: "released"; streamId: number }
  | { type: "terminated"; error: MuxClosedError };

const SMALL = 4096;
const MAX_CTRL_BACKLOG = 4096;
const U32 = 0x100000000;

/** One stream inside {@link MuxCore} (read its fields, change nothing). */
export class StreamRecord {
  /** Current state. */
  state: StreamState = S.OPEN;
  /** Received, unread pieces. */
  recv: Uint8Array[] = [];
  /** Unread bytes. */
  recvBytes = 0;
  /** Queued, unframed pieces. */
  send: Uint8Array[] = [];
  /** Queued bytes. */
  sendBytes = 0;
  /** In the round-robin queue. */
  scheduled = false;
  /** v2: bytes read (u32). */
  numRead = 0;
  /** v2: bytes read since the last UPD. */
  incr = 0;
  /** v2: bytes written (u32). */
  numWritten = 0;
  /** v2: the peer's last consumed. */
  peerConsumed = 0;
  /** v2: the peer's last window. */
  peerWindow = INITIAL_PEER_WINDOW;
  /** v2: a UPD is owed. */
  updDue = false;
  /** @param streamId id @param local opened by us */
  constructor(readonly streamId: number, readonly local: boolean) {}
  /** FIN received and everything before it read. */
  get atEof(): boolean {
    return this.recvBytes === 0 && READ_EOF.has(this.state);
  }
  /** Our direction is open. */
  get writable(): boolean {
    return WRITABLE.has(this.state);
  }
  /** v2: bytes the peer still allows in flight (may be <= 0). */
  sendWindow(): number {
    const inflight = (this.numWritten - this.peerConsumed + U32) % U32;
    if (inflight > 0x7fffffff) return 0;
    const window = this.peerWindow <= 0x7fffffff ? this.peerWindow : this.peerWindow - U32;
    return window - inflight;
  }
}

/** One smux endpoint as a pure state machine. */
export class MuxCore {
  /** The validated config. */
  readonly config: MuxConfig;
  /** Counters (see {@link MUX_COUNTER_NAMES}). */
  readonly counters: Record<MuxCounter, number>;
  private readonly v2: boolean;
  private readonly half: number;
  private readonly decoder: SmuxFrameDecoder;
  private readonly streams = new Map<number, StreamRecord>();
  private nextId: number;
  private bucket: number;
  private evs: MuxEvent[] = [];
  private ctrl: Uint8Array[] = [];
  private upd: StreamRecord[] = [];
  private rr: StreamRecord[] = [];
  private sendBuffered = 0;
  private st: SessionState = "open";
  private err: MuxClosedError | null = null;
  private ka: boolean;
  private readonly kaInterval: number;
  private readonly kaTimeout: number;
  private nextPing: number;
  private nextCheck: number;
  private dataReady = false;
  private framesAtPing = 0;

  /** @param config settings @param client true on the dialling side (odd ids) @param now ms */
  constructor(config: Partial<MuxConfig> | undefined, readonly client: boolean, now = 0) {
    this.config = muxConfig(config);
    this.v2 = this.config.version === 2;
    this.half = Math.floor(this.config.maxStreamBuffer / 2);
    this.decoder = new SmuxFrameDecoder(this.config.version);
    this.nextId = client ? 1 : 0;
    this.bucket = this.config.maxReceiveBuffer;
    this.counters = Object.fromEntries(MUX_COUNTER_NAMES.map((n) => [n, 0])) as Record<MuxCounter, number>;
    this.ka = !this.config.keepaliveDisabled;
    this.kaInterval = Math.max(1, Math.round(this.config.keepaliveInterval * 1000));
    this.kaTimeout = Math.max(1, Math.round(this.config.keepaliveTimeout * 1000));
    this.nextPing = now + this.kaInterval;
    this.nextCheck = now + this.kaTimeout;
  }

  /** Session state. */
  get state(): SessionState {
    return this.st;
  }
  /** True once dead. */
  get closed(): boolean {
    return this.st === "closed";
  }
  /** Why the session died, or null. */
  get error(): MuxClosedError | null {
    return this.err;
  }
  /** False while the bucket is empty (stop reading the transport) or dead. */
  get wantsRead(): boolean {
    return this.bucket > 0 && this.st !== "closed";
  }
  /** Receive tokens left. */
  get tokens(): number {
    return this.bucket;
  }
  /** Received bytes not parsed yet. */
  get bufferedInput(): number {
    return this.decoder.buffered;
  }
  /** Streams in the table. */
  get numStreams(): number {
    return this.streams.size;
  }
  /** Bytes written to any stream and not framed yet. */
  get pendingSend(): number {
    return this.sendBuffered;
  }
  /** The live stream with this id. */
  getStream(id: number): StreamRecord | undefined {
    return this.streams.get(id);
  }
  /** Return and clear the events so far. */
  events(): MuxEvent[] {
    const e = this.evs;
    this.evs = [];
    return e;
  }
  /** True if {@link dataToSend} may return bytes now. */
  hasDataToSend(): boolean {
    return this.st !== "closed" && (this.ctrl.length > 0 || this.rr.length > 0 || this.upd.length > 0);
  }

  private refuse(): never {
    if (this.err) throw fresh(this.err);
    throw new MuxClosedError(`session is ${this.st}`);
  }

  /** Open a stream: next id of our parity, SYN queued. */
  openStream(): StreamRecord {
    if (this.st !== "open") this.refuse();
    if (this.streams.size >= this.config.maxStreams) throw new MuxUsageError(`too many open streams (maxStreams=${this.config.maxStreams})`);
    let sid = this.nextId;
    for (;;) {
      sid += 2;
      if (sid > 0xffffffff) throw new MuxClosedError("stream ids exhausted: start a new session (smux ErrGoAway)");
      if (!this.streams.has(sid)) break;
    }
    this.nextId = sid;
    const st = new StreamRecord(sid, true);
    this.streams.set(sid, st);
    this.ctrl.push(packHeader(this.config.version, CMD_SYN, sid, 0));
    this.counters.syn_out++;
    this.counters.frames_out++;
    this.counters.streams_opened++;
    return st;
  }

  /** Half-close: FIN after every byte already written. Idempotent. */
  closeStream(st: StreamRecord): void {
    const old = st.state;
    const nw = ON_CLOSE[old];
    st.state = nw;
    if (nw !== old && !st.sendBytes && !st.scheduled) this.sendFin(st, this.ctrl);
  }

  /** Full close (smux Stream.Close()): drop queued and unread data, FIN, leave the table. */
  abortStream(st: StreamRecord): void {
    const old = st.state;
    if (old === S.RESET) return;
    st.state = S.RESET;
    this.sendBuffered -= st.sendBytes;
    st.send = [];
    st.sendBytes = 0;
    if (FIN_UNSENT.has(old)) this.emitFin(st.streamId, this.ctrl);
    const unread = st.recvBytes;
    st.recv = [];
    st.recvBytes = 0;
    if (LIVE.has(old)) this.release(st, unread);
  }

  private emitFin(id: number, out: Uint8Array[]): void {
    out.push(packHeader(this.config.version, CMD_FIN, id, 0));
    this.counters.fin_out++;
    this.counters.frames_out++;
  }

  private sendFin(st: StreamRecord, out: Uint8Array[]): void {
    this.emitFin(st.streamId, out);
    const nw = ON_FIN_SENT.get(st.state);
    if (nw === undefined) throw new MuxUsageError(`stream ${st.streamId}: FIN sent in state ${S[st.state]}`);
    st.state = nw;
    if (nw === S.CLOSED) this.release(st, st.recvBytes);
  }

  private release(st: StreamRecord, tokens: number): void {
    this.streams.delete(st.streamId);
    this.counters.streams_released++;
    this.evs.push({ type: "released", streamId: st.streamId });
    this.returnTokens(tokens);
  }

  /** Queue stream data (framed later by {@link dataToSend}); throws if not writable. */
  send(st: StreamRecord, data: Uint8Array): void {
    if (this.st !== "open" || !WRITABLE.has(st.state)) {
      if (this.err) throw fresh(this.err);
      if (!WRITABLE.has(st.state)) throw new MuxStreamClosedError(`stream ${st.streamId} was closed for writing (it is ${S[st.state]})`);
      this.refuse();
    }
    if (!data.length) return;
    st.send.push(data.slice());
    st.sendBytes += data.length;
    this.sendBuffered += data.length;
    if (!st.scheduled) {
      st.scheduled = true;
      this.rr.push(st);
    }
  }

  private take(st: StreamRecord, limit: number, out: Uint8Array[]): number {
    let n = 0;
    while (st.send.length && n < limit) {
      const first = st.send[0] as Uint8Array;
      const room = limit - n;
      if (first.length > room) {
        out.push(first.subarray(0, room));
        st.send[0] = first.subarray(room);
        n = limit;
        break;
      }
      out.push(first);
      st.send.shift();
      n += first.length;
    }
    st.sendBytes -= n;
    this.sendBuffered -= n;
    return n;
  }

  /** The next outgoing bytes: control frames first, then round-robin stream data. */
  dataToSend(maxBytes = 1 << 20): Uint8Array {
    if (this.st === "closed") return new Uint8Array(0);
    const out: Uint8Array[] = [];
    let size = 0;
    const c = this.counters;
    const version = this.config.version;
    if (this.ctrl.length) {
      out.push(...this.ctrl);
      size = this.ctrl.length * HEADER_SIZE;
      this.ctrl = [];
    }
    if (this.upd.length) {
      for (const st of this.upd) {
        if (st.updDue) {
          st.updDue = false;
          if (PEER_SENDING.has(st.state)) {
            out.push(packUpd(version, st.streamId, st.numRead, this.config.maxStreamBuffer));
            size += 16;
            c.upd_out++;
            c.frames_out++;
          }
        }
      }
      this.upd = [];
    }
    let frames = 0;
    let payload = 0;
    while (this.rr.length && size < maxBytes) {
      const st = this.rr.shift() as StreamRecord;
      st.scheduled = false;
      if (st.state !== S.OPEN && !FIN_UNSENT.has(st.state)) continue;
      if (st.sendBytes) {
        let limit = this.config.maxFrameSize;
        if (this.v2) {
          const win = st.sendWindow();
          if (win <= 0) continue;
          if (win < limit) limit = win;
        }
        const hdr = out.length;
        out.push(new Uint8Array(0));
        const n = this.take(st, limit, out);
        out[hdr] = packHeader(version, CMD_PSH, st.streamId, n);
        size += HEADER_SIZE + n;
        frames++;
        payload += n;
        if (this.v2) st.numWritten = (st.numWritten + n) % U32;
        if (st.sendBytes) {
          st.scheduled = true;
          this.rr.push(st);
          continue;
        }
      }
      if (!st.sendBytes && FIN_PENDING.has(st.state)) this.sendFin(st, out);
    }
    c.frames_out += frames;
    c.bytes_out += payload;
    return concat(out);
  }

  /** Take bytes from the transport. Never throws: a bad frame kills the session. */
  receiveData(data: Uint8Array, _now?: number): void {
    if (this.st === "closed" || !data.length) return;
    this.dataReady = true;
    this.decoder.feed(data);
    this.parse();
  }

  private parse(): void {
    const c = this.counters;
    while (this.bucket > 0 && this.st !== "closed") {
      let frame;
      try {
        frame = this.decoder.nextFrame();
      } catch (e) {
        this.protocolError(e as MuxProtocolError);
        return;
      }
      if (frame === null) return;
      c.frames_in++;
      const sid = frame.streamId;
      if (frame.cmd === CMD_PSH) {
        const n = frame.data.length;
        if (!n) continue;
        const st = this.streams.get(sid);
        if (!st) {
          c.dropped_unknown_stream++;
          continue;
        }
        if (!PEER_SENDING.has(st.state)) {
          c.dropped_after_fin++;
          continue;
        }
        const last = st.recv[st.recv.length - 1];
        if (last && n < SMALL && last.length < SMALL) st.recv[st.recv.length - 1] = concat([last, frame.data]);
        else st.recv.push(frame.data);
        const wasEmpty = !st.recvBytes;
        st.recvBytes += n;
        this.bucket -= n;
        c.bytes_in += n;
        if (wasEmpty) this.evs.push({ type: "data", streamId: sid });
        if (this.bucket <= 0) c.recv_paused++;
      } else if (frame.cmd === CMD_UPD) {
        c.upd_in++;
        const st = this.streams.get(sid);
        if (!st) continue;
        const [consumed, window] = unpackUpd(frame.data);
        const inflight = (st.numWritten - consumed + U32) % U32;
        if (inflight > 0x7fffffff) {
          c.bad_upd++;
          this.protocolError(new MuxProtocolError(`stream ${sid}: peer consumed more than was sent`, "bad_upd"), true);
          return;
        }
        st.peerConsumed = consumed;
        st.peerWindow = window;
        if (st.sendBytes && !st.scheduled && st.sendWindow() > 0) {
          st.scheduled = true;
          this.rr.push(st);
        }
        this.evs.push({ type: "window", streamId: sid });
      } else if (frame.cmd === CMD_NOP) {
        c.nop_in++;
      } else if (frame.cmd === CMD_SYN) {
        c.syn_in++;
        if (this.streams.has(sid)) {
          c.duplicate_syn++;
          continue;
        }
        if (this.streams.size >= this.config.maxStreams) {
          c.streams_refused++;
          if (this.ctrl.length < MAX_CTRL_BACKLOG) {
            this.ctrl.push(packHeader(this.config.version, CMD_FIN, sid, 0));
            c.fin_out++;
            c.frames_out++;
          }
          continue;
        }
        this.streams.set(sid, new StreamRecord(sid, false));
        c.streams_accepted++;
        this.evs.push({ type: "opened", streamId: sid });
      } else {
        c.fin_in++;
        const st = this.streams.get(sid);
        if (!st) continue;
        const nw = ON_RECV_FIN.get(st.state);
        if (nw === undefined) {
          c.duplicate_fin++;
          continue;
        }
        st.state = nw;
        this.evs.push({ type: "ended", streamId: sid });
        if (nw === S.CLOSED) this.release(st, st.recvBytes);
      }
    }
  }

  private protocolError(exc: MuxProtocolError, counted = false): void {
    const c = this.counters;
    if (!counted && exc.kind in c) c[exc.kind as MuxCounter]++;
    c.protocol_errors++;
    this.terminateWith(new MuxClosedError(`session closed: protocol error from peer: ${exc.message}`));
  }

  private returnTokens(n: number): void {
    if (n <= 0) return;
    const wasEmpty = this.bucket <= 0;
    this.bucket += n;
    if (wasEmpty && this.bucket > 0 && this.st !== "closed") this.parse();
  }

  /**
   * Take up to `n` buffered bytes (all when n < 0). Returns an empty array when nothing is
   * buffered (check {@link StreamRecord.atEof}); throws the session's error on a DEAD stream.
   */
  read(st: StreamRecord, n = -1): Uint8Array {
    const state = st.state;
    if (state === S.RESET) throw new MuxStreamClosedError(`stream ${st.streamId} was aborted`);
    if (n === 0) return new Uint8Array(0);
    if (!st.recvBytes) {
      if (state === S.DEAD && this.err) throw fresh(this.err);
      return new Uint8Array(0);
    }
    if (n < 0 || n >= st.recvBytes) n = st.recvBytes;
    const parts: Uint8Array[] = [];
    let got = 0;
    while (got < n) {
      const first = st.recv[0] as Uint8Array;
      const k = Math.min(first.length, n - got);
      if (k === first.length) {
        parts.push(first);
        st.recv.shift();
      } else {
        parts.push(first.subarray(0, k));
        st.recv[0] = first.subarray(k);
      }
      got += k;
    }
    st.recvBytes -= got;
    if (this.v2 && PEER_SENDING.has(state)) {
      st.numRead = (st.numRead + got) % U32;
      st.incr += got;
      if (st.incr >= this.half || st.numRead === got) {
        st.incr = 0;
        if (!st.updDue) {
          st.updDue = true;
          this.upd.push(st);
        }
      }
    }
    if (LIVE.has(state)) this.returnTokens(got);
    return concat(parts);
  }

  /**
   * No more NOPs, and no more closing on silence: the layer above keeps the connection alive (an
   * RPC connection whose heartbeats ride on the transport's keepalives). Only for a peer that agreed.
   */
  stopKeepalive(): void {
    this.ka = false;
  }

  /** When {@link handleTimer} wants to run next (ms), or null. */
  nextTimer(): number | null {
    if (!this.ka || this.st === "closed") return null;
    return Math.min(this.nextPing, this.nextCheck);
  }

  /** Send a NOP if the interval passed; die if the timeout passed in silence. */
  handleTimer(now: number): void {
    if (!this.ka || this.st === "closed") return;
    const c = this.counters;
    if (now >= this.nextPing) {
      if (c.frames_out === this.framesAtPing) {
        this.ctrl.push(packHeader(this.config.version, CMD_NOP, 0, 0));
        c.nop_out++;
        c.frames_out++;
      }
      this.framesAtPing = c.frames_out;
      this.nextPing += this.kaInterval;
      if (this.nextPing <= now) this.nextPing = now + this.kaInterval;
    }
    if (now >= this.nextCheck) {
      this.nextCheck += this.kaTimeout;
      if (this.nextCheck <= now) this.nextCheck = now + this.kaTimeout;
      if (this.dataReady) this.dataReady = false;
      else if (this.bucket > 0) {
        c.keepalive_timeouts++;
        this.terminateWith(new MuxKeepaliveTimeoutError(`session closed: nothing received for ${this.config.keepaliveTimeout} s (keepalive timeout)`));
      }
    }
  }

  /** Begin a local close: FIN (after pending data) on every stream. Flush, then {@link terminate}. */
  close(): void {
    if (this.st !== "open") return;
    for (const st of [...this.streams.values()]) this.closeStream(st);
    this.st = "closing";
  }

  /** The transport ended (EOF when `err` is undefined; `reason`: why, when the transport says) or failed. */
  connectionLost(err?: Error, reason = ""): void {
    if (this.st === "closed") return;
    this.terminateWith(
      new MuxClosedError(err ? `session closed: transport failed: ${err.message}` : `session closed: ${reason || "the transport reached EOF"}`),
    );
  }

  /** Kill the session now. */
  terminate(error: MuxClosedError | string = "session closed locally"): void {
    if (this.st === "closed") return;
    this.terminateWith(typeof error === "string" ? new MuxClosedError(error) : error);
  }

  private terminateWith(err: MuxClosedError): void {
    this.st = "closed";
    this.err = err;
    this.ctrl = [];
    this.upd = [];
    for (const st of this.rr) st.scheduled = false;
    this.rr = [];
    for (const st of this.streams.values()) {
      st.state = ON_SESSION_END.get(st.state) ?? S.DEAD;
      st.send = [];
      st.sendBytes = 0;
    }
    this.sendBuffered = 0;
    this.streams.clear();
    this.evs.push({ type: "terminated", error: err });
  }
}
