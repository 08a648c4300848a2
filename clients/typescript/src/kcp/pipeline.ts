/**
 * kcp-go's packet layer for one session (docs/wire-format/packet.md, fec.md): FEC, then nonce +
 * crc32 + block cipher, or the AEAD. Port of the Python `kcp/pipeline.py`.
 *
 * {@link Pipeline.open} never throws on input from the network: every malformed datagram is
 * dropped and counted in the session's {@link Counters}.
 *
 * With FEC on, parity goes out only once the peer is known to run FEC too, which an FEC shard from
 * it shows (or secure mode's handshake, which agreed on it: `peerFec`). Until the peer's first
 * packet comes, each KCP packet goes out as a data shard alone (the group's seqids are still
 * consumed, as when the encoder skips a late group's parity). While the peer has sent plain KCP
 * packets and no FEC shard, every packet goes out plain (counter `fecPlainOut`); its first shard
 * puts parity back on. The reason: kcp-go receivers without FEC as old as kcptun 20210922's decode
 * shards with a (1, 1) decoder that takes parity for data before it has tuned itself, and the
 * parity of a bulk stream's first group reads as valid segments (docs/wire-format/fec.md, "Parity
 * timing").
 */
import { randomBytes } from "node:crypto";
import type { Counters } from "./counters.js";
import { crc32, type AeadCrypt, type BlockCrypt, type PacketCrypt } from "./crypt.js";
import { KcpUsageError } from "./errors.js";
import {
  FecDecoder,
  FecEncoder,
  fecEnabled,
  FEC_HEADER_SIZE,
  FEC_HEADER_SIZE_PLUS2,
  OOB_SEQID,
  TYPE_DATA,
  TYPE_OOB,
  TYPE_PARITY,
} from "./fec.js";

/** The block-cipher nonce size. */
export const NONCE_SIZE = 16;
/** The crc32 size. */
export const CRC_SIZE = 4;
/** Nonce + crc32. */
export const CRYPT_HEADER_SIZE = NONCE_SIZE + CRC_SIZE;
/** Shortest opened packet accepted: an OOB packet with an empty payload. */
export const MIN_PACKET_SIZE = FEC_HEADER_SIZE_PLUS2 + 4;

/** Kind of an opened packet: a KCP packet as received. */
export const KIND_KCP = 0;
/** Kind of an opened packet: an OOB payload (conv removed). */
export const KIND_OOB = 1;
/** Kind of an opened packet: a KCP packet rebuilt by FEC (feed with `regular = false`). */
export const KIND_KCP_RECOVERED = 2;

/** One result of {@link Pipeline.open}. */
export type Opened = [kind: typeof KIND_KCP | typeof KIND_OOB | typeof KIND_KCP_RECOVERED, payload: Uint8Array];

/** Random bytes for nonces (injectable for deterministic tests). */
export type RandomSource = (n: number) => Uint8Array;

/** The OS CSPRNG. */
export const defaultRandom: RandomSource = (n) => new Uint8Array(randomBytes(n));

/** True if a datagram of a plain layer (no crypt, no FEC) is a bare KCP packet (no 0xf1–0xf3 flag at offset 4). */
export function bareKcp(d: Uint8Array): boolean {
  return !(d.length > 5 && d[4]! >= 0xf1 && d[4]! <= 0xf3 && d[5] === 0);
}

/** What a pipeline with FEC knows of its peer's FEC: nothing yet, it runs FEC, it sends plain packets. */
type PeerFec = "unknown" | "fec" | "plain";

/** The packet layer: `seal` KCP packets into UDP payloads, `open` them back. */
export class Pipeline {
  /** True when FEC is on. */
  readonly fecEnabled: boolean;
  /** Bytes put in front of a KCP packet. */
  readonly headerSize: number;
  /** Total bytes added to a KCP packet (the engine's MTU is the UDP MTU minus this). */
  readonly overhead: number;
  private readonly block: BlockCrypt | null = null;
  private readonly aead: AeadCrypt | null = null;
  private readonly enc: FecEncoder | null = null;
  private dec: FecDecoder | null = null;
  private peer: PeerFec;

  /**
   * `crypt` from {@link newCrypt} (null: no crypt layer); FEC is on when both shard counts are positive.
   * `peerFec`: the peer is known to run the same FEC (secure mode's handshake agreed on it), so parity goes out from the first group.
   */
  constructor(
    readonly crypt: PacketCrypt | null,
    readonly dataShards: number,
    readonly parityShards: number,
    readonly counters: Counters,
    private readonly random: RandomSource = defaultRandom,
    peerFec = false,
  ) {
    this.peer = peerFec ? "fec" : "unknown";
    let header = 0;
    let tail = 0;
    if (crypt !== null && crypt.kind === "aead") {
      this.aead = crypt;
      header = crypt.nonceSize;
      tail = crypt.overhead;
    } else if (crypt !== null) {
      this.block = crypt;
      header = CRYPT_HEADER_SIZE;
    }
    this.fecEnabled = fecEnabled(dataShards, parityShards);
    if (this.fecEnabled) {
      this.enc = new FecEncoder(dataShards, parityShards);
      this.dec = new FecDecoder(dataShards, parityShards, counters);
      header += FEC_HEADER_SIZE_PLUS2;
    }
    this.headerSize = header;
    this.overhead = header + tail;
  }

