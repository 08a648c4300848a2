/**
 * The web transports' messages (docs/wire-format/web.md), sans I/O: OPEN from the client, the
 * server's ACCEPT or REFUSE, then STREAM and DATAGRAM messages over WebSocket (over WebTransport
 * the stream and datagrams carry the bytes bare). Decoders never throw on network input: they
 * return a typed result with an error the caller counts.
 */

/** The web wire's version (OPEN and ACCEPT carry it). */
export const WEB_VERSION = 1;
/** The WebSocket subprotocol a client offers and a server selects. */
export const WEB_SUBPROTOCOL = "kcprpc.v1";
/** The default path of a listener. */
export const WEB_DEFAULT_PATH = "/kcprpc";
/** The longest OPEN token. */
export const MAX_WEB_TOKEN = 1024;
/** The longest REFUSE message (UTF-8 bytes). */
export const MAX_REFUSE_MESSAGE = 256;
/** Bytes of an ACCEPT's binding. */
export const BINDING_SIZE = 16;
/** Bytes of an ACCEPT message. */
export const ACCEPT_SIZE = 5 + BINDING_SIZE;

/** The kind byte of each message. */
export const WebKind = { OPEN: 0x01, ACCEPT: 0x02, STREAM: 0x03, DATAGRAM: 0x04, REFUSE: 0x05 } as const;

/** The server took the connection. */
export interface Accept {
  readonly kind: "accept";
  /** The web wire's version. */
  readonly version: number;
  /** The smux version both ends now speak. */
  readonly muxVersion: number;
  /** The largest RPC datagram the server accepts on this connection. */
  readonly maxDatagram: number;
  /** The connection's channel binding (16 random bytes). */
  readonly binding: Uint8Array;
}

/** The server refused the connection with an RPC status. */
export interface Refuse {
  readonly kind: "refuse";
  /** The RPC status code (16 UNAUTHENTICATED, 9 FAILED_PRECONDITION, ...). */
  readonly status: number;
  /** The server's message. */
  readonly message: string;
}

/** Input that breaks the wire: what was wrong (for a counter and the close reason). */
export interface WireError {
  readonly kind: "error";
  /** A counter-friendly name: `bad_kind`, `short`, `bad_version`, `bad_mux_version`, `too_long`, `bad_utf8`. */
  readonly error: string;
  /** A sentence for logs and close reasons. */
  readonly message: string;
}

/** More bytes are needed (a byte stream gave part of the message). */
export interface Incomplete {
  readonly kind: "incomplete";
}

const utf8 = new TextEncoder();
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

function err(error: string, message: string): WireError {
  return { kind: "error", error, message };
}

/**
 * OPEN: `01 · version · mux version · token length u16 · token`. Throws RangeError for a token
 * over {@link MAX_WEB_TOKEN} bytes or a mux version other than 1 or 2 (the caller's misuse).
 */
export function encodeOpen(token: Uint8Array, muxVersion: number): Uint8Array {
  if (token.length > MAX_WEB_TOKEN) throw new RangeError(`the token is ${token.length} bytes, at most ${MAX_WEB_TOKEN}`);
  if (muxVersion !== 1 && muxVersion !== 2) throw new RangeError(`the smux version is 1 or 2, not ${muxVersion}`);
  const out = new Uint8Array(5 + token.length);
  out[0] = WebKind.OPEN;
  out[1] = WEB_VERSION;
  out[2] = muxVersion;
  out[3] = token.length >>> 8;
  out[4] = token.length & 0xff;
  out.set(token, 5);
  return out;
}

/** The token as OPEN carries it: a string is its UTF-8 bytes (RangeError for anything else). */
export function tokenBytes(token: string | Uint8Array | undefined): Uint8Array {
  if (token === undefined) return new Uint8Array(0);
  if (typeof token === "string") return utf8.encode(token);
  if (!(token instanceof Uint8Array)) throw new RangeError(`the token is a string or a Uint8Array, not ${typeof token}`);
  return token;
}

/**
 * The server's answer to OPEN at the start of `data` (a whole WebSocket message, or the bytes a
 * WebTransport stream gave so far when `partial`): ACCEPT or REFUSE, with `used`, the bytes it
 * took (the rest of a stream's bytes is smux data). `offeredMux` is the smux version OPEN offered:
 * an ACCEPT above it, or a version other than {@link WEB_VERSION}, is an error.
 */
