// What a component imports, read from its embedded WIT with jco (wasm-tools' `component wit`).
// Used by build.mjs, which refuses any other component, and by the artifact test; never by the
// loaders (node-only: it needs the jco package).

import { componentWit } from '@bytecodealliance/jco';

/** The contract's imports: the store the host serves and the types it speaks in. Nothing else:
 *  no WASI, so no clock, randomness, files, sockets, environment or stdio, not even as traps. */
export const CONTRACT_IMPORTS = Object.freeze(['hereabouts:ipam/store@0.2.0', 'hereabouts:ipam/types@0.2.0']);

/** The interfaces the component's world imports, sorted. */
export async function componentImports(bytes) {
  const wit = await componentWit(bytes);
  return [...wit.matchAll(/^\s*import\s+([^;]+);/gm)].map((m) => m[1].trim()).sort();
}
