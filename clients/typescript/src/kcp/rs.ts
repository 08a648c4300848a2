/**
 * Reed–Solomon erasure code over GF(2^8) with klauspost/reedsolomon's default matrix, as
 * docs/wire-format/fec.md describes it (polynomial 0x11D, generator 2; Vandermonde `V[r][c] = r^c`
 * times the inverse of its top square, so the code is systematic). Port of the Python `kcp/rs.py`.
 */
import { KcpUsageError } from "./errors.js";

/** GF(2^8) has 256 elements: at most 256 shards per group. */
export const MAX_TOTAL_SHARDS = 256;

const EXP = new Uint8Array(510);
const LOG = new Uint8Array(256);
{
  let x = 1;
  for (let i = 0; i < 255; i++) {
    EXP[i] = x;
    LOG[x] = i;
    x <<= 1;
    if (x & 0x100) x ^= 0x11d;
  }
  for (let i = 255; i < 510; i++) EXP[i] = EXP[i - 255]!;
}

/** Multiply two field elements. */
export function gfMul(a: number, b: number): number {
  if (a === 0 || b === 0) return 0;
  return EXP[LOG[a]! + LOG[b]!]!;
}

function gfInv(a: number): number {
  if (a === 0) throw new RangeError("0 has no inverse in GF(2^8)");
  return EXP[255 - LOG[a]!]!;
}

function gfExp(a: number, n: number): number {
  if (n === 0) return 1;
  if (a === 0) return 0;
  return EXP[(LOG[a]! * n) % 255]!;
}

const mulTables = new Map<number, Uint8Array>();
function mulTable(c: number): Uint8Array {
  let t = mulTables.get(c);
  if (t === undefined) {
    t = new Uint8Array(256);
    for (let v = 1; v < 256; v++) t[v] = gfMul(c, v);
    mulTables.set(c, t);
  }
  return t;
}

type Matrix = number[][];

/** Invert a square matrix over GF(2^8) (Gauss–Jordan); throws RangeError if it is singular. */
export function invertMatrix(m: Matrix): Matrix {
  const n = m.length;
  const work = m.map((row, i) => [...row, ...Array.from({ length: n }, (_, j) => (i === j ? 1 : 0))]);
  for (let col = 0; col < n; col++) {
    let pivot = -1;
    for (let r = col; r < n; r++) {
      if (work[r]![col]) {
        pivot = r;
        break;
      }
    }
    if (pivot < 0) throw new RangeError("matrix is singular");
    if (pivot !== col) [work[col], work[pivot]] = [work[pivot]!, work[col]!];
    let prow = work[col]!;
    if (prow[col] !== 1) {
      const inv = gfInv(prow[col]!);
      prow = work[col] = prow.map((v) => gfMul(v, inv));
    }
    for (let r = 0; r < n; r++) {
      if (r === col) continue;
      const f = work[r]![col]!;
      if (f) work[r] = work[r]!.map((v, j) => v ^ gfMul(f, prow[j]!));
    }
  }
  return work.map((row) => row.slice(n));
}

function matMul(a: Matrix, b: Matrix): Matrix {
  return a.map((row) =>
    b[0]!.map((_, j) => {
      let acc = 0;
      row.forEach((v, k) => {
        acc ^= gfMul(v, b[k]![j]!);
      });
      return acc;
    }),
  );
}

/** A systematic (data, parity) erasure code with klauspost's default coding matrix. */
export class ReedSolomon {
  /** The `total × data` coding matrix (identity on top). */
  readonly matrix: Matrix;
  private readonly invCache = new Map<string, Matrix>();

  /** Needs ≥ 1 data and ≥ 1 parity shard, at most 256 in all. */
  constructor(
    readonly dataShards: number,
    readonly parityShards: number,
  ) {
    if (dataShards <= 0 || parityShards <= 0 || dataShards + parityShards > MAX_TOTAL_SHARDS) {
      throw new KcpUsageError(`Reed-Solomon needs 1..256 shards with at least 1 data and 1 parity, got (${dataShards}, ${parityShards})`);
    }
    const total = dataShards + parityShards;
    const vm: Matrix = [];
    for (let r = 0; r < total; r++) vm.push(Array.from({ length: dataShards }, (_, c) => gfExp(r, c)));
    this.matrix = matMul(vm, invertMatrix(vm.slice(0, dataShards)));
  }

  private static combine(row: number[], shards: Uint8Array[], size: number, skip: number): Uint8Array {
    const out = new Uint8Array(size);
    row.forEach((c, k) => {
      if (!c) return;
      const s = shards[k]!;
      const end = Math.min(s.length, skip + size);
      if (c === 1) {
        for (let i = skip; i < end; i++) out[i - skip]! ^= s[i]!;
      } else {
        const t = mulTable(c);
        for (let i = skip; i < end; i++) out[i - skip]! ^= t[s[i]!]!;
      }
    });
    return out;
  }

  /** The parity shards (each `size` bytes) of the data shards `data[k].subarray(skip)`, zero-padded to `size`. */
  encode(data: Uint8Array[], size: number, skip = 0): Uint8Array[] {
    if (data.length !== this.dataShards) throw new KcpUsageError(`expected ${this.dataShards} data shards, got ${data.length}`);
    const out: Uint8Array[] = [];
    for (let p = 0; p < this.parityShards; p++) out.push(ReedSolomon.combine(this.matrix[this.dataShards + p]!, data, size, skip));
    return out;
  }

  /**
   * Rebuild the missing data shards of a group: `shards` has one slot per shard (null: missing);
   * a present shard is `shards[i].subarray(skip)` zero-padded to `size`. Returns index → rebuilt shard.
   * Throws RangeError with fewer than `dataShards` shards.
   */
  reconstructData(shards: (Uint8Array | null)[], size: number, skip = 0): Map<number, Uint8Array> {
    const ds = this.dataShards;
    const out = new Map<number, Uint8Array>();
    const missing: number[] = [];
    for (let i = 0; i < ds; i++) if (shards[i] === null || shards[i] === undefined) missing.push(i);
    if (!missing.length) return out;
    const valid: number[] = [];
    shards.forEach((s, i) => {
      if (s && valid.length < ds) valid.push(i);
    });
    if (valid.length < ds) throw new RangeError(`too few shards to reconstruct: ${valid.length} < ${ds}`);
    const key = valid.join(",");
    let inv = this.invCache.get(key);
    if (inv === undefined) {
      inv = invertMatrix(valid.map((i) => this.matrix[i]!));
      if (this.invCache.size >= 64) this.invCache.delete(this.invCache.keys().next().value as string);
      this.invCache.set(key, inv);
    }
    const sub = valid.map((i) => shards[i]!);
    for (const m of missing) out.set(m, ReedSolomon.combine(inv[m]!, sub, size, skip));
    return out;
  }
}
