/** Small byte helpers of the secure layer (big-endian integers, concatenation, comparison). */
import { joinBytes } from "../bytes.js";

/** A source of random bytes: `rng(n)` returns `n` fresh bytes. Injected so that tests are deterministic. */
export type Rng = (n: number) => Uint8Array;

/** The bytes of `parts`, one after the other (always a new array). */
export function concat(...parts: Uint8Array[]): Uint8Array {
  return joinBytes(parts);
}

/** True if `a` and `b` hold the same bytes (constant time in the length of `a`). */
export function equal(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= (a[i] as number) ^ (b[i] as number);
  return d === 0;
}

/** `n` as 2 big-endian bytes. */
export function u16be(n: number): Uint8Array {
  return Uint8Array.of((n >>> 8) & 0xff, n & 0xff);
}

/** `n` (0 <= n < 2^53) as 8 big-endian bytes. */
export function u64be(n: number): Uint8Array {
  const out = new Uint8Array(8);
  const hi = Math.floor(n / 0x100000000);
  const lo = n >>> 0;
  new DataView(out.buffer).setUint32(0, hi);
  new DataView(out.buffer).setUint32(4, lo);
  return out;
}

/** The big-endian unsigned integer in `b[pos..pos+8)` (exact below 2^53, the packet numbers we use). */
export function readU64be(b: Uint8Array, pos: number): number {
  const dv = new DataView(b.buffer, b.byteOffset + pos, 8);
  return dv.getUint32(0) * 0x100000000 + dv.getUint32(4);
}

/** The big-endian u32 at `b[pos]`. */
export function readU32be(b: Uint8Array, pos: number): number {
  return new DataView(b.buffer, b.byteOffset + pos, 4).getUint32(0);
}

/** The big-endian u16 at `b[pos]`. */
export function readU16be(b: Uint8Array, pos: number): number {
  return (((b[pos] as number) << 8) | (b[pos + 1] as number)) >>> 0;
}

/** UTF-8 bytes of `s`. */
export function utf8(s: string): Uint8Array {
  return new TextEncoder().encode(s);
}

/** `s` from UTF-8 (invalid sequences become U+FFFD, as Python's "replace"). */
export function fromUtf8(b: Uint8Array): string {
  return new TextDecoder("utf-8", { fatal: false }).decode(b);
}

/** Lower-case hex of `b`. */
export function toHex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.length).toString("hex");
}

/** Bytes of a hex string. */
export function fromHex(s: string): Uint8Array {
  return new Uint8Array(Buffer.from(s, "hex"));
}
