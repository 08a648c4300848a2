/**
 * The secure client's options (the Python `kcp.secure.HandshakeConfig` of a client, with its
 * `SecureConfig` knobs and the same defaults), the client's proposal ({@link ClientHello}), the
 * check of the server's answer ({@link checkAccepted}) and the passphrase → PSK derivation.
 */
import { scryptSync } from "node:crypto";
import { u16be } from "./bytes.js";
import { SecureUsageError } from "./errors.js";
import { SUITE_BY_NAME, type SuiteName } from "./noise.js";
import {
  CID_LEN,
  FEATURE_DATA_PARTS,
  FEATURE_ACK_REPEAT,
  FEATURE_HELD_ACKS,
  TAG_FEATURES,
  TAG_FEC,
  TAG_MTU,
  TAG_MUX,
  TAG_SUITES,
  TAG_TOKEN,
  TAG_VERSIONS,
  TAG_WINDOWS,
  encodeTlv,
} from "./packet.js";

/** Reed-Solomon over GF(2^8): at most this many shards per FEC group. */
export const MAX_TOTAL_SHARDS = 256;
/** The longest client token. */
export const MAX_TOKEN = 512;

/** What the user gives a secure dial (all optional but a key: `serverPublicKey`, `psk` or `passphrase`). */
export interface SecureOptions {
  /** The server's pinned X25519 public key (32 bytes): Noise IKpsk2. */
  serverPublicKey?: Uint8Array;
  /** This client's static private key (IKpsk2 identity); default a fresh one per client. */
  staticPrivateKey?: Uint8Array;
  /** A 32-byte pre-shared key. */
  psk?: Uint8Array;
  /** A passphrase (scrypt → PSK). With only a PSK or passphrase: Noise NNpsk0. */
  passphrase?: string;
  /** Bytes for the server's `authorize` hook (at most 512). */
  token?: Uint8Array;
  /** The MTU proposed (a UDP payload size; default 1400). */
  mtu?: number;
  /** The send window proposed (default 32). */
  sndWnd?: number;
  /** The receive window proposed (default 32). */
  rcvWnd?: number;
  /** FEC shards proposed, [data, parity] (default [0, 0]: none). */
  fec?: [number, number];
  /** Only the proposed FEC will do (default false: the server may lower it). */
  fecStrict?: boolean;
  /** Protocol versions offered (default [1]). */
  versions?: number[];
  /** Cipher suites, first choice first (default ["aesgcm", "chachapoly"]). */
  suites?: SuiteName[];
  /** smux versions offered (default [1, 2]). */
  muxVersions?: number[];
  /** The smallest MTU this client accepts in the answer (default 576, at most `mtu`). */
  minMtu?: number;
  /** The padded initiation's size (default 1200, 256..1472). */
  initiationSize?: number;
  /** Give up after this long (default 5000 ms). */
  handshakeTimeoutMs?: number;
  /** The first retransmission of the initiation (default 250 ms, then doubling). */
  handshakeRetryMs?: number;
  /** The largest interval between retransmissions (default 1000 ms). */
  handshakeRetryMaxMs?: number;
  /** The first byte of our connection ID (at most 1 byte: the server worker asked for, docs/workers.md). */
  cidPrefix?: Uint8Array;
  /** Replay window in packets (default 2048, at least 64). */
  replayWindow?: number;
  /** Start a key update after this many packets in an epoch (default 2^22). */
  rekeyAfterPackets?: number;
  /** Start a key update after this long in an epoch (default 120000 ms). */
  rekeyAfterMs?: number;
  /** Keep the previous receive key this long after an update (default 5000 ms). */
  keyGraceMs?: number;
  /** Path probe retransmission interval (default 500 ms). */
  pathProbeIntervalMs?: number;
  /** Path probes before giving a new path up (default 4). */
  pathProbeAttempts?: number;
  /** Anti-amplification factor on an unvalidated path (default 3). */
  amplificationFactor?: number;
  /** Offer DATA_PART frames (default true, as the Python client). */
  dataParts?: boolean;
  /** Offer held acks (default true, as the Python client: docs/tuning.md "Delayed acks"). */
  heldAcks?: boolean;
  /** Offer repeated acks (default true, as the Python client: docs/tuning.md "Repeated acks"). */
  ackRepeat?: boolean;
}

