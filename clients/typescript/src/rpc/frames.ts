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
  /** @param maxBody the largest body accepted (max_message_size) */
  constructor(private readonly maxBody: number) {}
  /** Bytes held. */
  get buffered(): number {
    return this.size;
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
      out.push({ type, callId, body: unpackBody(buf.subarray(pos + FRAME_HEADER_SIZE, pos + FRAME_HEADER_SIZE + n)) });
      pos += FRAME_HEADER_SIZE + n;
    }
    const rest = buf.subarray(pos);
    this.chunks = rest.length ? [rest] : [];
    this.size = rest.length;
    return out;
  }
}
