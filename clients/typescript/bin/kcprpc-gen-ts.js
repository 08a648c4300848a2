#!/usr/bin/env node
// kcprpc-gen-ts: typed TypeScript stubs from kcprpc interface documents (see src/idl/cli.ts).
import { main } from "../dist/src/idl/cli.js";

process.exitCode = await main(process.argv.slice(2));