/** {@link SecureOptions} validated, with every default filled in. */
export interface ClientConfig {
  /** See {@link SecureOptions.serverPublicKey}. */
  readonly serverPublicKey: Uint8Array | null;
  /** See {@link SecureOptions.staticPrivateKey}. */
  readonly staticPrivateKey: Uint8Array | null;
  /** The PSK in use (`psk`, or scrypt of `passphrase`), or null. */
  readonly psk: Uint8Array | null;
  /** See {@link SecureOptions.token}. */
  readonly token: Uint8Array;
  /** See {@link SecureOptions.mtu}. */
  readonly mtu: number;
  /** See {@link SecureOptions.sndWnd}. */
  readonly sndWnd: number;
  /** See {@link SecureOptions.rcvWnd}. */
  readonly rcvWnd: number;
  /** See {@link SecureOptions.fec}. */
  readonly fec: readonly [number, number];
  /** See {@link SecureOptions.fecStrict}. */
  readonly fecStrict: boolean;
  /** See {@link SecureOptions.versions}. */
  readonly versions: readonly number[];
  /** Suite ids, first choice first. */
  readonly suiteIds: readonly number[];
  /** See {@link SecureOptions.muxVersions}. */
  readonly muxVersions: readonly number[];
  /** See {@link SecureOptions.minMtu}. */
  readonly minMtu: number;
  /** See {@link SecureOptions.initiationSize}. */
  readonly initiationSize: number;
  /** See {@link SecureOptions.handshakeTimeoutMs}. */
  readonly handshakeTimeoutMs: number;
  /** See {@link SecureOptions.handshakeRetryMs}. */
  readonly handshakeRetryMs: number;
  /** See {@link SecureOptions.handshakeRetryMaxMs}. */
  readonly handshakeRetryMaxMs: number;
  /** See {@link SecureOptions.cidPrefix}. */
  readonly cidPrefix: Uint8Array;
  /** See {@link SecureOptions.replayWindow}. */
  readonly replayWindow: number;
  /** See {@link SecureOptions.rekeyAfterPackets}. */
  readonly rekeyAfterPackets: number;
  /** See {@link SecureOptions.rekeyAfterMs}. */
  readonly rekeyAfterMs: number;
  /** See {@link SecureOptions.keyGraceMs}. */
  readonly keyGraceMs: number;
  /** See {@link SecureOptions.pathProbeIntervalMs}. */
  readonly pathProbeIntervalMs: number;
  /** See {@link SecureOptions.pathProbeAttempts}. */
  readonly pathProbeAttempts: number;
  /** See {@link SecureOptions.amplificationFactor}. */
  readonly amplificationFactor: number;
  /** The feature bits offered. */
  readonly features: number;
}

/** scrypt's salt for passphrases. */
export const PSK_SALT = "kcprpc secure psk v1";
const pskCache = new Map<string, Uint8Array>();

/** The 32-byte PSK of a passphrase: scrypt(passphrase, salt "kcprpc secure psk v1", N=2^14, r=8, p=1) (cached). */
export function derivePsk(passphrase: string): Uint8Array {
  let psk = pskCache.get(passphrase);
  if (psk === undefined) {
    psk = new Uint8Array(scryptSync(Buffer.from(passphrase, "utf8"), PSK_SALT, 32, { N: 1 << 14, r: 8, p: 1, maxmem: 64 * 1024 * 1024 }));
    if (pskCache.size >= 16) pskCache.clear();
    pskCache.set(passphrase, psk);
  }
  return psk;
}

function need(cond: boolean, message: string): void {
  if (!cond) throw new SecureUsageError(`SecureOptions: ${message}`);
}

function isInt(v: number, lo: number, hi: number): boolean {
  return Number.isInteger(v) && v >= lo && v <= hi;
}

