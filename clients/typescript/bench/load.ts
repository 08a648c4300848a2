/**
 * The Node contender of bench/ts_client.py: a unary-call load generator on the public client API.
 *
 *   node dist/bench/load.js --port 9000 [--wire secure|key|compat] [--seconds 2] [--calls 2000]
 *       [--inflight 64] [--warmup 200] [--key "bench passphrase"] [--cpu-seconds 0]
 *       [--loss-recovery adaptive|ikcp] [--lead-copies N|auto]
 *
 * Calls `bench.Echo/Echo` (bench/rpc.py's service) with 64-byte payloads: `--warmup` calls, then
 * `--inflight` calls in flight for `--seconds` (calls/s), then `--calls` sequential calls (p50/p99).
 * Prints one JSON line: rate, p50_ms, p99_ms, and the process CPU (user + system) per call of each
 * phase in µs, the server's (from `bench.Echo/Cpu`), and the datagrams sent and received per call in each phase. Calls have no deadline
 * (as the Python contender's); the whole run is bounded (`--limit`, 120 s). `--seconds 0` skips the
 * rate phase (bench/ts_loss.py: sequential calls across a lossy link, with their max latency and
 * the session's loss recovery, `--loss-recovery` and `--lead-copies`, as `SessionOptions`).
 */
import { connect, type Client, type ConnectOptions } from "../src/index.js";
import type { SessionOptions } from "../src/kcp/session.js";

const PAYLOAD = new Uint8Array(64).fill(0x78);

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? (process.argv[i + 1] as string) : dflt;
}

function wireOf(wire: string, key: string): ConnectOptions["wire"] {
  if (wire === "key") return { mode: "secure", passphrase: key };
  if (wire === "compat") return { mode: "compat" };
  if (wire === "secure") return { mode: "secure" }; // keyless: connect() uses the public ANONYMOUS_PSK
  throw new Error(`unknown --wire ${wire}: secure, key or compat`);
}

function cpuUs(): number {
  const u = process.cpuUsage();
  return u.user + u.system;
}

function percentile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * q))] ?? 0;
}

async function main(): Promise<void> {
  const port = Number(arg("port", "0"));
  const seconds = Number(arg("seconds", "2"));
  const calls = Number(arg("calls", "2000"));
  const inflight = Number(arg("inflight", "64"));
  const warmup = Number(arg("warmup", "200"));
  const limitS = Number(arg("limit", "120"));
  const limit = setTimeout(() => {
    process.stderr.write(`load.js: still running after ${limitS} s, giving up\n`);
    process.exit(3);
  }, limitS * 1000);
  limit.unref();
  const lead = arg("lead-copies", "0");
  const session: SessionOptions = {
    lossRecovery: arg("loss-recovery", "adaptive") as SessionOptions["lossRecovery"],
    leadCopies: lead === "auto" ? "auto" : Number(lead),
  };
  const client: Client = await connect("127.0.0.1", port, {
    wire: wireOf(arg("wire", "secure"), arg("key", "bench passphrase")),
    session,
  });
  // the server's process time in seconds (bench/rpc.py's bench.Echo/Cpu)
  const serverCpu = (): Promise<number> => client.unary<null, number>("bench.Echo/Cpu", null);
  const call = async (): Promise<void> => {
    const r = await client.unary<Uint8Array, Uint8Array>("bench.Echo/Echo", PAYLOAD);
    if (r.length !== 64) throw new Error(`echo returned ${r.length} bytes`);
  };
  try {
    for (let i = 0; i < warmup; i++) await call();
    // (b) rate: `inflight` calls in flight for `seconds`
    let done = 0;
    const sv0 = await serverCpu();
    const s0 = client.transportStats();
    const c0 = cpuUs();
    const t0 = performance.now();
    const stop = t0 + seconds * 1000;
    const worker = async (): Promise<void> => {
      while (performance.now() < stop) {
        await call();
        done++;
      }
    };
    if (seconds > 0) await Promise.all(Array.from({ length: inflight }, worker));
    const rate = done / ((performance.now() - t0) / 1000);
    const cpuRate = done ? (cpuUs() - c0) / done : 0;
    const s1 = client.transportStats();
    const sv1 = await serverCpu();
    const perCall = (k: string): number => (done ? ((s1[k] ?? 0) - (s0[k] ?? 0)) / done : 0);
    // (a) latency: one call in flight
    const lat: number[] = [];
    const sv2 = await serverCpu();
    const s2 = client.transportStats();
    const c1 = cpuUs();
    for (let i = 0; i < calls; i++) {
      const t = performance.now();
      await call();
      lat.push(performance.now() - t);
    }
    const cpuLat = (cpuUs() - c1) / calls;
    const s3 = client.transportStats();
    const sv3 = await serverCpu();
    const perSeq = (k: string): number => ((s3[k] ?? 0) - (s2[k] ?? 0)) / calls;
    lat.sort((a, b) => a - b);
    const out = {
      rate,
      p50_ms: percentile(lat, 0.5),
      p99_ms: percentile(lat, 0.99),
      cpu_us_rate: cpuRate,
      cpu_us_lat: cpuLat,
      max_ms: lat[lat.length - 1] ?? 0,
      bytes_lat: perSeq("bytesSent") + perSeq("bytesReceived"),
      server_us_rate: done ? ((sv1 - sv0) / done) * 1e6 : 0,
      server_us_lat: ((sv3 - sv2) / calls) * 1e6,
      out_pkts: perCall("outPkts"),
      in_pkts: perCall("inPkts"),
      out_pkts_lat: perSeq("outPkts"),
      in_pkts_lat: perSeq("inPkts"),
    };
    process.stdout.write(JSON.stringify(out) + "\n");
  } finally {
    await client.close();
    clearTimeout(limit);
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`load.js: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
