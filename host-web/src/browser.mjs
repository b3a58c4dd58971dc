// Loads the component in a browser (bundled by the playground's build): core modules are fetched
// from `base` (default `./component/` beside the page) and checked against the build manifest's
// sha256 before they are compiled, so the page runs exactly the component `hereabouts` embeds.

import { instantiate } from '../dist/component/hereabouts.js';
import { createHereabouts, MemoryStore } from './hereabouts.mjs';

export * from './hereabouts.mjs';

const hex = (buffer) => [...new Uint8Array(buffer)].map((b) => b.toString(16).padStart(2, '0')).join('');

export async function loadHereabouts({ base = new URL('component/', document.baseURI), store = new MemoryStore() } = {}) {
  const response = await fetch(new URL('../manifest.json', base));
  if (!response.ok) throw new Error(`manifest.json: HTTP ${response.status}`);
  const manifest = await response.json();
  const getCoreModule = async (name) => {
    const file = await fetch(new URL(name, base));
    if (!file.ok) throw new Error(`${name}: HTTP ${file.status}`);
    const bytes = await file.arrayBuffer();
    if (!globalThis.crypto?.subtle) {
      // Pages served over plain http from a non-local address get no WebCrypto.
      console.warn(`${name}: cannot check its sha256 in an insecure context; serve over https or localhost`);
      return WebAssembly.compile(bytes);
    }
    const digest = hex(await crypto.subtle.digest('SHA-256', bytes));
    if (manifest.coreModules?.[name] !== digest) {
      throw new Error(`core module ${name} (sha256 ${digest}) is not the one built from component ${manifest.sha256}`);
    }
    return WebAssembly.compile(bytes);
  };
  return createHereabouts({ instantiate, getCoreModule, store, manifest });
}
