/**
 * The TypeScript secure client against our Python implementation, byte for byte: the Python
 * SecureClient and SecureServer run each scenario in memory (tests/clients/secure_vectors.py) with
 * a seeded randomness stream that this file reproduces; the TypeScript client, given the same
 * options and stream, must send exactly the bytes the Python client sent (the initiation, the
 * retry with its cookie, the suite retry, the key-confirming PING, data before and after a key
 * update), must make the same of every datagram the Python server sent, and end the same way
 * (the same error class and message for a wrong key, a PSK mismatch, a refusal).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { SecureClient, type SecureConnection, type SecureOptions, type SessionParams, publicKeyOf } from "../src/index.js";
import type { Rng } from "../src/secure/bytes.js";
import { hex, runPython, unhex } from "./helpers/python.js";

/** The Python script's `stream_rng`: SHA-256(seed | counter, 4 bytes big-endian), block after block. */
export function streamRng(seed: string): Rng {
  let buf = new Uint8Array(0);
  let i = 0;
  return (n: number) => {
    while (buf.length < n) {
      const ctr = Buffer.alloc(4);
      ctr.writeUInt32BE(i++);
      const block = createHash("sha256").update(Buffer.concat([Buffer.from(seed), ctr])).digest();
      const next = new Uint8Array(buf.length + 32);
      next.set(buf);
      next.set(block, buf.length);
      buf = next;
    }
    const out = buf.slice(0, n);
    buf = buf.slice(n);
    return out;
  };
}

const SERVER_PRIV = unhex("11".repeat(32));
const SERVER_PUB = publicKeyOf(SERVER_PRIV);
const OTHER_PUB = publicKeyOf(unhex("22".repeat(32)));
const CLIENT_PRIV = unhex("33".repeat(32));
const PSK = unhex("44".repeat(32));
const WRONG_PSK = unhex("55".repeat(32));
const PEER = "10.0.0.1:4000";

interface Scenario {
  name: string;
  client: Record<string, unknown>;
  server: Record<string, unknown>;
  client_seed: string;
  server_seed: string;
  peer: string;
  data?: string[];
  server_data?: string[];
  key_update?: boolean;
  close?: [number, string];
  goaway?: [number, string];
  tamper?: boolean;
}

type Step =
  | { op: "send"; hex: string; now: number }
  | { op: "recv"; hex: string; now: number; state?: string; payload?: string | null }
  | { op: "seal"; payload: string; hex: string; now: number }
  | { op: "update_keys"; now: number }
  | {
      op: "end";
      state: string;
      error?: string;
      message?: string;
      code?: number;
      conv?: number;
      remote_cid?: string;
      params?: { mtu: number; snd_wnd: number; rcv_wnd: number; fec: number[]; mux: number; suite: string; features: number };
      epoch?: number;
      conn_state?: string;
      close_code?: number | null;
      close_message?: string;
      goaway?: [number, string] | null;
    };

/** The TypeScript options equal to a scenario's Python client config. */
function tsOptions(c: Record<string, unknown>): SecureOptions {
  const o: SecureOptions = {};
  const b = (k: string): Uint8Array | undefined => (typeof c[k] === "string" ? unhex(c[k] as string) : undefined);
  const spk = b("server_public_key");
  if (spk) o.serverPublicKey = spk;
  const sk = b("static_key");
  if (sk) o.staticPrivateKey = sk;
  const psk = b("psk");
  if (psk) o.psk = psk;
  if (typeof c["passphrase"] === "string") o.passphrase = c["passphrase"];
  const token = b("token");
  if (token) o.token = token;
  const cp = b("cid_prefix");
  if (cp) o.cidPrefix = cp;
  if (typeof c["mtu"] === "number") o.mtu = c["mtu"];
  if (typeof c["snd_wnd"] === "number") o.sndWnd = c["snd_wnd"];
  if (typeof c["rcv_wnd"] === "number") o.rcvWnd = c["rcv_wnd"];
  if (Array.isArray(c["fec"])) o.fec = c["fec"] as [number, number];
  if (typeof c["fec_strict"] === "boolean") o.fecStrict = c["fec_strict"];
  if (Array.isArray(c["suites"])) o.suites = c["suites"] as ("aesgcm" | "chachapoly")[];
  if (typeof c["data_parts"] === "boolean") o.dataParts = c["data_parts"];
  if (typeof c["held_acks"] === "boolean") o.heldAcks = c["held_acks"];
  return o;
}