export function decodeAnswer(data: Uint8Array, offeredMux: number, partial = false): ((Accept | Refuse) & { readonly used: number }) | WireError | Incomplete {
  if (data.length === 0) return partial ? { kind: "incomplete" } : err("short", "an empty message");
  const kind = data[0];
  if (kind === WebKind.ACCEPT) {
    if (data.length < ACCEPT_SIZE) return partial ? { kind: "incomplete" } : err("short", `an ACCEPT of ${data.length} bytes, not ${ACCEPT_SIZE}`);
    if (!partial && data.length !== ACCEPT_SIZE) return err("too_long", `an ACCEPT of ${data.length} bytes, not ${ACCEPT_SIZE}`);
    const version = data[1] as number;
    const muxVersion = data[2] as number;
    if (version !== WEB_VERSION) return err("bad_version", `the server answered web wire version ${version}, this client speaks ${WEB_VERSION}`);
    if (muxVersion < 1 || muxVersion > offeredMux) return err("bad_mux_version", `the server chose smux version ${muxVersion}, the client offered 1..${offeredMux}`);
    const maxDatagram = ((data[3] as number) << 8) | (data[4] as number);
    return { kind: "accept", version, muxVersion, maxDatagram, binding: data.slice(5, ACCEPT_SIZE), used: ACCEPT_SIZE };
  }
  if (kind === WebKind.REFUSE) {
    if (data.length < 4) return partial ? { kind: "incomplete" } : err("short", `a REFUSE of ${data.length} bytes`);
    const n = ((data[2] as number) << 8) | (data[3] as number);
    if (n > MAX_REFUSE_MESSAGE) return err("too_long", `a REFUSE message of ${n} bytes, at most ${MAX_REFUSE_MESSAGE}`);
    if (data.length < 4 + n) return partial ? { kind: "incomplete" } : err("short", `a REFUSE of ${data.length} bytes, its message needs ${4 + n}`);
    if (!partial && data.length !== 4 + n) return err("too_long", `a REFUSE of ${data.length} bytes, not ${4 + n}`);
    let message: string;
    try {
      message = strictUtf8.decode(data.subarray(4, 4 + n));
    } catch {
      return err("bad_utf8", "a REFUSE message that is not UTF-8");
    }
    return { kind: "refuse", status: data[1] as number, message, used: 4 + n };
  }
  return err("bad_kind", `a first message of kind 0x${(kind as number).toString(16).padStart(2, "0")}, not ACCEPT or REFUSE`);
}

/** `kind` followed by `payload` in one new array (a WebSocket STREAM or DATAGRAM message). */
export function encodeMessage(kind: typeof WebKind.STREAM | typeof WebKind.DATAGRAM, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(1 + payload.length);
  out[0] = kind;
  out.set(payload, 1);
  return out;
}

/** A message after ACCEPT (WebSocket): a chunk of the smux stream or one RPC datagram. */
export interface Payload {
  readonly kind: "stream" | "datagram";
  /** The bytes after the kind byte (a view of the message, not a copy). */
  readonly data: Uint8Array;
}

/** A WebSocket message after ACCEPT: STREAM or DATAGRAM, else an error (any other kind, or a STREAM with nothing in it). */
export function decodeMessage(data: Uint8Array): Payload | WireError {
  if (data.length === 0) return err("short", "an empty message");
  const kind = data[0];
  if (kind === WebKind.STREAM) {
    if (data.length < 2) return err("short", "a STREAM message without bytes");
    return { kind: "stream", data: data.subarray(1) };
  }
  if (kind === WebKind.DATAGRAM) return { kind: "datagram", data: data.subarray(1) };
  return err("bad_kind", `a message of kind 0x${(kind as number).toString(16).padStart(2, "0")} after ACCEPT`);
}

/**
 * What `/kcprpc.json` (discovery, docs/wire-format/web.md) says, checked: the WebSocket path or
 * URL, and the WebTransport URL with its certificate hashes (base64 SHA-256), when offered.
 */
export interface Discovery {
  /** The WebSocket endpoint: a path on the discovery's origin, or a URL. */
  readonly websocket: string | null;
  /** The WebTransport endpoint, when the server has one. */
  readonly webtransport: { readonly url: string; readonly certificateHashes: readonly string[] } | null;
}

/** Parse a discovery document; null with a reason when it is not one. */
export function parseDiscovery(doc: unknown): Discovery | { readonly error: string } {
  if (typeof doc !== "object" || doc === null || Array.isArray(doc)) return { error: "not a JSON object" };
  const d = doc as Record<string, unknown>;
  const ws = d.websocket;
  if (ws !== undefined && typeof ws !== "string") return { error: "websocket is not a string" };
  let webtransport: Discovery["webtransport"] = null;
  const wt = d.webtransport;
  if (wt !== undefined && wt !== null) {
    if (typeof wt !== "object" || Array.isArray(wt)) return { error: "webtransport is not an object" };
    const o = wt as Record<string, unknown>;
    if (typeof o.url !== "string") return { error: "webtransport.url is not a string" };
    const hashes = o.certificateHashes ?? [];
    if (!Array.isArray(hashes) || !hashes.every((h) => typeof h === "string")) return { error: "webtransport.certificateHashes is not a list of strings" };
    webtransport = { url: o.url, certificateHashes: hashes as string[] };
  }
  return { websocket: ws ?? null, webtransport };
}

/** The bytes of a base64 string (standard or URL alphabet, padding optional), or null. */
export function fromBase64(s: string): Uint8Array | null {
  const t = s.replace(/-/g, "+").replace(/_/g, "/").replace(/=+$/, "");
  if (!/^[A-Za-z0-9+/]*$/.test(t) || t.length % 4 === 1) return null;
  const bin = atob(t + "=".repeat((4 - (t.length % 4)) % 4));
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}
