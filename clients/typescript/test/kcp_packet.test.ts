import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { newCounters, type Counters } from "../src/kcp/counters.js";
import { crc32, deriveKey, newCrypt } from "../src/kcp/crypt.js";
import { FecDecoder, FecEncoder } from "../src/kcp/fec.js";
import { defaultRandom, KIND_KCP, KIND_KCP_RECOVERED, KIND_OOB, Pipeline } from "../src/kcp/pipeline.js";
import { ReedSolomon } from "../src/kcp/rs.js";
import { hex, REPO, runPython, unhex } from "./helpers/python.js";

interface CipherVec {
  name: string;
  derived_key: string;
  key_used: string;
  vectors: { plain: string; cipher: string; nonce?: string }[];
}
interface FecVec {
  datashards: number;
  parityshards: number;
  shards: { kind: string; seqid: number; input_kcp_packet?: string; shard: string }[];
}
interface FullVec {
  crypt: string;
  datashards: number;
  parityshards: number;
  packets: { wire: string; plain: string; nonce?: string; kind: string }[];
}
const VECTORS = JSON.parse(readFileSync(path.join(REPO, "tests", "interop", "vectors", "kcp-go.json"), "utf8")) as {
  key: string;
  ciphers: CipherVec[];
  fec: FecVec[];
  full_packets: FullVec[];
};
const SUPPORTED = ["aes", "aes-128", "aes-192", "aes-128-gcm", "none", "null"];

test("crypt: kcptun's key derivation and kcp-go's cipher outputs (known-answer vectors)", () => {
  const key = deriveKey(VECTORS.key);
  let checked = 0;
  for (const c of VECTORS.ciphers.filter((c) => SUPPORTED.includes(c.name) && c.name !== "null")) {
    assert.equal(hex(key), c.derived_key);
    const crypt = newCrypt(c.name, key);
    assert.ok(crypt !== null);
    for (const v of c.vectors) {
      if (crypt.kind === "aead") {
        assert.equal(hex(crypt.seal(unhex(v.nonce!), unhex(v.plain))), v.cipher, c.name);
        assert.equal(hex(crypt.open(unhex(v.nonce!), unhex(v.cipher))!), v.plain);
      } else {
        assert.equal(hex(crypt.encrypt(unhex(v.plain))), v.cipher, c.name);
        assert.equal(hex(crypt.decrypt(unhex(v.cipher))), v.plain);
      }
      checked++;
    }
  }
  assert.equal(checked, 10);
  assert.equal(crc32(new TextEncoder().encode("123456789")), 0xcbf43926);
  assert.equal(newCrypt("null", key), null);
  assert.throws(() => newCrypt("rot13", key), /unknown or unsupported cipher/);
});

test("fec: kcp-go's (3,2) and (10,3) shards, byte for byte; the decoder rebuilds any lost data shards", () => {
  assert.deepEqual(new ReedSolomon(2, 1).matrix[2], [3, 2]);
  assert.deepEqual(new ReedSolomon(10, 3).matrix[10], [129, 150, 175, 184, 210, 196, 254, 232, 3, 2]);
  for (const vec of VECTORS.fec) {
    const enc = new FecEncoder(vec.datashards, vec.parityshards);
    const got: string[] = [];
    let now = 1000;
    for (const s of vec.shards) if (s.input_kcp_packet) got.push(...enc.encode(unhex(s.input_kcp_packet), now++).map(hex));
    assert.deepEqual(got, vec.shards.map((s) => s.shard));
    // drop the first `parityshards` data shards: the decoder gets them back
    const counters = newCounters();
    const dec = new FecDecoder(vec.datashards, vec.parityshards, counters);
    const recovered: string[] = [];
    for (const s of vec.shards.slice(vec.parityshards)) recovered.push(...dec.decode(unhex(s.shard)).map(hex));
    assert.deepEqual(recovered, vec.shards.slice(0, vec.parityshards).map((s) => s.input_kcp_packet));
    assert.equal(counters.fecRecovered, vec.parityshards);
  }
});

