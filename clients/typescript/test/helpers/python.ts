/** Test helpers: run our Python implementation (the venv in KCPRPC_PYTHON, the tree in KCPRPC_REPO). */
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import path from "node:path";

/** The repository root (KCPRPC_REPO, else four levels above dist/test/helpers). */
export const REPO: string =
  process.env["KCPRPC_REPO"] ?? path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../../..");

/** The Python interpreter (KCPRPC_PYTHON, else the repo's .venv). */
export const PYTHON: string = process.env["KCPRPC_PYTHON"] ?? path.join(REPO, ".venv", "bin", "python");

/** Run `python args...` in the repo root and return its stdout (rejects on a non-zero exit or after `timeoutMs`). */
export function runPython(args: string[], timeoutMs = 60000, input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      PYTHON,
      args,
      { cwd: REPO, timeout: timeoutMs, maxBuffer: 512 * 1024 * 1024 },
      (err, stdout, stderr) => {
        if (err) reject(new Error(`${args.join(" ")} failed: ${err.message}\n${stderr}`));
        else resolve(stdout);
      },
    );
    if (input !== undefined) child.stdin?.end(input);
  });
}

/** A Python process started for a test, once its stdout showed it is ready. */
export interface Spawned<T> {
  /** What `ready` found in its stdout. */
  readonly value: T;
  /** The process. */
  readonly child: ChildProcess;
  /** Everything it wrote to stderr so far (the last 100-200 kB). */
  stderr(): string;
  /** Resolves when it exited. */
  readonly exited: Promise<void>;
  /** Kill it (SIGKILL) and wait for the exit; idempotent. */
  stop(): Promise<void>;
}

/**
 * Start `python args...` in the repo root and wait, at most `timeoutMs`, until `ready(stdout so
 * far)` returns a value; rejects (naming `what` and the stderr) if it exits or times out first.
 */
export function spawnPython<T>(args: string[], ready: (out: string) => T | null, timeoutMs: number, what: string): Promise<Spawned<T>> {
  const child = spawn(PYTHON, args, { cwd: REPO, stdio: ["pipe", "pipe", "pipe"] });
  let out = "";
  let err = "";
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    await exited;
  };
  child.stderr!.on("data", (d: Buffer) => {
    err += d.toString();
    if (err.length > 200000) err = err.slice(-100000);
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      void stop();
      reject(new Error(`python ${args.join(" ")} printed no ${what} in ${timeoutMs} ms\n${err}`));
    }, timeoutMs);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`python ${args.join(" ")} exited ${String(code)} before printing its ${what}\n${err}`));
    });
    child.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      const value = ready(out);
      if (value !== null) {
        clearTimeout(timer);
        resolve({ value, child, stderr: () => err, exited, stop });
      }
    });
  });
}

/** A Python server process started for a test; `stop()` kills it (idempotent). */
export interface PythonServer {
  /** The first line the server printed (e.g. its port). */
  readonly firstLine: string;
  /** The process. */
  readonly child: ChildProcess;
  /** Kill the process and wait for it to exit. */
  stop(): Promise<void>;
}

/** Start `python args...` and wait (bounded) for its first stdout line. */
export async function startPython(args: string[], timeoutMs = 20000): Promise<PythonServer> {
  const firstLine = (out: string): string | null => {
    const nl = out.indexOf("\n");
    return nl >= 0 ? out.slice(0, nl) : null;
  };
  const s = await spawnPython(args, firstLine, timeoutMs, "line");
  return { firstLine: s.value, child: s.child, stop: s.stop };
}

/** Hex of bytes. */
export function hex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex");
}

/** Bytes of hex. */
export function unhex(s: string): Uint8Array {
  return new Uint8Array(Buffer.from(s, "hex"));
}