const base = { client_seed: "client-1", server_seed: "server-1", peer: PEER };
const DATA = ["00", "0102030405", "ff".repeat(1300)];
const SERVER_DATA = ["", "abcdef", "ee".repeat(900)];
const SCENARIOS: Scenario[] = [
  {
    ...base,
    name: "IKpsk2 AESGCM, anonymous client, data, key update, GOAWAY, CLOSE",
    client: { server_public_key: hex(SERVER_PUB) },
    server: { static_key: hex(SERVER_PRIV) },
    data: DATA,
    server_data: SERVER_DATA,
    key_update: true,
    tamper: true,
    goaway: [9, "draining"],
    close: [7, "maintenance window"],
  },
  {
    ...base,
    name: "IKpsk2 ChaChaPoly with a client identity, a PSK, a token, FEC 10/3, windows, worker byte",
    client: {
      server_public_key: hex(SERVER_PUB),
      static_key: hex(CLIENT_PRIV),
      psk: hex(PSK),
      token: "746f6b656e",
      suites: ["chachapoly"],
      fec: [10, 3],
      snd_wnd: 256,
      rcv_wnd: 512,
      mtu: 1350,
      cid_prefix: "07",
    },
    server: { static_key: hex(SERVER_PRIV), psk: hex(PSK), fec: [10, 3], snd_wnd: 128, rcv_wnd: 1024, cid_prefix: "03" },
    data: DATA,
    server_data: SERVER_DATA,
    key_update: true,
  },
  {
    ...base,
    name: "NNpsk0 passphrase (the quickstart mode), no DATA_PART and no held acks offered",
    client: { passphrase: "correct horse battery staple", data_parts: false, held_acks: false },
    server: { passphrase: "correct horse battery staple" },
    data: DATA,
    server_data: SERVER_DATA,
    close: [0, ""],
    tamper: true,
  },
  {
    ...base,
    name: "NNpsk0 with a RETRY cookie (server under load)",
    client: { psk: hex(PSK) },
    server: { psk: hex(PSK), always_retry: true },
    data: ["68656c6c6f"],
    server_data: ["776f726c64"],
  },
  {
    ...base,
    name: "suite refused, retried at once with the server's",
    client: { server_public_key: hex(SERVER_PUB) },
    server: { static_key: hex(SERVER_PRIV), suites: ["chachapoly"] },
    data: ["01"],
    server_data: ["02"],
  },
  {
    ...base,
    name: "FEC lowered to the server's policy; MTU and windows clamped",
    client: { psk: hex(PSK), fec: [1, 5], mtu: 1472, snd_wnd: 4096, rcv_wnd: 4096 },
    server: { psk: hex(PSK), fec: [10, 3], mtu: 1400 },
    data: ["01"],
  },
  { ...base, name: "wrong passphrase: WRONG_KEY hint", client: { passphrase: "a" }, server: { passphrase: "b" } },
  { ...base, name: "wrong pinned key: WRONG_KEY hint", client: { server_public_key: hex(OTHER_PUB) }, server: { static_key: hex(SERVER_PRIV) } },
  {
    ...base,
    name: "pinned key right, PSK wrong: PSK mismatch",
    client: { server_public_key: hex(SERVER_PUB), psk: hex(WRONG_PSK) },
    server: { static_key: hex(SERVER_PRIV), psk: hex(PSK) },
  },
  { ...base, name: "pinned key for a PSK-only server: NO_KEY_MODE hint", client: { server_public_key: hex(SERVER_PUB) }, server: { psk: hex(PSK) } },
  { ...base, name: "passphrase for a key-only server: NO_PSK_MODE hint", client: { psk: hex(PSK) }, server: { static_key: hex(SERVER_PRIV) } },
  { ...base, name: "MTU below the server's minimum: refused", client: { psk: hex(PSK), mtu: 1000 }, server: { psk: hex(PSK), min_mtu: 1300 } },
  { ...base, name: "strict FEC above the policy: refused", client: { psk: hex(PSK), fec: [1, 255], fec_strict: true }, server: { psk: hex(PSK), fec: [10, 3] } },
  { ...base, name: "no common mux version: refused", client: { psk: hex(PSK) }, server: { psk: hex(PSK), mux_versions: [3] } },
  {
    ...base,
    name: "the server's FEC the strict client cannot take: the client refuses the answer with a CLOSE",
    client: { psk: hex(PSK), fec: [0, 0], fec_strict: true },
    server: { psk: hex(PSK), fec: [10, 3], fec_strict: true },
  },
];

