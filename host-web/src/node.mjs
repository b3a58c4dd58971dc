// Loads the component in Node from dist/ (see build.mjs), checking every core module's sha256
// against the manifest written from the exact component bytes.

import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';

import { createHereabouts, MemoryStore } from './hereabouts.mjs';

export * from './hereabouts.mjs';

const dist = new URL('../dist/', import.meta.url);

/** The build manifest: `{sha256, bytes, coreModules: {file: sha256}}`. */
export function readManifest() {
  try {
    return JSON.parse(readFileSync(new URL('manifest.json', dist), 'utf8'));
  } catch (e) {
    throw new Error(`host-web is not built (${e.message}); run \`npm --prefix host-web run build\``);
  }
}

/** Reads and compiles one core module, refusing bytes the manifest does not name. */
export function coreModuleLoader(manifest) {
  return async (name) => {
    const bytes = readFileSync(new URL(`component/${name}`, dist));
    const digest = createHash('sha256').update(bytes).digest('hex');
    if (manifest.coreModules?.[name] !== digest) {
      throw new Error(`core module ${name} (sha256 ${digest}) is not the one built from component ${manifest.sha256}`);
    }
    return WebAssembly.compile(bytes);
  };
}

export async function loadHereabouts({ store = new MemoryStore() } = {}) {
  const manifest = readManifest();
  const { instantiate } = await import(new URL('component/hereabouts.js', dist).href);
  return createHereabouts({ instantiate, getCoreModule: coreModuleLoader(manifest), store, manifest });
}
