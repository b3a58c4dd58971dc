#!/usr/bin/env node
// `hereabouts plan` in Node: reads the plan document on stdin, prints the same JSON and exits
// with the same status as the native command, computed by the same component.
//
//   echo '{"ipam": {"range": "10.0.0.0/24"}, "allocated": ["10.0.0.1"]}' | node host-web/plan.mjs

import { loadHereabouts } from './src/node.mjs';

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);

let result;
try {
  // Like Rust's read_to_string: input that is not UTF-8 is an I/O error (CNI code 5).
  const text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(Buffer.concat(chunks));
  const hereabouts = await loadHereabouts();
  result = await hereabouts.runPlan(text);
} catch (e) {
  if (e instanceof TypeError && e.code === 'ERR_ENCODING_INVALID_ENCODED_DATA') {
    result = { status: 1, output: { code: 5, msg: 'stdin: stream did not contain valid UTF-8' } };
  } else {
    result = { status: 1, output: { code: 102, msg: `allocator component failed to load: ${e.message}` } };
  }
}
process.stdout.write(`${JSON.stringify(result.output)}\n`);
process.exitCode = result.status;
