// The artifact host-web loads is the component `hereabouts` embeds: same sha256, imports exactly
// the contract (no WASI), and every core module the loaders compile is a verbatim slice of those
// bytes. A module that is not is refused.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { test } from 'node:test';

import { CONTRACT_IMPORTS, componentImports } from '../component-imports.mjs';
import { coreModuleLoader, readManifest } from '../src/node.mjs';
import { requireBin, root } from './helpers.mjs';

const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex');
const dist = `${root}host-web/dist`;

function embedded() {
  const result = spawnSync(requireBin(), ['component'], { maxBuffer: 64 << 20 });
  assert.equal(result.status, 0, `hereabouts component failed: ${result.stderr}`);
  return result.stdout;
}

test('the component host-web was built from is byte-identical to `hereabouts component`', () => {
  const bytes = embedded();
  const manifest = readManifest();
  assert.equal(manifest.sha256, sha256(bytes));
  assert.equal(sha256(readFileSync(`${dist}/hereabouts.wasm`)), sha256(bytes));
  assert.equal(manifest.bytes, bytes.length);
});

test('the component imports exactly its contract: the store and its types, no WASI', async () => {
  const imports = await componentImports(readFileSync(`${dist}/hereabouts.wasm`));
  assert.deepEqual(imports, ['hereabouts:ipam/store@0.2.0', 'hereabouts:ipam/types@0.2.0']);
  assert.deepEqual(imports, CONTRACT_IMPORTS);
  assert.deepEqual(readManifest().imports, imports);
  // Nor does the glue ask for anything else at instantiation.
  const glue = readFileSync(`${dist}/component/hereabouts.js`, 'utf8');
  assert.deepEqual([...new Set(glue.match(/imports\['[^']+'\]/g))], ["imports['hereabouts:ipam/store']"]);
  assert.doesNotMatch(glue, /wasi:/);
});

test('every core module host-web loads is a verbatim slice of the component (the embedded one: see above)', () => {
  const bytes = readFileSync(`${dist}/hereabouts.wasm`);
  const manifest = readManifest();
  const files = readdirSync(`${dist}/component`).filter((f) => f.endsWith('.wasm')).sort();
  assert.deepEqual(files, Object.keys(manifest.coreModules).sort());
  assert.ok(files.length > 0);
  for (const file of files) {
    const module = readFileSync(`${dist}/component/${file}`);
    assert.equal(sha256(module), manifest.coreModules[file], `${file}: manifest hash`);
    assert.ok(bytes.indexOf(module) >= 0, `${file} is not part of the embedded component`);
  }
});

test('the playground serves the same core modules', () => {
  assert.ok(existsSync(`${root}playground/dist/manifest.json`), 'playground not built: run `node playground/build.mjs` first (host-web/test.sh does)');
  const manifest = readManifest();
  assert.deepEqual(JSON.parse(readFileSync(`${root}playground/dist/manifest.json`, 'utf8')), manifest);
  for (const [file, digest] of Object.entries(manifest.coreModules)) {
    assert.equal(sha256(readFileSync(`${root}playground/dist/component/${file}`)), digest, file);
  }
});

test('a core module that does not match the manifest is refused', async () => {
  const manifest = readManifest();
  const [file] = Object.keys(manifest.coreModules);
  const load = coreModuleLoader({ ...manifest, coreModules: { ...manifest.coreModules, [file]: '00'.repeat(32) } });
  await assert.rejects(load(file), /is not the one built from component/);
  assert.ok((await coreModuleLoader(manifest)(file)) instanceof WebAssembly.Module, 'the listed module loads');
});