function replay(sc: Scenario, steps: Step[]): void {
  const client = new SecureClient(tsOptions(sc.client), { rng: streamRng(sc.client_seed), peer: sc.peer });
  let conn: SecureConnection | null = null;
  const outgoing: Uint8Array[] = [client.initiate(0)];
  const collect = (now: number): void => {
    outgoing.push(...client.datagramsToSend(now));
    if (conn) outgoing.push(...conn.datagramsToSend(now).map(([d]) => d));
  };
  for (const [i, s] of steps.entries()) {
    const where = `${sc.name}: step ${i} (${s.op})`;
    if (s.op === "send") {
      const d = outgoing.shift();
      assert.ok(d, `${where}: the TypeScript client sent nothing`);
      assert.equal(hex(d), s.hex, `${where}: datagram differs`);
    } else if (s.op === "recv") {
      if (conn === null) {
        conn = client.receive(unhex(s.hex), PEER, s.now);
        assert.equal(client.state, s.state, `${where}: state`);
      } else {
        const got: Uint8Array | null = conn.open(unhex(s.hex), PEER, s.now);
        assert.equal(got === null ? null : hex(got), s.payload ?? null, `${where}: payload`);
      }
      collect(s.now);
    } else if (s.op === "seal") {
      assert.ok(conn, where);
      assert.equal(hex(conn.seal(unhex(s.payload), s.now)), s.hex, `${where}: sealed data differs`);
    } else if (s.op === "update_keys") {
      assert.ok(conn && conn.updateKeys(s.now), where);
    } else {
      assert.equal(outgoing.length, 0, `${where}: the TypeScript client has more to send`);
      assert.equal(client.state, s.state, `${where}: final state`);
      if (s.error !== undefined) {
        assert.ok(client.error, `${where}: no error`);
        assert.equal(client.error.constructor.name, s.error, `${where}: error class`);
        assert.equal(client.error.message, s.message, `${where}: error message`);
        assert.equal(client.error.code, s.code, `${where}: error code`);
      } else {
        assert.equal(client.error, null);
      }
      if (s.params && conn) {
        assert.equal(conn.conv, s.conv, "conv");
        assert.equal(hex(conn.remoteCid), s.remote_cid);
        const p: SessionParams = conn.params;
        assert.deepEqual(
          { mtu: p.mtu, snd_wnd: p.sndWnd, rcv_wnd: p.rcvWnd, fec: [p.dataShards, p.parityShards], mux: p.muxVersion, suite: p.suite, features: p.features },
          s.params,
        );
        if (s.epoch !== undefined) assert.equal(conn.epoch, s.epoch);
        assert.equal(conn.state, s.conn_state);
        assert.equal(conn.closeCode, s.close_code);
        assert.equal(conn.closeMessage, s.close_message);
        assert.deepEqual(conn.goawayReceived, s.goaway);
      }
    }
  }
}

/** Feed each one-bit-flipped copy of the server's first answer to a fresh client: the same outcome as the Python client's, byte by byte. */
function tamper(sc: Scenario, steps: Step[], expected: [string, string, string[]][]): number {
  const answer = unhex((steps.find((s) => s.op === "recv") as Step & { op: "recv" }).hex);
  assert.equal(expected.length, answer.length);
  const snake = (k: string): string => k.replace(/[A-Z]/g, (m) => "_" + m.toLowerCase());
  let failed = 0;
  for (let i = 0; i < answer.length; i++) {
    const bad = Uint8Array.from(answer);
    bad[i] = (bad[i] as number) ^ 1;
    const c = new SecureClient(tsOptions(sc.client), { rng: streamRng(sc.client_seed), peer: sc.peer });
    c.initiate(0);
    const before = { ...c.counters };
    assert.doesNotThrow(() => c.receive(bad, PEER, 2));
    const moved = Object.entries(c.counters)
      .filter(([k, v]) => before[k as keyof typeof before] !== v)
      .map(([k]) => snake(k))
      .sort();
    assert.deepEqual([c.state, c.error ? c.error.constructor.name : "", moved], expected[i], `${sc.name}: byte ${i} flipped`);
    if (c.state === "failed") failed++;
  }
  return failed;
}

test("the TypeScript secure client matches the Python implementation byte for byte", async () => {
  const out = JSON.parse(await runPython(["tests/clients/secure_vectors.py"], 60000, JSON.stringify(SCENARIOS))) as {
    name: string;
    steps: Step[];
    tampered?: [string, string, string[]][];
  }[];
  assert.equal(out.length, SCENARIOS.length);
  const ends: Record<string, string> = {};
  for (const [i, r] of out.entries()) {
    const sc = SCENARIOS[i] as Scenario;
    replay(sc, r.steps);
    if (sc.tamper) {
      assert.ok(r.tampered);
      // a changed byte of the authenticated answer fails the handshake (PSK mismatch), never establishes it
      assert.ok(tamper(sc, r.steps, r.tampered) > 100);
    }
    const end = r.steps[r.steps.length - 1] as Step & { op: "end" };
    ends[sc.name] = end.error ?? end.state;
  }
  // the scenarios cover what they claim (so a change in the Python side cannot make them vacuous)
  assert.equal(ends["wrong passphrase: WRONG_KEY hint"], "HandshakeKeyMismatch");
  assert.equal(ends["wrong pinned key: WRONG_KEY hint"], "HandshakeKeyMismatch");
  assert.equal(ends["pinned key right, PSK wrong: PSK mismatch"], "HandshakePskMismatch");
  assert.equal(ends["MTU below the server's minimum: refused"], "HandshakeRefused");
  assert.equal(ends["NNpsk0 with a RETRY cookie (server under load)"], "established");
  assert.equal(ends["suite refused, retried at once with the server's"], "established");
  assert.equal(ends["the server's FEC the strict client cannot take: the client refuses the answer with a CLOSE"], "HandshakeRefused");
  // the worker byte (docs/workers.md): our CID starts with the client's cidPrefix (the initiation's
  // bytes 4..12), the server's CID with its worker index
  const worker = out[1]!.steps;
  assert.equal((worker[0] as Step & { op: "send" }).hex.slice(8, 10), "07");
  assert.equal((worker[worker.length - 1] as Step & { op: "end" }).remote_cid?.slice(0, 2), "03");
});