/** Validate `o` and fill in the defaults; throws {@link SecureUsageError} naming the bad option. */
export function clientConfig(o: SecureOptions): ClientConfig {
  for (const name of ["serverPublicKey", "staticPrivateKey", "psk"] as const) {
    const v = o[name];
    need(v === undefined || (v instanceof Uint8Array && v.length === 32), `${name} must be 32 bytes`);
  }
  need(o.psk === undefined || o.passphrase === undefined, "give psk or passphrase, not both");
  need(o.passphrase === undefined || o.passphrase.length > 0, "passphrase must not be empty");
  const psk = o.psk !== undefined ? Uint8Array.from(o.psk) : o.passphrase !== undefined ? derivePsk(o.passphrase) : null;
  need(o.serverPublicKey !== undefined || psk !== null, "a secure client needs serverPublicKey (pinned key) or psk/passphrase");
  const token = o.token ?? new Uint8Array(0);
  need(token.length <= MAX_TOKEN, `token longer than ${MAX_TOKEN} bytes`);
  const mtu = o.mtu ?? 1400;
  const minMtu = Math.min(o.minMtu ?? 576, mtu);
  need(isInt(minMtu, 576, 65000) && isInt(mtu, minMtu, 65000), "need 576 <= minMtu <= mtu <= 65000");
  const sndWnd = o.sndWnd ?? 32;
  const rcvWnd = o.rcvWnd ?? 32;
  need(isInt(sndWnd, 1, 65535) && isInt(rcvWnd, 1, 65535), "windows must be 1..65535");
  const [d, p] = o.fec ?? [0, 0];
  need(isInt(d, 0, 255) && isInt(p, 0, 255) && (d > 0 || p === 0), "fec must be [data, parity] in 0..255");
  need(d + p <= MAX_TOTAL_SHARDS, `fec ${d}/${p} has ${d + p} shards per group, at most ${MAX_TOTAL_SHARDS}`);
  const versions = o.versions ?? [1];
  need(versions.length > 0 && versions.every((v) => isInt(v, 1, 255)), "versions must be 1..255");
  const suites = o.suites ?? ["aesgcm", "chachapoly"];
  need(suites.length > 0 && suites.every((s) => s in SUITE_BY_NAME), `suites must be among ["aesgcm","chachapoly"]`);
  const mux = o.muxVersions ?? [1, 2];
  need(mux.length > 0 && mux.every((v) => isInt(v, 1, 255)), "mux versions must be 1..255");
  const initiationSize = o.initiationSize ?? 1200;
  need(isInt(initiationSize, 256, 1472), "initiationSize must be 256..1472");
  const cidPrefix = o.cidPrefix ?? new Uint8Array(0);
  need(cidPrefix.length <= 1, "cidPrefix must be at most 1 byte (a worker's index)");
  const t = (v: number | undefined, dflt: number, name: string, lo = 1): number => {
    const x = v ?? dflt;
    need(Number.isFinite(x) && x >= lo, `${name} must be >= ${lo}`);
    return x;
  };
  return {
    serverPublicKey: o.serverPublicKey ? Uint8Array.from(o.serverPublicKey) : null,
    staticPrivateKey: o.staticPrivateKey ? Uint8Array.from(o.staticPrivateKey) : null,
    psk,
    token: Uint8Array.from(token),
    mtu,
    sndWnd,
    rcvWnd,
    fec: [d, p],
    fecStrict: o.fecStrict ?? false,
    versions: [...versions],
    suiteIds: suites.map((s) => SUITE_BY_NAME[s].id),
    muxVersions: [...mux],
    minMtu,
    initiationSize,
    handshakeTimeoutMs: t(o.handshakeTimeoutMs, 5000, "handshakeTimeoutMs"),
    handshakeRetryMs: t(o.handshakeRetryMs, 250, "handshakeRetryMs"),
    handshakeRetryMaxMs: t(o.handshakeRetryMaxMs, 1000, "handshakeRetryMaxMs"),
    cidPrefix: Uint8Array.from(cidPrefix).slice(0, CID_LEN),
    replayWindow: t(o.replayWindow, 2048, "replayWindow", 64),
    rekeyAfterPackets: t(o.rekeyAfterPackets, 1 << 22, "rekeyAfterPackets"),
    rekeyAfterMs: t(o.rekeyAfterMs, 120_000, "rekeyAfterMs"),
    keyGraceMs: t(o.keyGraceMs, 5000, "keyGraceMs", 0),
    pathProbeIntervalMs: t(o.pathProbeIntervalMs, 500, "pathProbeIntervalMs"),
    pathProbeAttempts: t(o.pathProbeAttempts, 4, "pathProbeAttempts"),
    amplificationFactor: t(o.amplificationFactor, 3, "amplificationFactor"),
    features:
      ((o.dataParts ?? true) ? FEATURE_DATA_PARTS : 0) |
      ((o.heldAcks ?? true) ? FEATURE_HELD_ACKS : 0) |
      ((o.ackRepeat ?? true) ? FEATURE_ACK_REPEAT : 0),
  };
}