test("packet: recorded kcp-go session packets re-encrypt to the same wire bytes and open to their KCP packets", () => {
  let checked = 0;
  for (const fp of VECTORS.full_packets.filter((f) => SUPPORTED.includes(f.crypt))) {
    const crypt = newCrypt(fp.crypt, deriveKey(VECTORS.key));
    const counters = newCounters();
    const pipe = new Pipeline(crypt, fp.datashards, fp.parityshards, counters);
    for (const p of fp.packets) {
      const plain = unhex(p.plain);
      let body = plain;
      if (crypt === null) assert.equal(p.wire, p.plain);
      else if (crypt.kind === "aead") assert.equal(hex(crypt.seal(unhex(p.nonce!), plain)), p.wire.slice(24));
      else {
        assert.equal(hex(crypt.encrypt(plain)), p.wire);
        body = plain.subarray(20);
      }
      const opened = pipe.open(unhex(p.wire));
      if (p.kind === "kcp") assert.deepEqual(opened.map(([k, d]) => [k, hex(d)]), [[KIND_KCP, hex(body)]]);
      else if (p.kind === "fec-data") assert.equal(hex(opened[0]![1]), hex(body.subarray(8)));
      checked++;
    }
    assert.equal(counters.inErrs, 0, fp.crypt);
  }
  assert.ok(checked >= 12, `${checked}`);
});

interface PacketTrace {
  crypt: string;
  fec: [number, number];
  overhead: number;
  steps: { op: string; data: string; now: number; out: string[]; deliver: string[]; opened: [number, string][][] }[];
  tx: Record<string, number>;
  rx: Record<string, number>;
}

function counterRng(): (n: number) => Uint8Array {
  let c = 0;
  return (n) => {
    const out = new Uint8Array(n);
    for (let j = 0; j < n; j++) out[j] = (c + j) & 0xff;
    c += n;
    return out;
  };
}

const PY_COUNTERS: Record<string, keyof Counters> = {
  short_packets: "shortPackets",
  in_csum_errors: "inCsumErrors",
  decrypt_errors: "decryptErrors",
  fec_errs: "fecErrs",
  fec_recovered: "fecRecovered",
  fec_parity_shards: "fecParityShards",
  fec_short_shards: "fecShortShards",
  oob_in: "oobIn",
  oob_out: "oobOut",
  in_errs: "inErrs",
};

test("packet: the pipeline seals and opens exactly as the Python pipeline (6 ciphers x 3 FEC settings, lossy link, garbage)", async () => {
  for (const seed of [1, 2]) {
    const traces = JSON.parse(await runPython(["tests/clients/kcp_packet_trace.py", String(seed)])) as PacketTrace[];
    assert.equal(traces.length, 18);
    for (const t of traces) {
      const key = deriveKey("it's a secrect");
      const txc = newCounters();
      const rxc = newCounters();
      // peers known to run the FEC, as the Python trace's (parity from the first group)
      const tx = new Pipeline(newCrypt(t.crypt, key), t.fec[0], t.fec[1], txc, counterRng(), true);
      const rx = new Pipeline(newCrypt(t.crypt, key), t.fec[0], t.fec[1], rxc, counterRng(), true);
      assert.equal(tx.overhead, t.overhead);
      for (const [i, s] of t.steps.entries()) {
        const where = `${t.crypt} ${t.fec} step ${i}`;
        const out = s.op === "oob" ? [tx.sealOob(unhex(s.data), 0x11223344)] : tx.seal(unhex(s.data), s.now);
        assert.deepEqual(out.map(hex), s.out, where);
        const opened = s.deliver.map((d) => rx.open(unhex(d)).map(([k, p]) => [k, hex(p)]));
        assert.deepEqual(opened, s.opened, where);
      }
      for (const [py, ts] of Object.entries(PY_COUNTERS)) {
        assert.equal(txc[ts], t.tx[py], `${t.crypt} ${t.fec} tx ${py}`);
        assert.equal(rxc[ts], t.rx[py], `${t.crypt} ${t.fec} rx ${py}`);
      }
    }
  }
});

test("packet: OOB datagrams round-trip; kinds are told apart", () => {
  const key = deriveKey("k");
  const a = new Pipeline(newCrypt("aes-128-gcm", key), 10, 3, newCounters());
  const b = new Pipeline(newCrypt("aes-128-gcm", key), 10, 3, newCounters());
  const oob = a.sealOob(new Uint8Array([1, 2, 3]), 7);
  assert.deepEqual(b.open(oob), [[KIND_OOB, new Uint8Array([1, 2, 3])]]);
  assert.deepEqual(b.open(a.sealOob(new Uint8Array(0), 7)), [[KIND_OOB, new Uint8Array(0)]]);
  assert.equal(KIND_KCP_RECOVERED, 2);
  assert.equal(a.overhead, 36);
  assert.equal(new Pipeline(newCrypt("aes", key), 0, 0, newCounters()).overhead, 20);
});

