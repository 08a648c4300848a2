/**
 * Wire format of secure mode (docs/security.md): packet types, headers, handshake TLVs, frames,
 * reason codes and wire hints. Mirrors the Python `kcp/secure/packet.py` and `kcp/wirehint.py`.
 */
import { concat, fromUtf8, readU16be, u16be, utf8 } from "./bytes.js";
import { DecodeError } from "./errors.js";

/** INITIATION (client → server). */
export const T_INITIATION = 0xc1;
/** RESPONSE (server → client). */
export const T_RESPONSE = 0xc2;
/** RETRY (server → client, a cookie). */
export const T_RETRY = 0xc3;
/** HINT (unauthenticated advice, 20 bytes). */
export const T_HINT = 0xc4;
/** TRANSPORT, or'ed with the key phase bit. */
export const T_TRANSPORT = 0xc8;
/** The secure wire's version byte. */
export const WIRE_VERSION = 1;
/** Length of a connection ID. */
export const CID_LEN = 8;
/** Transport header: type 1 + destination CID 8 + packet number 8. */
export const TRANSPORT_HEADER = 17;
/** AEAD tag length. */
export const TAG_LEN = 16;
/** The smallest transport datagram: header, frame type, tag. */
export const MIN_TRANSPORT = TRANSPORT_HEADER + 1 + TAG_LEN;
/** Bytes a transport packet adds to its payload (34). */
export const SECURE_OVERHEAD = MIN_TRANSPORT;
/** RESPONSE and RETRY header: type, reserved, client CID. */
export const RESP_HEADER = 10;
/** A RETRY's sealed cookie: nonce 12 + cookie 16 + tag 16. */
export const SEALED_COOKIE_LEN = 44;
/** The Noise prologue's label (followed by the initiation's first 12 bytes). */
export const PROLOGUE_LABEL = utf8("kcprpc secure v1");
/** Pattern id of Noise IKpsk2. */
export const PATTERN_IKPSK2 = 1;
/** Pattern id of Noise NNpsk0. */
export const PATTERN_NNPSK0 = 2;
/** Length of a stateless reset token. */
export const RESET_TOKEN_LEN = 16;

/** True for a transport packet's type byte (either key phase). */
export function isTransportType(t: number | undefined): boolean {
  return t === T_TRANSPORT || t === (T_TRANSPORT | 1);
}

/** Reason codes of refusals and CLOSE/GOAWAY frames. */
export const Reason = {
  NONE: 0,
  VERSION_MISMATCH: 1,
  SUITE_REFUSED: 2,
  PARAMS_REFUSED: 3,
  BAD_TOKEN: 4,
  SERVER_BUSY: 5,
  PROTOCOL_ERROR: 6,
  APPLICATION: 7,
  IDLE_TIMEOUT: 8,
  GOING_AWAY: 9,
  INTERNAL: 10,
  STATELESS_RESET: 11,
} as const;

const REASON_NAMES = [
  "none",
  "version mismatch",
  "suite refused",
  "params refused",
  "bad token",
  "server busy",
  "protocol error",
  "application",
  "idle timeout",
  "going away",
  "internal",
  "stateless reset",
];

/** A readable name for a reason code (unknown codes print as `reason N`). */
export function reasonName(code: number): string {
  return REASON_NAMES[code] ?? `reason ${code}`;
}

/** `"<reason>: <message>"` for errors (the message alone if it already starts with the reason). */
export function reasonText(code: number, message: string): string {
  const name = reasonName(code);
  if (!message) return name;
  return message.toLowerCase().startsWith(name) ? message : `${name}: ${message}`;
}