/** The client's proposal (the first handshake payload), as TLVs in the Python client's order. */
export function encodeClientHello(c: ClientConfig): Uint8Array {
  const items: [number, Uint8Array][] = [
    [TAG_VERSIONS, Uint8Array.from(c.versions)],
    [TAG_SUITES, Uint8Array.from(c.suiteIds)],
    [TAG_MTU, u16be(c.mtu)],
    [TAG_WINDOWS, Uint8Array.of(...u16be(c.sndWnd), ...u16be(c.rcvWnd))],
    [TAG_FEC, Uint8Array.of(c.fec[0], c.fec[1], c.fecStrict ? 1 : 0)],
    [TAG_MUX, Uint8Array.from(c.muxVersions)],
    [TAG_TOKEN, c.token],
  ];
  if (c.features) items.push([TAG_FEATURES, Uint8Array.of(c.features & 0xff)]);
  return encodeTlv(items);
}

/** What both sides agreed on in the handshake (windows are the client's view: snd = client → server). */
export interface SessionParams {
  /** Protocol version. */
  readonly version: number;
  /** Cipher suite. */
  readonly suite: SuiteName;
  /** MTU (a UDP payload size). */
  readonly mtu: number;
  /** Client → server window. */
  readonly sndWnd: number;
  /** Server → client window. */
  readonly rcvWnd: number;
  /** FEC data shards (0: no FEC). */
  readonly dataShards: number;
  /** FEC parity shards. */
  readonly parityShards: number;
  /** smux version. */
  readonly muxVersion: number;
  /** Feature bits both ends use. */
  readonly features: number;
}

function fecOnOff(d: number, p: number): string {
  return p ? `${d}/${p}` : "0/0";
}

/** The client's check of the server's answer: a reason string if it cannot accept it, else null. */
export function checkAccepted(c: ClientConfig, p: SessionParams): string | null {
  const list = (xs: readonly number[]): string => `[${[...xs].sort((a, b) => a - b).join(", ")}]`;
  if (!c.versions.includes(p.version)) return `server chose version ${p.version}, client speaks ${list(c.versions)}`;
  if (!c.muxVersions.includes(p.muxVersion)) return `server chose mux version ${p.muxVersion}, client speaks ${list(c.muxVersions)}`;
  if (p.mtu < c.minMtu || p.mtu > c.mtu) return `server chose MTU ${p.mtu}, client accepts ${c.minMtu}..${c.mtu}`;
  if (p.sndWnd === 0 || p.rcvWnd === 0 || p.sndWnd > c.sndWnd || p.rcvWnd > c.rcvWnd)
    return `server chose windows ${p.sndWnd}/${p.rcvWnd}, client proposed ${c.sndWnd}/${c.rcvWnd}`;
  if (p.features & ~c.features) return `server chose features 0x${p.features.toString(16)}, client offered 0x${c.features.toString(16)}`;
  if (p.dataShards === 0 && p.parityShards > 0)
    return `server chose FEC ${p.dataShards}/${p.parityShards}, which has parity without data shards`;
  if (p.dataShards + p.parityShards > MAX_TOTAL_SHARDS)
    return `server chose FEC ${p.dataShards}/${p.parityShards}, more than ${MAX_TOTAL_SHARDS} shards per group`;
  if (c.fecStrict && fecOnOff(p.dataShards, p.parityShards) !== fecOnOff(c.fec[0], c.fec[1]))
    return `FEC mismatch: server chose ${p.dataShards}/${p.parityShards} shards, client requires ${c.fec[0]}/${c.fec[1]}`;
  return null;
}
