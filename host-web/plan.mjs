#!/usr/bin/env node
// `hereabouts plan` in Node: reads the plan document on stdin, prints the same JSON and exits
// with the same status as the native command, computed by the same component.
//
//   echo '{"ipam": {"range": "10.0.0.0/24"}, "allocated": ["10.0.0.1"]}' | node host-web/plan.mjs

import { loadHereabouts } from './src/node.mjs';

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const text = Buffer.concat(chunks).toString('utf8');

let result;
try {
  const hereabouts = await loadHereabouts();
  result = await hereabouts.runPlan(text);
} catch (e) {
  result = { status: 1, output: { code: 102, msg: `allocator component failed to load: ${e.message}` } };
}
process.stdout.write(`${JSON.stringify(result.output)}\n`);
process.exitCode = result.status;
