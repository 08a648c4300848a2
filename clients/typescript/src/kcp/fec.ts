/**
 * kcp-go compatible FEC shards (docs/wire-format/fec.md): encoder and decoder. Port of the Python
 * `kcp/fec.py`, auto-tuning included.
 *
 * ```text
 * data shard   : seqid u32 | flag u16 = 0xf1 | size u16 = len(kcp packet) + 2 | kcp packet
 * parity shard : seqid u32 | flag u16 = 0xf2 | parity bytes
 * ```
 */
import { KcpUsageError } from "./errors.js";
import { MAX_TOTAL_SHARDS, ReedSolomon } from "./rs.js";

/** seqid + flag. */
export const FEC_HEADER_SIZE = 6;
/** FEC header plus a data shard's size field. */
export const FEC_HEADER_SIZE_PLUS2 = 8;
/** Flag of a data shard. */
export const TYPE_DATA = 0xf1;
/** Flag of a parity shard. */
export const TYPE_PARITY = 0xf2;
/** Flag of an out-of-band packet. */
export const TYPE_OOB = 0xf3;
/** The seqid of OOB packets (never a valid FEC seqid). */
export const OOB_SEQID = 0xffffffff;
/** kcp-go's maxFECEncodeLatency (ms): parity only for data shards less than this far apart. */
export const MAX_FEC_ENCODE_LATENCY = 500;
/** Groups older than this many groups behind the newest are dropped. */
export const MAX_SHARD_SETS = 3;
const AUTOTUNE_SAMPLES = 258;

/** Counters the decoder adds to. */
export interface FecCounters {
  /** Data shards rebuilt. */
  fecRecovered: number;
  /** Bad shards (flag, seqid, size). */
  fecErrs: number;
  /** Parity shards received. */
  fecParityShards: number;
  /** Groups dropped before they could be decoded. */
  fecShortShards: number;
  /** Packets too short. */
  shortPackets: number;
}

/** The seqid modulus: the largest multiple of `n` not above 0xFFFFFFFF. */
export function paws(n: number): number {
  return Math.floor(0xffffffff / n) * n;
}

/** Validate FEC parameters; true when FEC is on (both counts positive). */
export function fecEnabled(dataShards: number, parityShards: number): boolean {
  if (!Number.isInteger(dataShards) || !Number.isInteger(parityShards) || dataShards < 0 || parityShards < 0) {
    throw new KcpUsageError(`FEC shard counts must be non-negative integers, got (${dataShards}, ${parityShards})`);
  }
  if (parityShards === 0) return false;
  if (dataShards === 0) throw new KcpUsageError(`FEC with ${parityShards} parity shards needs at least 1 data shard`);
  if (dataShards + parityShards > MAX_TOTAL_SHARDS) {
    throw new KcpUsageError(`FEC supports at most ${MAX_TOTAL_SHARDS} shards per group, got ${dataShards} + ${parityShards}`);
  }
  return true;
}

function itimediff(later: number, earlier: number): number {
  return (later - earlier) | 0;
}

const codecs = new Map<string, ReedSolomon>();
function getCodec(d: number, p: number): ReedSolomon {
  const key = `${d},${p}`;
  let c = codecs.get(key);
  if (c === undefined) {
    c = new ReedSolomon(d, p);
    codecs.set(key, c);
  }
  return c;
}

/** Turns KCP packets into data shards, and adds the parity shards at each group's end. */
export class FecEncoder {
  private readonly codec: ReedSolomon;
  private readonly paws: number;
  private next = 0;
  private shards: Uint8Array[] = [];
  private maxLen = 0;
  private lastTs: number | null = null;

  /** `rto`: the continuity limit in ms (kcp-go's 500). */
  constructor(
    readonly dataShards: number,
    readonly parityShards: number,
    readonly rto: number = MAX_FEC_ENCODE_LATENCY,
  ) {
    if (!fecEnabled(dataShards, parityShards)) throw new KcpUsageError("FEC encoder needs data and parity shards");
    this.codec = getCodec(dataShards, parityShards);
    this.paws = paws(dataShards + parityShards);
  }

  /** The seqid the next shard will carry. */
  get nextSeqid(): number {
    return this.next;
  }

