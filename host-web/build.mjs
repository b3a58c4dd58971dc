#!/usr/bin/env node
// Builds host-web: takes the exact component `hereabouts` embeds and transpiles it with jco.
//
//   node build.mjs [--bin PATH/TO/hereabouts | --component COMPONENT.wasm]
//
// The component comes from `hereabouts component --out` (default binary: ../target/release/
// hereabouts, or $HEREABOUTS_BIN); `--component` takes a component file instead (e.g. the one
// `cargo build -p hereabouts-host` leaves in target/release/build/hereabouts-host-*/out/).
// The build refuses a component whose imports are not exactly the contract's `store` and
// `types` (no WASI: nothing for a shim to provide). Output in dist/:
//   hereabouts.wasm        the component, byte for byte
//   component/             jco's ES module + core modules (async instantiation)
//   manifest.json          sha256 of the component and of every core module the loaders accept

import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { componentImports, CONTRACT_IMPORTS } from './component-imports.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, 'dist');
const out = join(dist, 'component');
const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex');

function option(name) {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : undefined;
}

function fail(message) {
  console.error(`build: ${message}`);
  process.exit(1);
}

const componentArg = option('--component');
const bin = resolve(option('--bin') ?? process.env.HEREABOUTS_BIN ?? join(here, '..', 'target', 'release', 'hereabouts'));

rmSync(dist, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
const component = join(dist, 'hereabouts.wasm');
if (componentArg) {
  if (!existsSync(componentArg)) fail(`--component ${componentArg}: no such file`);
  copyFileSync(componentArg, component);
} else if (existsSync(bin)) {
  execFileSync(bin, ['component', '--out', component], { stdio: 'inherit' });
} else {
  fail(`no component: ${bin} does not exist (build it with \`cargo build --release -p hereabouts\`, or pass --bin/--component)`);
}

const bytes = readFileSync(component);
const imports = await componentImports(bytes);
if (JSON.stringify(imports) !== JSON.stringify(CONTRACT_IMPORTS)) {
  fail(`the component imports ${imports.join(', ') || 'nothing'}; expected exactly ${CONTRACT_IMPORTS.join(', ')}`);
}

// jco's package exports hide its CLI script; it is the package's `bin`.
const jco = join(here, 'node_modules', '@bytecodealliance', 'jco', 'dist', 'jco.js');
execFileSync(process.execPath, [
  jco, 'transpile', component, '-o', out,
  '--name', 'hereabouts',
  '--instantiation', 'async', // we hand it the imports and core modules ourselves
  '--base64-cutoff', '0', // every core module a file, so each can be checked against the component
  '--no-nodejs-compat', // no node:fs fallback in the glue: the loaders read the files
  '--no-typescript', '--quiet',
], { stdio: 'inherit' });
writeFileSync(join(out, 'package.json'), '{ "type": "module" }\n');

const coreModules = Object.fromEntries(
  readdirSync(out).filter((f) => f.endsWith('.wasm')).sort().map((f) => [f, sha256(readFileSync(join(out, f)))]),
);
const manifest = { component: 'hereabouts.wasm', bytes: bytes.length, sha256: sha256(bytes), imports, coreModules };
writeFileSync(join(dist, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
const sizes = readdirSync(out).filter((f) => /\.(wasm|js)$/.test(f)).sort()
  .map((f) => `${f} ${readFileSync(join(out, f)).length}`).join(', ');
console.log(`host-web: component ${manifest.sha256} (${bytes.length} bytes) → dist/component: ${sizes}`);
