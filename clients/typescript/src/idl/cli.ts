/**
 * `kcprpc-gen-ts`: typed TypeScript stubs from interface documents.
 *
 *     kcprpc-gen-ts --out DIR [--runtime SPECIFIER] [--check] DOC|DIR...
 *
 * Writes one module per document (`<service name>.ts`). A folder stands for its `*.json`
 * documents (`schema.json`, the format's own schema, is skipped). `--runtime` is where the
 * modules import the runtime's types from (default `kcprpc`). `--check` writes nothing and exits 1
 * when a module in DIR differs from what would be written (a golden-file check).
 *
 * Exit status: 0 done, 1 `--check` found differences, 2 a usage error or a bad document.
 */

import { mkdir, readdir, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { IdlDocumentError, parseDocument, type IdlDocument } from "./document.js";
import { generateService, moduleFileName } from "./generate.js";

/** A command-line mistake; the message says what to do. */
export class GenUsageError extends Error {
  override name = "GenUsageError";
}

/** Parsed command line of `kcprpc-gen-ts`. */
export interface GenArgs {
  /** Documents and folders of documents. */
  inputs: string[];
  /** The output folder. */
  out: string;
  /** The runtime's module specifier in the generated imports. */
  runtime: string;
  /** Compare instead of writing. */
  check: boolean;
}

const USAGE = "usage: kcprpc-gen-ts --out DIR [--runtime SPECIFIER] [--check] DOC|DIR...";

/** Parses `argv` (without node and the script). Throws {@link GenUsageError}. */
export function parseArgs(argv: readonly string[]): GenArgs {
  const inputs: string[] = [];
  let out: string | undefined;
  let runtime = "kcprpc";
  let check = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new GenUsageError(`${a} needs a value\n${USAGE}`);
      return v;
    };
    if (a === "--out" || a === "-o") out = value();
    else if (a.startsWith("--out=")) out = a.slice("--out=".length);
    else if (a === "--runtime") runtime = value();
    else if (a.startsWith("--runtime=")) runtime = a.slice("--runtime=".length);
    else if (a === "--check") check = true;
    else if (a === "--help" || a === "-h") throw new GenUsageError(USAGE);
    else if (a.startsWith("-") && a !== "-") throw new GenUsageError(`unknown option ${a}\n${USAGE}`);
    else inputs.push(a);
  }
  if (out === undefined) throw new GenUsageError(`--out DIR is required\n${USAGE}`);
  if (inputs.length === 0) throw new GenUsageError(`name at least one document or folder\n${USAGE}`);
  return { inputs, out, runtime, check };
}

/** The documents named by `inputs` (files, or folders of `*.json` but `schema.json`), sorted by service name. */
export async function loadDocuments(inputs: readonly string[]): Promise<IdlDocument[]> {
  const files: string[] = [];
  for (const p of inputs) {
    let isDir: boolean;
    try {
      isDir = (await stat(p)).isDirectory();
    } catch {
      throw new GenUsageError(`${p}: no such file or folder`);
    }
    if (isDir) {
      const names = (await readdir(p)).filter((n) => n.endsWith(".json") && n !== "schema.json").sort();
      files.push(...names.map((n) => join(p, n)));
    } else {
      files.push(p);
    }
  }
  const docs = new Map<string, IdlDocument>();
  for (const f of files) {
    const doc = parseDocument(await readFile(f, "utf8"), f);
    if (docs.has(doc.name)) throw new GenUsageError(`${f}: a second document for ${doc.name}`);
    docs.set(doc.name, doc);
  }
  if (docs.size === 0) throw new GenUsageError(`no documents in ${inputs.join(", ")}`);
  return [...docs.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** Runs the command; returns the exit status and writes messages to `log` / `err`. */
export async function main(
  argv: readonly string[],
  log: (s: string) => void = (s) => process.stdout.write(s + "\n"),
  err: (s: string) => void = (s) => process.stderr.write(s + "\n"),
): Promise<number> {
  try {
    const args = parseArgs(argv);
    const docs = await loadDocuments(args.inputs);
    const outputs: [string, string][] = [];
    for (const d of docs) {
      outputs.push([join(args.out, moduleFileName(d)), await generateService(d, { runtimeImport: args.runtime })]);
    }
    if (args.check) {
      const stale: string[] = [];
      for (const [path, text] of outputs) {
        const old = await readFile(path, "utf8").catch(() => undefined);
        if (old !== text) stale.push(path);
      }
      if (stale.length > 0) {
        err(`kcprpc-gen-ts: out of date (regenerate them): ${stale.join(", ")}`);
        return 1;
      }
      log(`${outputs.length} modules in ${args.out} match the documents`);
      return 0;
    }
    await mkdir(args.out, { recursive: true });
    for (const [path, text] of outputs) await writeFile(path, text, "utf8");
    log(`wrote ${outputs.length} module(s) to ${args.out}: ${outputs.map(([p]) => p.split(/[\\/]/).pop()).join(", ")}`);
    return 0;
  } catch (e) {
    if (e instanceof GenUsageError || e instanceof IdlDocumentError) {
      err(`kcprpc-gen-ts: ${e.message}`);
      return 2;
    }
    const m = e instanceof Error ? e.message : String(e);
    err(`kcprpc-gen-ts: ${m}`);
    return 2;
  }
}
