/**
 * The stub generator as a library (`import { generateService } from "kcprpc/gen"`): what the
 * `kcprpc-gen-ts` command runs. Loads json-schema-to-typescript (and its formatter), so it is
 * an entry of its own rather than part of the client's.
 */
export { checkDocument, IdlDocumentError, parseDocument } from "./document.js";
export type { Delivery, EventDef, IdlDocument, JsonSchema, JsonValue, MethodDef, MethodKind, TopicDef } from "./document.js";
export { generateService, moduleFileName, pascalCase } from "./generate.js";
export type { GenerateOptions } from "./generate.js";
export { GenUsageError, loadDocuments, main, parseArgs } from "./cli.js";
export type { GenArgs } from "./cli.js";
