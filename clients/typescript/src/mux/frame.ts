/**
 * smux frame codec (versions 1 and 2), sans-I/O: docs/wire-format/smux.md.
 *
 * Every frame is an 8-byte little-endian header (version u8, cmd u8, length u16, stream id u32)
 * followed by `length` payload bytes.
 */
import { concat } from "../bytes.js";

/** Open a stream. */
export const CMD_SYN = 0;
/** The sender writes no more on this stream. */
export const CMD_FIN = 1;
/** Stream data. */
export const CMD_PSH = 2;
/** Keepalive (stream id 0, no payload). */
export const CMD_NOP = 3;
/** Version 2 window update: consumed u32, window u32. */
export const CMD_UPD = 4;
/** Header size in bytes. */
export const HEADER_SIZE = 8;
/** Largest payload the u16 length field carries. */
export const MAX_PAYLOAD = 0xffff;
/** Version 2: the send window assumed before the peer's first UPD. */
export const INITIAL_PEER_WINDOW = 262144;
const CMD_NAMES: Record<number, string> = { 0: "SYN", 1: "FIN", 2: "PSH", 3: "NOP", 4: "UPD" };

/** The peer sent bytes that are not valid smux; `kind` names the counter. */
export class MuxProtocolError extends Error {
  /** `bad_version`, `bad_cmd`, `bad_length` or `bad_upd`. */
  readonly kind: string;
  /** @param message what was wrong @param kind the counter it counts in */
  constructor(message: string, kind: string) {
    super(message);
    this.name = "MuxProtocolError";
    this.kind = kind;
  }
}

/** A caller passed values smux cannot carry, or a bad config. */
export class MuxUsageError extends Error {
  /** @param message what was wrong */
  constructor(message: string) {
    super(message);
    this.name = "MuxUsageError";
  }
}

/** One decoded frame; `data` is the payload (8 bytes for UPD). */
export interface SmuxFrame {
  /** Protocol version, 1 or 2. */
  readonly version: number;
  /** Command (CMD_*). */
  readonly cmd: number;
  /** Stream id. */
  readonly streamId: number;
  /** Payload. */
  readonly data: Uint8Array;
}

/** The 8-byte header, unchecked (internal hot path). */
export function packHeader(version: number, cmd: number, streamId: number, length: number): Uint8Array {
  const b = new Uint8Array(HEADER_SIZE);
  const v = new DataView(b.buffer);
  b[0] = version;
  b[1] = cmd;
  v.setUint16(2, length, true);
  v.setUint32(4, streamId >>> 0, true);
  return b;
}

/** A version 2 UPD frame, unchecked. */
export function packUpd(version: number, streamId: number, consumed: number, window: number): Uint8Array {
  const b = new Uint8Array(16);
  b.set(packHeader(version, CMD_UPD, streamId, 8));
  const v = new DataView(b.buffer);
  v.setUint32(8, consumed >>> 0, true);
  v.setUint32(12, window >>> 0, true);
  return b;
}

/** Encode one complete frame, checking what smux cannot carry (throws {@link MuxUsageError}). */
export function encodeFrame(version: number, cmd: number, streamId: number, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  if (version !== 1 && version !== 2) throw new MuxUsageError(`unsupported smux version ${version} (1 or 2)`);
  if (!(cmd in CMD_NAMES) || (cmd === CMD_UPD && version < 2)) throw new MuxUsageError(`invalid command ${cmd} for smux version ${version}`);
  if (!Number.isInteger(streamId) || streamId < 0 || streamId > 0xffffffff) throw new MuxUsageError(`stream id ${streamId} does not fit in u32`);
  if (data.length > MAX_PAYLOAD) throw new MuxUsageError(`frame payload of ${data.length} bytes exceeds ${MAX_PAYLOAD}`);
  if ((cmd === CMD_SYN || cmd === CMD_FIN || cmd === CMD_NOP) && data.length) throw new MuxUsageError(`${CMD_NAMES[cmd]} frames carry no payload`);
  if (cmd === CMD_UPD && data.length !== 8) throw new MuxUsageError("UPD frames carry exactly 8 bytes");
  return concat([packHeader(version, cmd, streamId, data.length), data]);
}