/** A KCP-like packet: a PUSH header with `sn`, then `n` bytes of `fill`. */
function kcpPacket(sn: number, n: number, fill = sn): Uint8Array {
  const p = new Uint8Array(24 + n).fill(fill & 0xff);
  const v = new DataView(p.buffer);
  v.setUint32(0, 0x11223344, true);
  p[4] = 81;
  p[5] = 0;
  v.setUint16(6, 128, true);
  v.setUint32(8, 0, true);
  v.setUint32(12, sn, true);
  v.setUint32(16, 0, true);
  v.setUint32(20, n, true);
  return p;
}

const flagOf = (d: Uint8Array): number => new DataView(d.buffer, d.byteOffset).getUint16(4, true);

test("packet: a compat pipeline sends parity only once the peer has sent an FEC shard; the skipped group's seqids stay consumed", () => {
  const key = deriveKey("k");
  const tx = new Pipeline(newCrypt("aes", key), 3, 2, newCounters());
  const peer = new Pipeline(newCrypt("aes", key), 3, 2, newCounters(), defaultRandom, true);
  const packets = Array.from({ length: 6 }, (_, i) => kcpPacket(i, 60 + i));
  const before = packets.slice(0, 3).flatMap((p, i) => tx.seal(p, i));
  assert.equal(before.length, 3); // a whole group: no parity
  const got = before.flatMap((w) => peer.open(w)).filter(([k]) => k === KIND_KCP).map(([, p]) => hex(p));
  assert.deepEqual(got, packets.slice(0, 3).map(hex));
  for (const w of peer.seal(kcpPacket(0, 40), 0)) assert.deepEqual(tx.open(w).map(([k]) => k), [KIND_KCP]);
  const after = packets.slice(3).flatMap((p, i) => tx.seal(p, 10 + i));
  assert.equal(after.length, 5); // the next group (seqids from 5): 3 data shards and 2 parity
  const rebuilt = after.filter((_, i) => i !== 1).flatMap((w) => peer.open(w)).map(([, p]) => hex(p));
  assert.deepEqual(rebuilt.sort(), packets.slice(3).map(hex).sort()); // the lost shard comes back from the parity
});

test("packet: a compat peer that sends plain packets (kcp-go without FEC) gets plain packets, counted", () => {
  const counters = newCounters();
  const tx = new Pipeline(null, 10, 3, counters);
  const peer = new Pipeline(null, 0, 0, newCounters());
  const first = kcpPacket(0, 100);
  const [wire, ...rest] = tx.seal(first, 0);
  assert.equal(rest.length, 0);
  assert.equal(flagOf(wire!), 0xf1); // a data shard alone
  assert.equal(new DataView(wire!.buffer).getUint32(0, true), 0); // seqid 0
  assert.deepEqual(peer.open(wire!).filter(([k]) => k === KIND_KCP).map(([, p]) => hex(p)), [hex(first)]);
  for (const w of peer.seal(kcpPacket(0, 40), 0)) tx.open(w);
  const packets = Array.from({ length: 20 }, (_, i) => kcpPacket(1 + i, 200));
  assert.deepEqual(packets.flatMap((p, i) => tx.seal(p, i)).map(hex), packets.map(hex)); // plain, no parity
  assert.equal(counters.fecPlainOut, 20);
});

test("packet: a plain packet before the peer's first shard (a kcprpc listener's admission challenge) gives way to it", () => {
  const counters = newCounters();
  const tx = new Pipeline(null, 3, 2, counters);
  const peer = new Pipeline(null, 3, 2, newCounters(), defaultRandom, true);
  assert.equal(tx.seal(kcpPacket(0, 50), 0).length, 1); // a data shard alone, seqid 0
  const challenge = kcpPacket(0, 0);
  assert.deepEqual(tx.open(challenge).map(([k, p]) => [k, hex(p)]), [[KIND_KCP, hex(challenge)]]);
  const plain = tx.seal(kcpPacket(1, 50), 1);
  assert.equal(plain.length, 1);
  assert.notEqual(flagOf(plain[0]!), 0xf1);
  for (const w of peer.seal(kcpPacket(0, 40), 0)) tx.open(w);
  assert.equal(tx.seal(kcpPacket(2, 50), 2).length, 1); // seqid 1
  assert.equal(tx.seal(kcpPacket(3, 50), 3).length, 3); // seqid 2 ends the group: + 2 parity
  assert.equal(counters.fecPlainOut, 1);
});
