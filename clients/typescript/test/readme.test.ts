/**
 * README.md as a new user follows it, from its own code blocks: the install commands (with the
 * tarball of `npm pack` and this checkout's path put in for `/path/to/kcprpc`), the tsconfig, the
 * stub generation (`npx kcprpc-gen-ts`, and `kcprpc idl gen-ts` giving the same module), the quick
 * start's `src/main.ts` compiled with strict tsc and run against `kcprpc serve
 * examples.quickstart.service:app` (on a free port instead of 9000); every other TypeScript block
 * compiles (in one module, each block in its own function, with the stubs it names), and the
 * block that shows a compile error fails with that error.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { REPO, startPython, type PythonServer } from "./helpers/python.js";
import { PYTHON } from "./support/rpc_python.js";
import { PACKAGE, packClean, run } from "./support/package.js";

interface Block {
  lang: string;
  code: string;
}

/** The fenced code blocks of a Markdown text, in order. */
export function codeBlocks(md: string): Block[] {
  const out: Block[] = [];
  const re = /^```(\w*)\n([\s\S]*?)^```$/gm;
  for (let m = re.exec(md); m; m = re.exec(md)) out.push({ lang: m[1] as string, code: m[2] as string });
  return out;
}

/** Put this checkout and the test's tarball in for the README's placeholder paths. */
function localize(code: string, tgz: string): string {
  return code.replaceAll("/path/to/kcprpc/clients/typescript/kcprpc-0.1.0.tgz", tgz).replaceAll("/path/to/kcprpc", REPO);
}

const IMPORT = /^import (type )?\{([^}]*)\} from "([^"]+)";\s*$/;

/** TS fragments as one module: their imports merged at the top, each body in its own async function. */
export function fragmentsModule(fragments: string[], declared: string): string {
  const imports = new Map<string, Set<string>>();
  const bodies: string[] = [];
  for (const [i, f] of fragments.entries()) {
    const body: string[] = [];
    for (const line of f.split("\n")) {
      const m = IMPORT.exec(line);
      if (!m) {
        body.push(line);
        continue;
      }
      const names = imports.get(m[3] as string) ?? new Set<string>();
      for (const n of (m[2] as string).split(",")) if (n.trim()) names.add(n.trim().replace(/^type /, ""));
      imports.set(m[3] as string, names);
    }
    bodies.push(`export async function readmeBlock${i}(): Promise<void> {\n${body.join("\n")}\n}`);
  }
  const head = [...imports].map(([spec, names]) => `import { ${[...names].join(", ")} } from "${spec}";`);
  return [...head, declared, ...bodies].join("\n");
}

/** npm as in the install block, but from the npm cache first (the registry only for what it lacks). */
const SH_ENV = { npm_config_prefer_offline: "true", npm_config_audit: "false", npm_config_fund: "false", npm_config_update_notifier: "false" };