/** Decode an UPD payload into `[consumed, window]`. */
export function unpackUpd(payload: Uint8Array): [number, number] {
  if (payload.length !== 8) throw new MuxProtocolError(`UPD payload must be 8 bytes, got ${payload.length}`, "bad_length");
  const v = new DataView(payload.buffer, payload.byteOffset, 8);
  return [v.getUint32(0, true), v.getUint32(4, true)];
}

/**
 * Incremental decoder of one session's byte stream. Anything that is not valid smux throws a
 * {@link MuxProtocolError} and poisons the decoder (a byte stream cannot resynchronise).
 */
export class SmuxFrameDecoder {
  private chunks: Uint8Array[] = [];
  private pos = 0;
  private size = 0;
  private error: MuxProtocolError | null = null;
  /** @param version the session's version; other versions are refused */
  constructor(readonly version: number) {
    if (version !== 1 && version !== 2) throw new MuxUsageError(`unsupported smux version ${version} (1 or 2)`);
  }
  /** Bytes fed and not returned as frames yet. */
  get buffered(): number {
    return this.size;
  }
  /** Append received bytes (copied: the caller may reuse its buffer). */
  feed(data: Uint8Array): void {
    if (data.length) {
      this.chunks.push(data.slice());
      this.size += data.length;
    }
  }
  private take(n: number): Uint8Array {
    const out = new Uint8Array(n);
    let o = 0;
    while (o < n) {
      const first = this.chunks[0] as Uint8Array;
      const avail = first.length - this.pos;
      const k = Math.min(avail, n - o);
      out.set(first.subarray(this.pos, this.pos + k), o);
      o += k;
      this.pos += k;
      if (this.pos === first.length) {
        this.chunks.shift();
        this.pos = 0;
      }
    }
    this.size -= n;
    return out;
  }
  private peekHeader(): Uint8Array {
    const first = this.chunks[0] as Uint8Array;
    if (first.length - this.pos >= HEADER_SIZE) return first.subarray(this.pos, this.pos + HEADER_SIZE);
    const head = new Uint8Array(HEADER_SIZE);
    let o = 0;
    let pos = this.pos;
    for (const c of this.chunks) {
      const k = Math.min(c.length - pos, HEADER_SIZE - o);
      head.set(c.subarray(pos, pos + k), o);
      o += k;
      pos = 0;
      if (o === HEADER_SIZE) break;
    }
    return head;
  }
  private fail(kind: string, message: string): MuxProtocolError {
    this.error = new MuxProtocolError(message, kind);
    return this.error;
  }
  /** The next complete frame, or null when more bytes are needed; throws on garbage. */
  nextFrame(): SmuxFrame | null {
    if (this.error) throw this.error;
    if (this.size < HEADER_SIZE) return null;
    const h = this.peekHeader();
    const dv = new DataView(h.buffer, h.byteOffset, HEADER_SIZE);
    const ver = h[0] as number;
    const cmd = h[1] as number;
    const length = dv.getUint16(2, true);
    const sid = dv.getUint32(4, true);
    if (ver !== this.version) throw this.fail("bad_version", `frame version ${ver}, session speaks version ${this.version}`);
    if (cmd === CMD_PSH) {
      // any length
    } else if (cmd === CMD_UPD) {
      if (this.version < 2) throw this.fail("bad_cmd", "UPD frame in a version 1 session");
      if (length !== 8) throw this.fail("bad_length", `UPD frame with length ${length}, expected 8`);
    } else if (cmd === CMD_SYN || cmd === CMD_FIN || cmd === CMD_NOP) {
      if (length) throw this.fail("bad_length", `${CMD_NAMES[cmd]} frame with payload length ${length}`);
    } else {
      throw this.fail("bad_cmd", `unknown smux command ${cmd}`);
    }
    if (this.size < HEADER_SIZE + length) return null;
    this.take(HEADER_SIZE);
    const data = length ? this.take(length) : new Uint8Array(0);
    return { version: ver, cmd, streamId: sid, data };
  }
}