// frames
/** DATA: the rest is a pipeline datagram. */
export const F_DATA = 0x00;
/** PING [probe id (8)] | zero padding. */
export const F_PING = 0x01;
/** PATH_CHALLENGE: 8 random bytes. */
export const F_PATH_CHALLENGE = 0x02;
/** PATH_RESPONSE: the challenge's 8 bytes. */
export const F_PATH_RESPONSE = 0x03;
/** CLOSE: code (2) | UTF-8 message. */
export const F_CLOSE = 0x04;
/** GOAWAY: code (2) | UTF-8 message. */
export const F_GOAWAY = 0x05;
/** PING_ACK: probe id (8). */
export const F_PING_ACK = 0x06;
/** DATA_PART: message id (4) | index (1) | count (1) | piece. */
export const F_DATA_PART = 0x07;
/** Length of an MTU probe id. */
export const PROBE_ID_LEN = 8;
/** A DATA_PART frame's header after its type: message id, index, count. */
export const PART_HEADER = 6;
/** A DATA_PART datagram's bytes around its piece (40). */
export const PART_OVERHEAD = TRANSPORT_HEADER + 1 + PART_HEADER + TAG_LEN;
/** The most pieces of one payload. */
export const MAX_PARTS = 16;
/** The smallest PING that carries a probe id. */
export const MIN_PROBE = TRANSPORT_HEADER + 1 + PROBE_ID_LEN + TAG_LEN;
/** The longest CLOSE/GOAWAY message, in UTF-8 bytes. */
export const MAX_REASON_TEXT = 512;

/** A CLOSE or GOAWAY frame: type (1) | code (2) | UTF-8 message cut to 512 bytes. */
export function encodeReasonFrame(frameType: number, code: number, message: string): Uint8Array {
  return concat(Uint8Array.of(frameType), u16be(code & 0xffff), utf8(message).slice(0, MAX_REASON_TEXT));
}

/** [code, message] of a CLOSE/GOAWAY body (after the type byte). */
export function decodeReasonFrame(body: Uint8Array): [number, string] {
  if (body.length < 2) throw new DecodeError("short reason frame");
  return [readU16be(body, 0), fromUtf8(body.subarray(2))];
}

// handshake TLVs
/** Tag 1: client: protocol versions (u8 list); server: the chosen one. */
export const TAG_VERSIONS = 1;
/** Tag 2: suite ids. */
export const TAG_SUITES = 2;
/** Tag 3: MTU (u16). */
export const TAG_MTU = 3;
/** Tag 4: windows: snd u16, rcv u16. */
export const TAG_WINDOWS = 4;
/** Tag 5: FEC: data u8, parity u8 (client: and a strict flag). */
export const TAG_FEC = 5;
/** Tag 6: smux versions. */
export const TAG_MUX = 6;
/** Tag 7: the client's token. */
export const TAG_TOKEN = 7;
/** Tag 8: status (0 accepted, else a reason code). */
export const TAG_STATUS = 8;
/** Tag 9: the refusal's message. */
export const TAG_MESSAGE = 9;
/** Tag 10: the server's connection ID. */
export const TAG_CID = 10;
/** Tag 11: the stateless reset token of the server's connection ID. */
export const TAG_RESET = 11;
/** Tag 12: feature bits (bit 0: DATA_PART, bit 1: held acks, bit 2: repeated acks). */
export const TAG_FEATURES = 12;
/** Feature bit: DATA_PART frames. */
export const FEATURE_DATA_PARTS = 0x01;
/** Feature bit: a KCP ACK's frg says its sender holds lone acks (docs/wire-format/kcp.md, "Held acks"). */
export const FEATURE_HELD_ACKS = 0x02;
/** Feature bit: REACK segments repeat the ACKs of segments above a hole (docs/wire-format/kcp.md, "Repeated acks"). */
export const FEATURE_ACK_REPEAT = 0x04;

/** `tag (1) | length (2, big-endian) | value`, repeated. */
export function encodeTlv(items: [number, Uint8Array][]): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const [tag, value] of items) {
    if (value.length > 0xffff) throw new RangeError("TLV value too long");
    parts.push(Uint8Array.of(tag), u16be(value.length), value);
  }
  return concat(...parts);
}