  /**
   * Seal one KCP packet as a data shard; returns it, followed by the parity shards if it ends a group. `now`: a non-wrapping ms clock.
   * `withParity = false` skips a group's parity as the continuity limit does (its seqids are still consumed): the
   * the pipeline (pipeline.ts) sends none before the peer has shown it runs FEC.
   */
  encode(packet: Uint8Array, now: number, withParity = true): Uint8Array[] {
    const n = packet.length;
    if (n > 0xffff - 2) throw new KcpUsageError(`packet too long for the FEC size field (${n} bytes)`);
    let seq = this.next;
    const shard = new Uint8Array(FEC_HEADER_SIZE_PLUS2 + n);
    const v = new DataView(shard.buffer);
    v.setUint32(0, seq, true);
    v.setUint16(4, TYPE_DATA, true);
    v.setUint16(6, n + 2, true);
    shard.set(packet, 8);
    seq++;
    if (seq >= this.paws) seq = 0;
    this.next = seq;
    this.shards.push(shard);
    if (n > this.maxLen) this.maxLen = n;
    const last = this.lastTs;
    this.lastTs = now;
    if (this.shards.length < this.dataShards) return [shard];
    const size = this.maxLen + 2;
    const group = this.shards;
    this.shards = [];
    this.maxLen = 0;
    if (!withParity || last === null || now - last >= this.rto) {
      this.next = (seq + this.parityShards) % this.paws;
      return [shard];
    }
    const out = [shard];
    for (const parity of this.codec.encode(group, size, FEC_HEADER_SIZE)) {
      const p = new Uint8Array(FEC_HEADER_SIZE + parity.length);
      const pv = new DataView(p.buffer);
      pv.setUint32(0, seq, true);
      pv.setUint16(4, TYPE_PARITY, true);
      p.set(parity, FEC_HEADER_SIZE);
      out.push(p);
      seq++;
      if (seq >= this.paws) seq = 0;
    }
    this.next = seq;
    return out;
  }
}

/** Length of the first complete run of `bit` in seqid order, or -1 (kcp-go's autotune). */
function findPeriod(ordered: [boolean, number][], bit: boolean): number {
  let left = -1;
  let [prevBit, prevSeq] = ordered[0]!;
  for (let idx = 1; idx < ordered.length; idx++) {
    const [curBit, curSeq] = ordered[idx]!;
    if (((prevSeq + 1) >>> 0) !== curSeq) return -1;
    if (prevBit !== bit && curBit === bit) {
      left = idx;
      break;
    }
    prevBit = curBit;
    prevSeq = curSeq;
  }
  if (left < 0) return -1;
  [prevBit, prevSeq] = ordered[left]!;
  for (let idx = left + 1; idx < ordered.length; idx++) {
    const [curBit, curSeq] = ordered[idx]!;
    if (((prevSeq + 1) >>> 0) !== curSeq) return -1;
    if (prevBit === bit && curBit !== bit) return idx - left;
    prevBit = curBit;
    prevSeq = curSeq;
  }
  return -1;
}

/**
 * Collects shards by group and rebuilds lost data shards; {@link decode} returns only the
 * recovered KCP packets (data shards' packets go to KCP directly). Bounded: at most
 * {@link MAX_SHARD_SETS} + 1 groups are held. Never throws on network input.
 */
export class FecDecoder {
  /** Current data shard count (may change by auto-tuning). */
  dataShards = 0;
  /** Current parity shard count. */
  parityShards = 0;
  private n = 0;
  private codec!: ReedSolomon;
  private paws = 0;
  private sets = new Map<number, Map<number, Uint8Array> | null>();
  private newest: number | null = null;
  private samples: [boolean, number][] = [];
  private shouldTune = false;

  /** A decoder for (dataShards, parityShards), adding to `counters`. */
  constructor(
    dataShards: number,
    parityShards: number,
    readonly counters: FecCounters,
  ) {
    if (!fecEnabled(dataShards, parityShards)) throw new KcpUsageError("FEC decoder needs data and parity shards");
    this.configure(dataShards, parityShards);
  }

  private configure(d: number, p: number): void {
    this.dataShards = d;
    this.parityShards = p;
    this.n = d + p;
    this.codec = getCodec(d, p);
    this.paws = paws(this.n);
    this.sets = new Map();
    this.newest = null;
  }

  /** Groups held (collecting or remembered as decoded). */
  get pendingGroups(): number {
    return this.sets.size;
  }

