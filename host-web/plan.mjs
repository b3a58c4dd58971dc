#!/usr/bin/env node
// `hereabouts plan` in Node: reads the plan document (stdin, or --config FILE), prints the same
// output and exits with the same status as the native command, computed by the same component —
// which also reads the document, so a bad one is rejected in the same words.
//
//   echo '{"ipam": {"range": "10.0.0.0/24"}, "allocated": ["10.0.0.1"]}' | node host-web/plan.mjs
//   node host-web/plan.mjs --config plan.json --format text

import { readFileSync } from 'node:fs';

import { loadHereabouts, planText } from './src/node.mjs';

function option(name, fallback) {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : fallback;
}

const format = option('--format', 'json');
const config = option('--config');
if (!['json', 'text'].includes(format)) {
  process.stderr.write(`plan.mjs: --format ${format}: expected json or text\n`);
  process.exit(2);
}

/** A failed read in the words of Rust's io::Error (`No such file or directory (os error 2)`):
 *  libuv's description of the errno, capitalised as the C library's strerror writes it. */
function osError(e) {
  const description = /^[A-Z0-9_]+: ([^,]*)/.exec(e.message)?.[1];
  if (!description || typeof e.errno !== 'number') return e.message;
  return `${description[0].toUpperCase()}${description.slice(1)} (os error ${Math.abs(e.errno)})`;
}

/** The document's bytes; `where` names them as the native command does in its errors. */
async function input() {
  if (config !== undefined) {
    try {
      return { where: `--config ${config}`, bytes: readFileSync(config) };
    } catch (e) {
      return { error: { code: 5, msg: `--config ${config}: ${osError(e)}` } };
    }
  }
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return { where: 'stdin', bytes: Buffer.concat(chunks) };
}

async function run() {
  const { where, bytes, error } = await input();
  if (error) return { status: 1, output: error };
  let text;
  try {
    // Like Rust's read_to_string: input that is not UTF-8 is an I/O error (CNI code 5).
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    return { status: 1, output: { code: 5, msg: `${where}: stream did not contain valid UTF-8` } };
  }
  let hereabouts;
  try {
    hereabouts = await loadHereabouts();
  } catch (e) {
    return { status: 1, output: { code: 102, msg: `allocator component failed to load: ${e.message}` } };
  }
  return hereabouts.runPlan(text);
}

const { status, output } = await run();
process.stdout.write(status === 0 && format === 'text' ? planText(output) : `${JSON.stringify(output)}\n`);
process.exitCode = status;
