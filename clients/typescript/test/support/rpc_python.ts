/** Test support: run our Python implementation (KCPRPC_PYTHON in KCPRPC_REPO) from the TS tests. */
import { spawnSync, type ChildProcess } from "node:child_process";
import { hex, PYTHON, REPO, spawnPython, unhex } from "../helpers/python.js";

export { hex, PYTHON, REPO, unhex };

/** Run a Python script (path relative to the repo) and parse its stdout as JSON. */
export function pythonJson<T>(script: string, args: string[] = []): T {
  const r = spawnSync(PYTHON, [script, ...args], { cwd: REPO, encoding: "utf8", timeout: 60000 });
  if (r.status !== 0) throw new Error(`${script} exited ${String(r.status)}: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

/** A spawned Python server: its port, and kill(). */
export interface PyServer {
  /** The UDP port it listens on. */
  port: number;
  /** The process. */
  proc: ChildProcess;
  /** Everything it wrote to stderr so far. */
  stderr(): string;
  /** Kill it and wait for the exit. */
  kill(): Promise<void>;
  /** Close its stdin (the test apps then shut down gracefully). */
  closeStdin(): void;
  /** Resolves when it exited. */
  exited: Promise<void>;
}

/** Start `script` with `args`; resolves once it printed its port (a line "PORT <n>") on stdout. */
export async function startPythonServer(script: string, args: string[] = [], timeoutMs = 30000): Promise<PyServer> {
  // the app serves until its stdin closes
  const port = (out: string): number | null => {
    const m = /PORT (\d+)/.exec(out);
    return m ? Number(m[1]) : null;
  };
  const s = await spawnPython([script, ...args], port, timeoutMs, "port");
  const proc = s.child;
  return { port: s.value, proc, stderr: s.stderr, kill: s.stop, closeStdin: () => proc.stdin!.end(), exited: s.exited };
}

/** Wait until `cond()` holds (polling each few ms), at most `timeoutMs`; throws naming `what`. */
export async function waitFor(cond: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