  /** Take one received shard (header included); returns the KCP packets it let us recover. */
  decode(shard: Uint8Array): Uint8Array[] {
    const c = this.counters;
    if (shard.length < FEC_HEADER_SIZE_PLUS2) {
      c.shortPackets++;
      return [];
    }
    const v = new DataView(shard.buffer, shard.byteOffset, shard.byteLength);
    const seqid = v.getUint32(0, true);
    const flag = v.getUint16(4, true);
    const isData = flag === TYPE_DATA;
    if (!isData && flag !== TYPE_PARITY) {
      c.fecErrs++;
      return [];
    }
    this.samples.push([isData, seqid]);
    if (this.samples.length > AUTOTUNE_SAMPLES) this.samples.shift();
    if (seqid >= this.paws) {
      c.fecErrs++;
      return [];
    }
    const n = this.n;
    const gid = Math.floor(seqid / n);
    const idx = seqid % n;
    if (idx < this.dataShards !== isData) {
      if (!this.shouldTune) c.fecErrs++;
      this.shouldTune = true;
    }
    if (this.shouldTune) {
      this.tune();
      return [];
    }
    if (!isData) c.fecParityShards++;
    const recovered: Uint8Array[] = [];
    let group = this.sets.get(gid);
    if (group === null) return recovered;
    if (group === undefined) {
      group = new Map();
      this.sets.set(gid, group);
    } else if (group.has(idx)) {
      return recovered;
    }
    group.set(idx, shard.slice());
    if (group.size >= this.dataShards) {
      this.sets.set(gid, null);
      this.decodeGroup(group, recovered);
    }
    const newest = this.newest;
    if (newest === null) {
      this.newest = gid;
    } else if (gid !== newest && itimediff(gid * n, newest * n) > 0) {
      this.newest = gid;
      this.discard(gid);
    } else if (itimediff(newest * n, gid * n) > MAX_SHARD_SETS * n) {
      this.discard(newest);
    }
    return recovered;
  }

  private decodeGroup(group: Map<number, Uint8Array>, out: Uint8Array[]): void {
    const ds = this.dataShards;
    let nData = 0;
    for (const i of group.keys()) if (i < ds) nData++;
    if (nData === ds) return;
    const slots: (Uint8Array | null)[] = new Array<Uint8Array | null>(this.n).fill(null);
    let longest = 0;
    for (const [i, pkt] of group) {
      slots[i] = pkt;
      if (pkt.length > longest) longest = pkt.length;
    }
    let rebuilt: Map<number, Uint8Array>;
    try {
      rebuilt = this.codec.reconstructData(slots, longest - FEC_HEADER_SIZE, FEC_HEADER_SIZE);
    } catch {
      this.counters.fecErrs++;
      return;
    }
    for (const i of [...rebuilt.keys()].sort((a, b) => a - b)) {
      const r = rebuilt.get(i)!;
      const sz = r.length >= 2 ? r[0]! | (r[1]! << 8) : 0;
      if (sz >= 2 && sz <= r.length) {
        out.push(r.slice(2, sz));
        this.counters.fecRecovered++;
      } else {
        this.counters.fecErrs++;
      }
    }
  }

  private discard(newest: number): void {
    const n = this.n;
    const limit = MAX_SHARD_SETS * n;
    const top = newest * n;
    for (const [g, set] of [...this.sets]) {
      if (itimediff(top, g * n) > limit) {
        this.sets.delete(g);
        if (set !== null) this.counters.fecShortShards++;
      }
    }
  }

  private tune(): void {
    const samples = this.samples;
    if (samples.length < 3) return;
    const seqs = samples.map((s) => s[1]);
    let ordered: [boolean, number][];
    if (Math.max(...seqs) - Math.min(...seqs) < 0x80000000) {
      ordered = [...samples].sort((a, b) => a[1] - b[1]);
    } else {
      const base = samples[samples.length - 1]![1] - 0x80000000;
      ordered = [...samples].sort((a, b) => ((a[1] - base) >>> 0) - ((b[1] - base) >>> 0));
    }
    const ds = findPeriod(ordered, true);
    const ps = findPeriod(ordered, false);
    if (ds > 0 && ps > 0 && ds + ps < 256) {
      if (ds !== this.dataShards || ps !== this.parityShards) {
        for (const g of this.sets.values()) if (g !== null) this.counters.fecShortShards++;
        this.configure(ds, ps);
      }
      this.shouldTune = false;
    }
  }
}
