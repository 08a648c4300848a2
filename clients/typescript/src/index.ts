/** kcprpc for Node: the public API. */
export const VERSION = "0.1.0";
