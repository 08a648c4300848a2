/** Test support: the package as a user gets it (npm pack of a clean copy, installed in a fresh npm project). */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { cpSync, existsSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

/** The package directory (clients/typescript). */
export const PACKAGE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const KEY = "ts package install passphrase";

/** Run a command (no shell), rejecting with its output on failure or after `timeoutMs`. */
export function run(cmd: string, args: string[], cwd: string, timeoutMs = 120000, env: Record<string, string> = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { cwd, timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024, env: { ...process.env, npm_config_update_notifier: "false", ...env } }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(" ")} (in ${cwd}) failed: ${err.message}\n${stdout}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

/**
 * `npm pack` a clean copy of the package (no dist/: the prepack script must build it) into `dest`;
 * returns the tarball's path.
 */
export async function packClean(dest: string): Promise<string> {
  const copy = path.join(dest, "pkg");
  for (const f of ["package.json", "package-lock.json", "tsconfig.json", "README.md", "src", "bin"]) {
    cpSync(path.join(PACKAGE, f), path.join(copy, f), { recursive: true });
  }
  symlinkSync(path.join(PACKAGE, "node_modules"), path.join(copy, "node_modules"), "dir");
  const out = await run("npm", ["pack", "--silent", "--pack-destination", dest], copy, 180000);
  const name = out.trim().split("\n").pop() as string;
  const tgz = path.join(dest, name);
  assert.ok(existsSync(tgz), `npm pack made ${tgz}`);
  return tgz;
}

/** A fresh npm project in `dir` with the tarball, typescript and @types/node installed (npm cache first). */
export async function installInto(dir: string, tgz: string): Promise<void> {
  const lock = JSON.parse(readFileSync(path.join(PACKAGE, "package.json"), "utf8")) as { devDependencies: Record<string, string> };
  writeFileSync(path.join(dir, "package.json"), JSON.stringify({ name: "app", version: "1.0.0", private: true, type: "module" }, null, 2));
  await run("npm", [
    "install", "--prefer-offline", "--no-audit", "--no-fund", "--silent", tgz,
    `typescript@${lock.devDependencies["typescript"]}`, `@types/node@${lock.devDependencies["@types/node"]}`,
  ], dir, 180000);
  writeFileSync(path.join(dir, "tsconfig.json"), JSON.stringify({
    compilerOptions: {
      target: "ES2022", module: "NodeNext", moduleResolution: "NodeNext", lib: ["ES2022"], types: ["node"],
      strict: true, noUncheckedIndexedAccess: true, outDir: "out", rootDir: ".",
    },
    include: ["*.ts", "gen/*.ts"],
  }, null, 2));
}