test("README.md walk-through: install, generate, compile and run the quick start against the quickstart server; every TS block compiles", { timeout: 240000 }, async () => {
  const readme = readFileSync(path.join(PACKAGE, "README.md"), "utf8");
  const blocks = codeBlocks(readme);
  const sh = blocks.filter((b) => b.lang === "sh");
  const ts = blocks.filter((b) => b.lang === "ts");
  const tmp = mkdtempSync(path.join(tmpdir(), "kcprpc-readme-"));
  let server: PythonServer | null = null;
  try {
    // Install: the first block runs in the checkout (npm pack of a clean copy here), the second makes the app
    const packBlock = sh.find((b) => b.code.includes("npm pack"));
    assert.ok(packBlock && packBlock.code.includes("npm ci"), "the README builds the tarball with npm ci && npm pack");
    const tgz = await packClean(tmp);
    const install = sh.find((b) => b.code.includes("npm init -y"));
    assert.ok(install, "an install block");
    await run("sh", ["-ec", localize(install.code, tgz)], tmp, 180000, SH_ENV);
    const app = path.join(tmp, "myapp");
    const tsconfig = blocks.find((b) => b.lang === "json" && b.code.includes("compilerOptions"));
    assert.ok(tsconfig, "a tsconfig block");
    writeFileSync(path.join(app, "tsconfig.json"), tsconfig.code);

    // Quick start: stubs with the installed kcprpc-gen-ts; the Python CLI writes the same module
    const gen = sh.find((b) => b.code.startsWith("npx kcprpc-gen-ts --out src/kcprpc /path/to/kcprpc/idl/quickstart.Greeter.json"));
    assert.ok(gen, "a block generating the quickstart stub");
    await run("sh", ["-ec", localize(gen.code, tgz)], app);
    const stub = readFileSync(path.join(app, "src", "kcprpc", "quickstart.Greeter.ts"), "utf8");
    await run(PYTHON, ["-m", "kcprpc", "idl", "gen-ts", path.join(REPO, "idl", "quickstart.Greeter.json"), "--out", path.join(tmp, "pygen")], REPO);
    assert.equal(readFileSync(path.join(tmp, "pygen", "quickstart.Greeter.ts"), "utf8"), stub, "kcprpc idl gen-ts writes the same module");
    await run("npx", ["--no-install", "kcprpc-gen-ts", "--out", "src/kcprpc", path.join(REPO, "idl", "game.v1.Game.json")], app);

    const serve = sh.find((b) => b.code.trim() === "kcprpc serve examples.quickstart.service:app");
    assert.ok(serve, "the README names the server to start");
    server = await startPython(["-m", "kcprpc", "serve", "examples.quickstart.service:app", "--port", "0"]);
    const port = Number(/:(\d+)\s*$/.exec(server.firstLine)?.[1]);
    assert.ok(port > 0, `the server's banner names its port: ${server.firstLine}`);

    const main = ts.find((b) => b.code.includes('from "./kcprpc/quickstart.Greeter.js"'));
    assert.ok(main && main.code.includes("9000"), "the quick start's main.ts");
    writeFileSync(path.join(app, "src", "main.ts"), main.code.replace("9000", String(port)));

    // every other TS block, in one module; the one showing a compile error separately
    const wrong = ts.filter((b) => /\/\/ error TS\d+/.test(b.code));
    assert.equal(wrong.length, 1, "one block shows a compile error");
    const others = ts.filter((b) => b !== main && !wrong.includes(b)).map((b) => b.code);
    assert.ok(others.length >= 5, `the other TS blocks (${others.length})`);
    const declared = "declare const client: import(\"kcprpc\").Client;\ndeclare const game: import(\"./kcprpc/game.v1.Game.js\").GameClient;";
    writeFileSync(path.join(app, "src", "fragments.ts"), fragmentsModule(others, declared));

    const build = sh.find((b) => b.code.trim().startsWith("npx tsc && node dist/main.js"));
    assert.ok(build, "the README's build-and-run line");
    const out = await run("sh", ["-ec", build.code], app, 60000);
    const lines = out.trim().split("\n");
    assert.deepEqual(lines.slice(0, 4), ["Hello, ann!", "1", "2", "3"]);
    assert.match(lines[4] as string, /^invalid: /);

    const code = wrong[0]!.code;
    const expected = /error (TS\d+)/.exec(code)?.[1] as string;
    writeFileSync(path.join(app, "src", "wrong.ts"), fragmentsModule([code], declared));
    await assert.rejects(run("npx", ["--no-install", "tsc", "--noEmit"], app), (e: Error) => {
      assert.match(e.message, new RegExp(`src/wrong\\.ts\\(\\d+,\\d+\\): error ${expected}`));
      assert.doesNotMatch(e.message, /src\/(main|fragments)\.ts/);
      return true;
    });
  } finally {
    await server?.stop();
    rmSync(tmp, { recursive: true, force: true });
  }
});
