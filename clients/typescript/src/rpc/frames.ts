/**
 * RPC frames (docs/wire-format/rpc.md): a 9-byte header (body length u32 BE, type u8, call id
 * u32 BE) and a msgpack body. Ext types are never sent and a body holding one is undecodable.
 */
import { Decoder, Encoder, type ExtensionCodecType } from "@msgpack/msgpack";
import { UsageError } from "./status.js";

/** Frame types. */
export const FrameType = {
  HELLO: 1,
  WELCOME: 2,
  CALL: 3,
  MSG: 4,
  END: 5,
  HEADERS: 6,
  TRAILER: 7,
  REPLY: 8,
  CANCEL: 9,
  EVENT: 10,
  NOTIFY: 11,
  PING: 12,
  PONG: 13,
  GOAWAY: 14,
  ROOMS: 15,
  EVENT_ACK: 16,
} as const;

/** Header size in bytes. */
export const FRAME_HEADER_SIZE = 9;
/** CALL flag bit 0: the payload is the one and only request. */
export const FLAG_END = 1;
/** EVENT flags bit 0: replayed from history. */
export const EVENT_REPLAYED = 1;
/** HELLO/WELCOME protocol version. */
export const PROTOCOL_VERSION = 1;

const noExt: ExtensionCodecType<undefined> = {
  tryToEncode(object: unknown): null {
    if (object instanceof Date) throw new UsageError("Date values are not sent as msgpack: pass an ISO 8601 string (as pydantic's JSON dump)");
    return null;
  },
  decode(): never {
    throw new Error("msgpack ext type in an RPC body");
  },
};
const encoder = new Encoder({ extensionCodec: noExt, ignoreUndefined: true });
const decoder = new Decoder({ extensionCodec: noExt });

/** A body that could not be decoded (invalid msgpack or an ext type). */
export const UNDECODABLE: unique symbol = Symbol("undecodable");
/** A body over the receiver's size limit (skipped unread). */
export const OVERSIZED: unique symbol = Symbol("oversized");
/** A body that would decode into more than the receiver's `maxDecoded` bytes (not decoded). */
export const REFUSED: unique symbol = Symbol("refused");

/** No msgpack body of L bytes decodes into more than DECODE_FACTOR * L + 64 bytes by {@link estimateDecoded}'s measure. */
export const DECODE_FACTOR = 64;

/**
 * Estimate the bytes of the JavaScript values a msgpack body decodes into, without decoding it
 * (a walk of its headers): the estimate, -1 once it passes `limit`, -2 for a malformed or
 * truncated body. Rough V8 costs: 64 bytes per map plus 40 per entry, 32 per array plus 8 per
 * item, 16 per scalar, 24 + length per string or bin. An empty map is the densest value (one
 * wire byte, 64 bytes): a body of nested empty maps is refused after its first limit/64 bytes.
 */
export function estimateDecoded(data: Uint8Array, limit: number): number {
  const v = new DataView(data.buffer, data.byteOffset, data.length);
  let pos = 0;
  let pending = 1; // values still to read
  let est = 0;
  const n = data.length;
  while (pending > 0) {
    if (pos >= n) return -2;
    pending--;
    const b = data[pos] as number;
    let len = 0; // payload bytes after the header
    let items = 0; // values that follow (containers)
    let hdr = 1;
    if (b <= 0x7f || b >= 0xe0 || b === 0xc0 || b === 0xc2 || b === 0xc3) est += 16;
    else if (b >= 0x80 && b <= 0x8f) { items = (b & 0x0f) * 2; est += 64 + 20 * items; }
    else if (b >= 0x90 && b <= 0x9f) { items = b & 0x0f; est += 32 + 8 * items; }
    else if (b >= 0xa0 && b <= 0xbf) { len = b & 0x1f; est += 24 + len; }
    else {
      switch (b) {
        case 0xcc: case 0xd0: hdr = 2; est += 16; break;
        case 0xcd: case 0xd1: hdr = 3; est += 16; break;
        case 0xca: case 0xce: case 0xd2: hdr = 5; est += 16; break;
        case 0xcb: case 0xcf: case 0xd3: hdr = 9; est += 16; break;
        case 0xc4: case 0xd9: if (pos + 2 > n) return -2; len = data[pos + 1] as number; hdr = 2; est += 24 + len; break;
        case 0xc5: case 0xda: if (pos + 3 > n) return -2; len = v.getUint16(pos + 1); hdr = 3; est += 24 + len; break;
        case 0xc6: case 0xdb: if (pos + 5 > n) return -2; len = v.getUint32(pos + 1); hdr = 5; est += 24 + len; break;
        case 0xdc: if (pos + 3 > n) return -2; items = v.getUint16(pos + 1); hdr = 3; est += 32 + 8 * items; break;
        case 0xdd: if (pos + 5 > n) return -2; items = v.getUint32(pos + 1); hdr = 5; est += 32 + 8 * items; break;
        case 0xde: if (pos + 3 > n) return -2; items = v.getUint16(pos + 1) * 2; hdr = 3; est += 64 + 20 * items; break;
        case 0xdf: if (pos + 5 > n) return -2; items = v.getUint32(pos + 1) * 2; hdr = 5; est += 64 + 20 * items; break;
        default: return -2; // ext types (never sent) and 0xc1
      }
    }
    pos += hdr + len;
    pending += items;
    if (est > limit) return -1;
    if (pending > n - pos) return -2; // each value still to come needs a byte at least
  }
  return pos === n ? est : -2;
}

/** One received frame. */
export interface Frame {
  /** Frame type. */
  type: number;
  /** Call id (0 for connection frames). */
  callId: number;
  /** The decoded body, or a marker. */
  body: unknown;
}

