// Shared by the host-web tests: the native binary and the vector files.

import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const root = fileURLToPath(new URL('../../', import.meta.url));
export const planMjs = fileURLToPath(new URL('../plan.mjs', import.meta.url));

/** The `hereabouts` binary under test ($HEREABOUTS_BIN, else target/release/hereabouts). */
export const bin = process.env.HEREABOUTS_BIN ?? `${root}target/release/hereabouts`;
if (!existsSync(bin)) throw new Error(`no hereabouts binary at ${bin}: set HEREABOUTS_BIN`);

/** The plan vectors: the shared file, plus host-web's own cases. */
export function vectors() {
  const files = ['vectors/plan.json', 'vectors/plan-host-web.json'];
  return files.flatMap((file) => {
    const path = `${root}${file}`;
    if (!existsSync(path)) {
      if (file === 'vectors/plan.json') throw new Error(`${file} is missing`);
      return [];
    }
    return JSON.parse(readFileSync(path, 'utf8')).map((v) => ({ ...v, file }));
  });
}

/** What a vector feeds on stdin: its `input` document as JSON, or its raw `stdin` text (host-web's
 *  own file uses that for syntax errors, which no JSON document can carry). */
export const inputText = (vector) => ('stdin' in vector ? vector.stdin : JSON.stringify(vector.input));

/** Runs a command with stdin; returns {status, stdout, stderr}. */
export function run(command, args, input) {
  const result = spawnSync(command, args, { input, encoding: 'utf8', timeout: 60_000 });
  if (result.error) throw result.error;
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

export const nativePlan = (input) => run(bin, ['plan'], input);
export const nodePlan = (input) => run(process.execPath, [planMjs], input);
