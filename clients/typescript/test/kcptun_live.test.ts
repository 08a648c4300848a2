/**
 * The TypeScript client's compat wire against a real kcptun-server (kcp-go + smux in Go; Debian's
 * `kcptun` package, which .ci/run installs), on 127.0.0.1: smux streams through kcptun-server to a
 * TCP echo server, in every cipher both offer, with FEC on both sides, on one side only, or off,
 * and smux v1 and v2. Every wait is bounded; the process is always killed.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { createSocket } from "node:dgram";
import { readFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import type { CryptName } from "../src/kcp/crypt.js";
import { dial, type KcpSession } from "../src/kcp/session.js";
import { MuxSession, type MuxStream } from "../src/mux/session.js";
import { within } from "./helpers/session.js";

const KEY = "kcprpc-interop";
const START_MS = 5000;
const ROUNDTRIP_MS = 20000;

function kcptunServer(): string {
  const exe = process.env.KCPTUN_SERVER ?? "kcptun-server";
  const found = spawnSync("sh", ["-c", `command -v ${exe}`], { encoding: "utf8" });
  if (found.status !== 0) throw new Error(`${exe} not found on PATH: install it with \`apt-get install kcptun\` (.ci/run does)`);
  return found.stdout.trim();
}

/** A UDP port that was free on 127.0.0.1 a moment ago. */
async function freeUdpPort(): Promise<number> {
  const s = createSocket("udp4");
  await new Promise<void>((resolve) => s.bind(0, "127.0.0.1", resolve));
  const port = s.address().port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

/** True once /proc/net/udp shows a socket bound to `port`. */
function udpBound(port: number): boolean {
  const want = `:${port.toString(16).toUpperCase().padStart(4, "0")}`;
  try {
    return readFileSync("/proc/net/udp", "utf8").split("\n").slice(1).some((l) => (l.trim().split(/\s+/)[1] ?? "").endsWith(want));
  } catch {
    return false;
  }
}

/** A TCP echo server on 127.0.0.1. */
async function tcpEcho(): Promise<{ server: Server; port: number }> {
  const server = createServer((c) => {
    c.on("error", () => c.destroy());
    c.pipe(c);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const addr = server.address();
  if (addr === null || typeof addr === "string") throw new Error("no TCP port");
  return { server, port: addr.port };
}

/** What kcptun-server and our client must agree on (FEC may differ). */
interface Wire {
  crypt: CryptName;
  smuxver: 1 | 2;
  peerFec: [number, number];
  ourFec: [number, number];
}

/** kcptun-server forwarding to 127.0.0.1:`target`, started and bound (bounded wait), with its log. */
async function startKcptun(target: number, w: Wire): Promise<{ proc: ChildProcess; port: number; log: () => string }> {
  const exe = kcptunServer();
  const port = await freeUdpPort();
  let log = "";
  const args = ["--listen", `127.0.0.1:${port}`, "--target", `127.0.0.1:${target}`, "--key", KEY, "--crypt", w.crypt, "--mode", "fast3"];
  args.push("--mtu", "1350", "--sndwnd", "1024", "--rcvwnd", "1024", "--datashard", String(w.peerFec[0]), "--parityshard", String(w.peerFec[1]));
  args.push("--smuxver", String(w.smuxver), "--keepalive", "10", "--nocomp", "--quiet");
  const proc = spawn(exe, args, { stdio: ["ignore", "pipe", "pipe"] });
  proc.stdout!.on("data", (d: Buffer) => (log += d.toString()));
  proc.stderr!.on("data", (d: Buffer) => (log += d.toString()));
  const deadline = Date.now() + START_MS;
  while (!udpBound(port)) {
    if (proc.exitCode !== null || Date.now() > deadline) {
      proc.kill("SIGKILL");
      throw new Error(`kcptun-server did not bind 127.0.0.1:${port} within ${START_MS} ms; log:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return { proc, port, log: () => log };
}

/** A seeded payload (xorshift). */
function payload(seed: number, n: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** One stream: write `size` seeded bytes, read the same back (bounded), half-close, expect the peer's FIN. */
async function roundtrip(st: MuxStream, seed: number, size: number, log: () => string): Promise<void> {
  const data = payload(seed, size);
  const writer = (async () => {
    for (let i = 0; i < data.length; i += 16384) {
      st.write(data.subarray(i, i + 16384));
      await st.drain();
    }
  })();
  const parts: Uint8Array[] = [];
  let got = 0;
  const read = async (): Promise<void> => {
    while (got < data.length) {
      const d = await st.read();
      if (!d.length) throw new Error(`EOF after ${got} bytes`);
      parts.push(d);
      got += d.length;
    }
  };
  await within(read(), ROUNDTRIP_MS, `the echo of ${size} bytes through kcptun (log: ${log()})`);
  await writer;
  const back = Buffer.concat(parts);
  const firstBad = back.findIndex((b, i) => b !== data[i]);
  assert.equal(firstBad, -1, `the echo differs from byte ${firstBad} on`);
  assert.equal(back.length, data.length);
  st.close(); // kcptun-server then closes both directions: its FIN reaches us as EOF
  assert.equal((await within(st.read(), ROUNDTRIP_MS, "kcptun's FIN")).length, 0);
}

/** Our client through kcptun-server to a TCP echo: `streams` streams of `size` bytes at once; `check` sees the session after. */
async function throughKcptun(w: Wire, streams: number, size: number, check: (s: KcpSession) => void): Promise<void> {
  const echo = await tcpEcho();
  const peer = await startKcptun(echo.port, w);
  try {
    const s = await dial("127.0.0.1", peer.port, {
      wire: { crypt: w.crypt, key: KEY, fec: w.ourFec },
      session: { mtu: 1350, sndWnd: 1024, rcvWnd: 1024, idleTimeoutMs: 30000, closeLingerMs: 1000 },
    });
    const mux = new MuxSession(s, { client: true, config: { version: w.smuxver, keepaliveInterval: 10, keepaliveTimeout: 30 } });
    try {
      await Promise.all(Array.from({ length: streams }, (_, k) => roundtrip(mux.openStream(), 80 + k, size, peer.log)));
      const stats = s.stats;
      assert.equal(stats.inCsumErrors, 0);
      assert.equal(stats.kcpInErrors, 0);
      check(s);
    } finally {
      mux.close();
      s.abort();
    }
  } finally {
    peer.proc.kill("SIGKILL");
    echo.server.close();
  }
}

// kcptun 20210922 has neither aes-128-gcm nor null (an unknown name falls back to aes)
for (const crypt of ["aes", "aes-128", "aes-192", "none"] as CryptName[]) {
  for (const smuxver of [1, 2] as const) {
    for (const fec of [[0, 0], [10, 3]] as [number, number][]) {
      test(`kcptun: ${crypt}, FEC ${fec.join("/")}, smux v${smuxver}: two 50 KB streams at once, intact, then FIN both ways`, async () => {
        await throughKcptun({ crypt, smuxver, peerFec: fec, ourFec: fec }, 2, 50_000, (s) => {
          if (fec[1] > 0) assert.ok(s.stats.fecParityShards! > 0, "kcptun's parity reached our decoder");
          assert.equal(s.stats.fecPlainOut, 0);
        });
      });
    }
  }
}

for (const [who, peerFec, ourFec] of [
  ["our-fec", [0, 0], [10, 3]],
  ["peer-fec", [10, 3], [0, 0]],
] as [string, [number, number], [number, number]][]) {
  test(`kcptun: FEC on one side only (${who}) carries a 100 KB stream intact through kcptun-server`, async () => {
    await throughKcptun({ crypt: "aes", smuxver: 1, peerFec, ourFec }, 1, 100_000, (s) => {
      const stats = s.stats;
      // without FEC here, the (1, 1) decoder counts the peer's first parity shard once, as it starts tuning itself
      assert.ok(stats.fecErrs! <= (ourFec[1] > 0 ? 0 : 1), `fecErrs ${stats.fecErrs}`);
      // with our FEC only: data shards alone until kcptun's first packet, then plain ones
      assert.equal(stats.fecPlainOut! > 0, ourFec[1] > 0);
    });
  });
}