/** msgpack-encode one value (use_bin_type semantics: Uint8Array is bin). */
export function packBody(body: unknown): Uint8Array {
  return encoder.encode(body);
}

/** msgpack-decode one body; {@link UNDECODABLE} on garbage or an ext type. */
export function unpackBody(data: Uint8Array): unknown {
  try {
    return decoder.decode(data);
  } catch {
    return UNDECODABLE;
  }
}

/** Encode one frame. */
export function encodeFrame(type: number, callId: number, body: unknown): Uint8Array {
  const data = packBody(body);
  const out = new Uint8Array(FRAME_HEADER_SIZE + data.length);
  const v = new DataView(out.buffer);
  v.setUint32(0, data.length, false);
  out[4] = type;
  v.setUint32(5, callId >>> 0, false);
  out.set(data, FRAME_HEADER_SIZE);
  return out;
}

/** Decode a frame that fills one datagram exactly; null when the framing is wrong. */
export function decodeDatagram(data: Uint8Array): Frame | null {
  if (data.length < FRAME_HEADER_SIZE) return null;
  const v = new DataView(data.buffer, data.byteOffset, data.length);
  const n = v.getUint32(0, false);
  if (n !== data.length - FRAME_HEADER_SIZE) return null;
  return { type: data[4] as number, callId: v.getUint32(5, false), body: unpackBody(data.subarray(FRAME_HEADER_SIZE)) };
}

/**
 * Incremental frame decoder for a byte stream. A body over `maxBody` is skipped unread and
 * reported with the marker {@link OVERSIZED}; memory stays bounded by one frame of `maxBody`.
 */
export class FrameDecoder {
  private chunks: Uint8Array[] = [];
  private size = 0;
  private need = FRAME_HEADER_SIZE;
  private skip = 0;
  /** Bodies walked before decoding (large enough to maybe pass `maxDecoded`). */
  scanned = 0;
  /** Bodies refused: they would decode into more than `maxDecoded`. */
  refused = 0;
  /**
   * @param maxBody the largest body accepted (max_message_size)
   * @param maxDecoded the most a body may decode into (estimated; default 8 MiB or 2 × maxBody)
   */
  constructor(
    private readonly maxBody: number,
    private readonly maxDecoded: number = Math.max(8 * 1024 * 1024, 2 * maxBody),
  ) {}
  /** Bytes held. */
  get buffered(): number {
    return this.size;
  }
  /** The whole size (header included) of the frame received in part, or 0 when no frame header is pending. */
  get partialFrameSize(): number {
    return this.need > FRAME_HEADER_SIZE && this.size >= FRAME_HEADER_SIZE ? this.need : 0;
  }
  /**
   * Drop the frame received in part (its space is given back; the rest of it is skipped as it
   * arrives) and return its type and call id, or null when there is none.
   */
  dropPartial(): { type: number; callId: number } | null {
    if (!this.partialFrameSize) return null;
    const head = new Uint8Array(FRAME_HEADER_SIZE);
    let o = 0;
    for (const c of this.chunks) {
      const k = Math.min(c.length, FRAME_HEADER_SIZE - o);
      head.set(c.subarray(0, k), o);
      o += k;
      if (o === FRAME_HEADER_SIZE) break;
    }
    const v = new DataView(head.buffer);
    this.skip = this.need - this.size;
    this.chunks = [];
    this.size = 0;
    this.need = FRAME_HEADER_SIZE;
    return { type: head[4] as number, callId: v.getUint32(5, false) };
  }
  private body(data: Uint8Array): unknown {
    if (DECODE_FACTOR * data.length + 64 > this.maxDecoded) {
      this.scanned++;
      const est = estimateDecoded(data, this.maxDecoded);
      if (est === -2) return UNDECODABLE;
      if (est < 0) {
        this.refused++;
        return REFUSED;
      }
    }
    return unpackBody(data);
  }
  /** Feed bytes; returns the frames completed. Pieces are joined only once a frame is complete. */
  feed(data: Uint8Array): Frame[] {
    const out: Frame[] = [];
    if (this.skip) {
      const k = Math.min(this.skip, data.length);
      this.skip -= k;
      data = data.subarray(k);
    }
    if (!data.length) return out;
    this.chunks.push(data.slice());
    this.size += data.length;
    if (this.size < this.need) return out;
    let buf: Uint8Array;
    if (this.chunks.length === 1) buf = this.chunks[0] as Uint8Array;
    else {
      buf = new Uint8Array(this.size);
      let o = 0;
      for (const c of this.chunks) {
        buf.set(c, o);
        o += c.length;
      }
    }
    let pos = 0;
    this.need = FRAME_HEADER_SIZE;
    while (buf.length - pos >= FRAME_HEADER_SIZE) {
      const v = new DataView(buf.buffer, buf.byteOffset + pos, FRAME_HEADER_SIZE);
      const n = v.getUint32(0, false);
      const type = buf[pos + 4] as number;
      const callId = v.getUint32(5, false);
      if (n > this.maxBody) {
        out.push({ type, callId, body: OVERSIZED });
        const avail = buf.length - pos - FRAME_HEADER_SIZE;
        if (avail >= n) {
          pos += FRAME_HEADER_SIZE + n;
          continue;
        }
        this.skip = n - avail;
        pos = buf.length;
        break;
      }
      if (buf.length - pos < FRAME_HEADER_SIZE + n) {
        this.need = FRAME_HEADER_SIZE + n;
        break;
      }
      out.push({ type, callId, body: this.body(buf.subarray(pos + FRAME_HEADER_SIZE, pos + FRAME_HEADER_SIZE + n)) });
      pos += FRAME_HEADER_SIZE + n;
    }
    const rest = buf.subarray(pos);
    this.chunks = rest.length ? [rest] : [];
    this.size = rest.length;
    return out;
  }
}
