/** Test support: run our Python implementation (KCPRPC_PYTHON in KCPRPC_REPO) from the TS tests. */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import path from "node:path";

/** The repository root (KCPRPC_REPO, else four levels above dist/test/support). */
export const REPO = process.env.KCPRPC_REPO ?? path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../../..");
/** The Python interpreter (KCPRPC_PYTHON, else the repo's .venv). */
export const PYTHON = process.env.KCPRPC_PYTHON ?? path.join(REPO, ".venv", "bin", "python");

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
export function startPythonServer(script: string, args: string[] = [], timeoutMs = 30000): Promise<PyServer> {
  const proc = spawn(PYTHON, [script, ...args], { cwd: REPO, stdio: ["pipe", "pipe", "pipe"] }); // the app serves until its stdin closes
  let err = "";
  let out = "";
  proc.stderr.on("data", (d: Buffer) => {
    err += d.toString();
    if (err.length > 200000) err = err.slice(-100000);
  });
  const exited = new Promise<void>((r) => proc.once("exit", () => r()));
  const kill = async (): Promise<void> => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill("SIGKILL");
      await exited;
    }
  };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      void kill();
      reject(new Error(`${script} printed no port within ${timeoutMs} ms; stderr:\n${err}`));
    }, timeoutMs);
    proc.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${script} exited ${String(code)} before printing its port; stderr:\n${err}`));
    });
    proc.stdout.on("data", (d: Buffer) => {
      out += d.toString();
      const m = /PORT (\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({ port: Number(m[1]), proc, stderr: () => err, kill, closeStdin: () => proc.stdin.end(), exited });
      }
    });
  });
}

/** Hex to bytes. */
export function unhex(h: string): Uint8Array {
  return new Uint8Array(Buffer.from(h, "hex"));
}
/** Bytes to hex. */
export function hex(b: Uint8Array): string {
  return Buffer.from(b).toString("hex");
}

/** Wait until `cond()` holds (polling each few ms), at most `timeoutMs`; throws naming `what`. */
export async function waitFor(cond: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
