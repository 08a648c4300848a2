/** Delta state sync, client side (docs/state.md): schemas, the view, its wiring to a Client. */
export { S, Kind, describe, schemaId, nodeAt } from "./schema.js";
export type { Infer, Node as StateNode, LeafNode, ModelNode, MapNode, ListNode, ItemNode, Fields } from "./schema.js";
export { BadDelta, InvalidState, Budget, deepEqual } from "./tree.js";
export type { Key as StateKey } from "./tree.js";
export { groupOf, Groups, MAX_GROUPS } from "./groups.js";
export {
  StateView, attach, clientState, SNAPSHOT, DELTA, PARTS, DEFAULT_NAME, ACK_METHOD, COMMIT_DELAY_MS, VIEW_COUNTERS,
} from "./view.js";
export type { StateViewStats, StateViewOptions, StateAck, StateClient } from "./view.js";
