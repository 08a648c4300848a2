/**
 * The Node contenders of bench/bulk_linkemu.py (`node-bbr`, `node-ikcp`, `node-secure-bbr`,
 * `node-secure-bbr-noreack`): one KCP session that writes bulk data for `--seconds`, as that
 * script's Python `send` role does; compat mode, or secure mode with that script's passphrase
 * (`--wire secure`, or `secure-noreack`: without repeated acks).
 *
 *   node dist/bench/bulk.js --host 10.77.0.2 --port 9400 [--seconds 10] [--congestion bbr|ikcp]
 *       [--wnd 0] [--mtu 1400] [--wire compat|secure|secure-noreack]
 *
 * Prints one JSON line: `mbit` (the bytes the peer acknowledged by the end, over the run), the
 * retransmissions (`retrans`, of which `rto_retrans` by timeout), `out_segs` and the final `srtt`.
 */
import { dial } from "../src/dial.js";
import type { SessionOptions } from "../src/kcp/session.js";

const PSK = "bulk-linkemu"; // bench/bulk_linkemu.py's secure contenders' passphrase

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? (process.argv[i + 1] as string) : dflt;
}

async function main(): Promise<void> {
  const seconds = Number(arg("seconds", "10"));
  const wnd = Number(arg("wnd", "0")); // 0: the default windows
  const session: SessionOptions = {
    mtu: Number(arg("mtu", "1400")),
    ...(wnd > 0 ? { sndWnd: wnd, rcvWnd: wnd } : {}),
    congestion: arg("congestion", "bbr") as SessionOptions["congestion"],
    idleTimeoutMs: 30000,
  };
  const limit = setTimeout(() => {
    process.stderr.write(`bulk.js: still running after ${seconds + 60} s, giving up\n`);
    process.exit(3);
  }, (seconds + 60) * 1000);
  limit.unref();
  const wire = arg("wire", "compat");
  const host = arg("host", "127.0.0.1");
  const port = Number(arg("port", "0"));
  const s =
    wire === "compat"
      ? await dial(host, port, { session })
      : await dial(host, port, { session, wire: { mode: "secure", passphrase: PSK, ackRepeat: wire === "secure" } });
  const buf = new Uint8Array(65536);
  let written = 0;
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  while (performance.now() < end) {
    written += buf.length;
    if (!s.write(buf)) await s.drained();
  }
  const secs = (performance.now() - t0) / 1000;
  const delivered = written - s.pendingSegments * s.engine.mss;
  const c = s.counters;
  process.stdout.write(
    JSON.stringify({
      mbit: (delivered * 8) / secs / 1e6,
      retrans: c.retransSegs,
      rto_retrans: c.lostSegs,
      out_segs: c.outSegs,
      srtt: s.engine.rxSrtt,
    }) + "\n",
  );
  s.abort();
}

main().catch((err: unknown) => {
  process.stderr.write(`bulk.js: ${String(err)}\n`);
  process.exit(1);
});