  /** One KCP packet → its UDP payloads (the data shard or the packet itself, then any parity shards). `now`: a non-wrapping ms clock. */
  seal(kcpPacket: Uint8Array, now: number): Uint8Array[] {
    const enc = this.enc;
    if (enc !== null) {
      if (this.peer === "fec") return enc.encode(kcpPacket, now).map((b) => this.protect(b));
      if (this.peer === "unknown") return [this.protect(enc.encode(kcpPacket, now, false)[0]!)]; // no parity before the peer shows FEC
      this.counters.fecPlainOut++; // the peer sends plain: so do we
    }
    return [this.protect(kcpPacket)];
  }

  /** One out-of-band UDP payload: `0xffffffff | 0x00f3 | size | conv | payload`, then the crypt layer. */
  sealOob(payload: Uint8Array, conv: number): Uint8Array {
    if (payload.length > 0xffff - 6) throw new KcpUsageError(`OOB payload too large: ${payload.length} bytes`);
    const body = new Uint8Array(12 + payload.length);
    const v = new DataView(body.buffer);
    v.setUint32(0, OOB_SEQID, true);
    v.setUint16(4, TYPE_OOB, true);
    v.setUint16(6, 6 + payload.length, true);
    v.setUint32(8, conv >>> 0, true);
    body.set(payload, 12);
    this.counters.oobOut++;
    return this.protect(body);
  }

  /** Largest OOB payload for an engine MTU (kcp-go: mtu − 4). */
  oobMaxSize(kcpMtu: number): number {
    return Math.max(0, kcpMtu - 4);
  }

  private protect(body: Uint8Array): Uint8Array {
    if (this.block !== null) {
      const plain = new Uint8Array(CRYPT_HEADER_SIZE + body.length);
      plain.set(this.random(NONCE_SIZE), 0);
      new DataView(plain.buffer).setUint32(NONCE_SIZE, crc32(body), true);
      plain.set(body, CRYPT_HEADER_SIZE);
      return this.block.encrypt(plain);
    }
    if (this.aead !== null) {
      const nonce = this.random(this.aead.nonceSize);
      const sealed = this.aead.seal(nonce, body);
      const out = new Uint8Array(nonce.length + sealed.length);
      out.set(nonce, 0);
      out.set(sealed, nonce.length);
      return out;
    }
    return body.slice();
  }

  private drop(field: "shortPackets" | "inCsumErrors" | "decryptErrors" | "fecErrs"): Opened[] {
    this.counters[field]++;
    this.counters.inErrs++;
    return [];
  }

  /** Undo {@link seal}/{@link sealOob} for one received UDP payload; garbage gives `[]` and is counted. */
  open(datagram: Uint8Array): Opened[] {
    let data: Uint8Array;
    if (this.block !== null) {
      if (datagram.length < CRYPT_HEADER_SIZE) return this.drop("shortPackets");
      const plain = this.block.decrypt(datagram);
      data = plain.subarray(CRYPT_HEADER_SIZE);
      const want = new DataView(plain.buffer, plain.byteOffset).getUint32(NONCE_SIZE, true);
      if (crc32(data) !== want) return this.drop("inCsumErrors");
    } else if (this.aead !== null) {
      const ns = this.aead.nonceSize;
      if (datagram.length < ns + this.aead.overhead) return this.drop("shortPackets");
      const opened = this.aead.open(datagram.subarray(0, ns), datagram.subarray(ns));
      if (opened === null) return this.drop("decryptErrors");
      data = opened;
    } else {
      data = datagram;
    }
    const n = data.length;
    if (n < MIN_PACKET_SIZE) return this.drop("shortPackets");
    const v = new DataView(data.buffer, data.byteOffset, data.byteLength);
    const flag = v.getUint16(4, true);
    if (flag === TYPE_DATA || flag === TYPE_PARITY) {
      this.peer = "fec"; // (also after plain packets: an FEC shard settles it)
      return this.openFec(data, v, flag);
    }
    if (flag === TYPE_OOB) {
      if (v.getUint16(FEC_HEADER_SIZE, true) !== n - FEC_HEADER_SIZE) return this.drop("fecErrs");
      this.counters.oobIn++;
      return [[KIND_OOB, data.slice(FEC_HEADER_SIZE_PLUS2 + 4)]];
    }
    if (this.peer === "unknown") this.peer = "plain"; // until an FEC shard comes
    return [[KIND_KCP, data]];
  }

  private openFec(data: Uint8Array, v: DataView, flag: number): Opened[] {
    const out: Opened[] = [];
    if (flag === TYPE_DATA) {
      if (v.getUint16(FEC_HEADER_SIZE, true) !== data.length - FEC_HEADER_SIZE) return this.drop("fecErrs");
      out.push([KIND_KCP, data.subarray(FEC_HEADER_SIZE_PLUS2)]);
    }
    // FEC off here but the peer sends shards: a (1, 1) decoder that tunes itself, as kcp-go
    if (this.dec === null) this.dec = new FecDecoder(1, 1, this.counters);
    try {
      for (const p of this.dec.decode(data)) out.push([KIND_KCP_RECOVERED, p]);
    } catch {
      this.counters.fecErrs++; // a codec bug must not take the receive path down
    }
    return out;
  }
}
