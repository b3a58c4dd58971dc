#!/usr/bin/env node
// Builds the static playground into dist/: one bundled app.js/app.css (esbuild, from npm
// packages: works offline, no CDN), index.html, and the component files host-web built.
// host-web is built first when its dist/ is missing (it needs ../target/release/hereabouts,
// or HEREABOUTS_BIN).

import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { build } from 'esbuild';

const here = dirname(fileURLToPath(import.meta.url));
const hostWeb = join(here, '..', 'host-web');
const dist = join(here, 'dist');
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';

if (!existsSync(join(hostWeb, 'dist', 'manifest.json'))) {
  if (!existsSync(join(hostWeb, 'node_modules'))) execFileSync(npm, ['ci', '--no-audit', '--no-fund'], { cwd: hostWeb, stdio: 'inherit' });
  execFileSync(process.execPath, ['build.mjs'], { cwd: hostWeb, stdio: 'inherit' });
}

rmSync(dist, { recursive: true, force: true });
mkdirSync(dist, { recursive: true });
await build({
  entryPoints: { app: join(here, 'src', 'main.js') },
  outdir: dist,
  bundle: true,
  format: 'esm',
  target: 'es2022',
  minify: true,
  sourcemap: true,
  logLevel: 'warning',
});
cpSync(join(here, 'index.html'), join(dist, 'index.html'));
// The core modules only: the glue JS is in app.js already.
mkdirSync(join(dist, 'component'));
for (const file of readdirSync(join(hostWeb, 'dist', 'component')).filter((f) => f.endsWith('.wasm'))) {
  cpSync(join(hostWeb, 'dist', 'component', file), join(dist, 'component', file));
}
cpSync(join(hostWeb, 'dist', 'manifest.json'), join(dist, 'manifest.json'));
console.log(`playground: built ${dist}`);
