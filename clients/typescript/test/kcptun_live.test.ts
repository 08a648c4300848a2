/**
 * The TypeScript client's compat wire against a real kcptun-server (kcp-go + smux in Go; Debian's
 * `kcptun` package, which .ci/run installs), on 127.0.0.1: one smux stream through kcptun to a TCP
 * echo server, with FEC on one side only. Every wait is bounded; the process is always killed.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { createSocket } from "node:dgram";
import { readFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { dial } from "../src/kcp/session.js";
import { MuxSession } from "../src/mux/session.js";
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

/** kcptun-server forwarding to 127.0.0.1:`target`, started and bound (bounded wait), with its log. */
async function startKcptun(target: number, fec: [number, number]): Promise<{ proc: ChildProcess; port: number; log: () => string }> {
  const exe = kcptunServer();
  const port = await freeUdpPort();
  let log = "";
  const args = ["--listen", `127.0.0.1:${port}`, "--target", `127.0.0.1:${target}`, "--key", KEY, "--crypt", "aes", "--mode", "fast3"];
  args.push("--mtu", "1350", "--sndwnd", "1024", "--rcvwnd", "1024", "--datashard", String(fec[0]), "--parityshard", String(fec[1]));
  args.push("--smuxver", "1", "--keepalive", "10", "--nocomp", "--quiet");
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

for (const [who, peerFec, ourFec] of [
  ["our-fec", [0, 0], [10, 3]],
  ["peer-fec", [10, 3], [0, 0]],
] as [string, [number, number], [number, number]][]) {
  test(`kcptun: FEC on one side only (${who}) carries a 100 KB stream intact through kcptun-server`, async () => {
    const echo = await tcpEcho();
    const peer = await startKcptun(echo.port, peerFec);
    try {
      const s = await dial("127.0.0.1", peer.port, {
        wire: { crypt: "aes", key: KEY, fec: ourFec },
        session: { mtu: 1350, sndWnd: 1024, rcvWnd: 1024, idleTimeoutMs: 30000, closeLingerMs: 1000 },
      });
      const mux = new MuxSession(s, { client: true, config: { version: 1, keepaliveInterval: 10, keepaliveTimeout: 30 } });
      try {
        const st = mux.openStream();
        const data = payload(80, 100_000);
        const writer = (async () => {
          for (let i = 0; i < data.length; i += 16384) {
            st.write(data.subarray(i, i + 16384));
            await st.drain();
          }
        })();
        const parts: Uint8Array[] = [];
        let got = 0;
        await within(
          (async () => {
            while (got < data.length) {
              const d = await st.read();
              if (!d.length) throw new Error(`EOF after ${got} bytes`);
              parts.push(d);
              got += d.length;
            }
          })(),
          ROUNDTRIP_MS,
          `the echo of 100 KB through kcptun (log: ${peer.log()})`,
        );
        await writer;
        const back = Buffer.concat(parts);
        const firstBad = back.findIndex((b, i) => b !== data[i]);
        assert.equal(firstBad, -1, `the echo differs from byte ${firstBad} on`);
        assert.equal(back.length, data.length);
        const stats = s.stats;
        assert.equal(stats.inCsumErrors, 0);
        assert.equal(stats.kcpInErrors, 0);
        // without FEC here, the (1, 1) decoder counts the peer's first parity shard once, as it starts tuning itself
        assert.ok(stats.fecErrs! <= (ourFec[1] > 0 ? 0 : 1), `fecErrs ${stats.fecErrs}`);
        // with our FEC only: data shards alone until kcptun's first packet, then plain ones
        assert.equal(stats.fecPlainOut! > 0, ourFec[1] > 0);
      } finally {
        mux.close();
        s.abort();
      }
    } finally {
      peer.proc.kill("SIGKILL");
      echo.server.close();
    }
  });
}
