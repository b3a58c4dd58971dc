// Shared by the host-web tests: the native binary, the vector files and their rules.

import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = fileURLToPath(new URL('../../', import.meta.url));
export const planMjs = fileURLToPath(new URL('../plan.mjs', import.meta.url));

/** The `hereabouts` binary the tests compare with ($HEREABOUTS_BIN, else target/release/hereabouts). */
export const bin = process.env.HEREABOUTS_BIN ?? `${root}target/release/hereabouts`;

/** Fails the calling test when there is no binary to compare with. */
export function requireBin() {
  if (!existsSync(bin)) throw new Error(`no hereabouts binary at ${bin}: set HEREABOUTS_BIN`);
  return bin;
}

/** The vector files every host runs (core-wasm/tests/vectors.rs describes them). */
export const VECTOR_FILES = Object.freeze({ 'vectors/plan.json': 40, 'vectors/whereabouts.json': 60, 'vectors/plan-host-web.json': 60 });

/** Every vector, each with its `file`; a file that shrank below its floor is an error. */
export function vectors() {
  return Object.entries(VECTOR_FILES).flatMap(([file, atLeast]) => {
    const list = JSON.parse(readFileSync(`${root}${file}`, 'utf8'));
    if (list.length < atLeast) throw new Error(`${file} shrank to ${list.length} vectors`);
    return list.map((v) => ({ ...v, file }));
  });
}

/** What a vector feeds on stdin: its raw `stdin` text, or its `input` document as JSON. */
export const inputText = (vector) => (typeof vector.stdin === 'string' ? vector.stdin : JSON.stringify(vector.input));

/** What a vector expects `hereabouts plan` to print: an `expect` with `ranges` and no
 *  `warnings` expects none. */
export function expected(vector) {
  const expect = structuredClone(vector.expect);
  if ('ranges' in expect && !('warnings' in expect)) expect.warnings = [];
  return expect;
}

/** Runs a command with stdin; returns {status, stdout, stderr}. Stdin is a file, not a pipe:
 *  a command that never reads it (`--config`) and exits early must not fail the write (EPIPE). */
export function run(command, args, input) {
  const dir = mkdtempSync(join(tmpdir(), 'hereabouts-stdin-'));
  const path = join(dir, 'stdin');
  writeFileSync(path, input ?? '');
  const fd = openSync(path, 'r');
  try {
    const result = spawnSync(command, args, { stdio: [fd, 'pipe', 'pipe'], encoding: 'utf8', timeout: 60_000 });
    if (result.error) throw result.error;
    return { status: result.status, stdout: result.stdout, stderr: result.stderr };
  } finally {
    closeSync(fd);
    rmSync(dir, { recursive: true, force: true });
  }
}

export const nativePlan = (input, args = []) => run(requireBin(), ['plan', ...args], input);
export const nodePlan = (input, args = []) => run(process.execPath, [planMjs, ...args], input);