/** Parse TLVs: the first value of a repeated tag wins; unknown tags are kept (and ignored by callers). */
export function decodeTlv(data: Uint8Array): Map<number, Uint8Array> {
  const out = new Map<number, Uint8Array>();
  let pos = 0;
  const n = data.length;
  while (pos < n) {
    if (n - pos < 3) throw new DecodeError("truncated TLV header");
    const tag = data[pos] as number;
    const length = readU16be(data, pos + 1);
    pos += 3;
    if (n - pos < length) throw new DecodeError("truncated TLV value");
    if (!out.has(tag)) out.set(tag, data.slice(pos, pos + length));
    pos += length;
  }
  return out;
}

/** A one-byte TLV value, or null when absent. */
export function tlvU8(items: Map<number, Uint8Array>, tag: number): number | null {
  const v = items.get(tag);
  if (v === undefined) return null;
  if (v.length !== 1) throw new DecodeError(`TLV ${tag}: expected 1 byte`);
  return v[0] as number;
}

/** `count` u16 values, or null when absent. */
export function tlvU16s(items: Map<number, Uint8Array>, tag: number, count: number): number[] | null {
  const v = items.get(tag);
  if (v === undefined) return null;
  if (v.length !== 2 * count) throw new DecodeError(`TLV ${tag}: expected ${2 * count} bytes`);
  const out: number[] = [];
  for (let i = 0; i < count; i++) out.push(readU16be(v, 2 * i));
  return out;
}

// wire hints
/** A hint's version byte. */
export const HINT_VERSION = 1;
/** Bytes of the answered datagram a hint echoes. */
export const ECHO_LEN = 16;
/** A hint's length. */
export const HINT_LEN = 20;

/** What a wire hint says (its code byte). */
export const HintCode = {
  WRONG_KEY: 1,
  NO_PSK_MODE: 2,
  NO_KEY_MODE: 3,
  WIRE_VERSION: 4,
  SECURE_WIRE: 5,
  COMPAT_WIRE: 6,
} as const;

/** [code, detail, echo] of a well-formed hint, else null (never throws). */
export function parseHint(d: Uint8Array): [number, number, Uint8Array] | null {
  if (d.length !== HINT_LEN || d[0] !== T_HINT || d[1] !== HINT_VERSION) return null;
  const code = d[2] as number;
  if (code < 1 || code > 6) return null;
  return [code, d[3] as number, d.slice(4)];
}

/** What a dialling client tells its user for a bound hint from `peer` (HOST:PORT), as `kcp.wirehint.hint_message`. */
export function hintMessage(code: number, detail: number, peer: string): string {
  const server = peer ? `the server at ${peer}` : "the server";
  switch (code) {
    case HintCode.WRONG_KEY:
      return `wrong key: ${server} could not verify our handshake (check the passphrase/PSK, or the pinned server public key)`;
    case HintCode.NO_PSK_MODE:
      return `wrong key: ${server} accepts no passphrase/PSK-only handshakes: pin its public key (SecureWire(server_public_key=...))`;
    case HintCode.NO_KEY_MODE:
      return `wrong key: ${server} has no static key to pin: dial it with its passphrase/PSK, without server_public_key`;
    case HintCode.WIRE_VERSION:
      return `wire version mismatch: ${server} speaks secure wire version ${detail}, this client speaks ${WIRE_VERSION} (upgrade the older side)`;
    case HintCode.SECURE_WIRE:
      return `wrong wire mode: ${server} speaks the secure wire, not kcp-go's: dial it with kcp.SecureWire (kcprpc: the default wire; CLI: --wire secure)`;
    default:
      return `wrong wire mode: ${server} speaks kcp-go's wire (compat), not the secure wire: dial it with kcp.CompatWire (kcprpc: Transport(CompatWire(...)); CLI: --wire compat)`;
  }
}
