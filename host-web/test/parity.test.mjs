// The parity test: every vector through `node host-web/plan.mjs` and through the native
// `hereabouts plan` — same stdout, byte for byte, same exit status, and both as the vector
// expects; and `--format text` alike for the vectors with warnings.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { expected, inputText, nativePlan, nodePlan, vectors } from './helpers.mjs';

for (const vector of vectors()) {
  test(`plan parity ${vector.file}: ${vector.name}`, () => {
    const input = inputText(vector);
    const native = nativePlan(input);
    const node = nodePlan(input);
    assert.equal(node.stdout, native.stdout, `stdout differs for input ${input}`);
    assert.equal(node.status, native.status, 'exit status differs');
    assert.deepEqual(JSON.parse(node.stdout), expected(vector), 'output is not what the vector expects');
    assert.equal(node.status === 0, 'ranges' in vector.expect, 'exit status does not match success/error');
    if (vector.expect.warnings?.length) {
      const [nativeText, nodeText] = [nativePlan(input, ['--format', 'text']), nodePlan(input, ['--format', 'text'])];
      assert.equal(nodeText.stdout, nativeText.stdout, '--format text differs');
      const lines = nodeText.stdout.trimEnd().split('\n');
      const warnings = vector.expect.warnings.map((w) => `warning: ${w.field}: ignored ${w.ignored}: ${w.reason} [${w.rule}]`);
      assert.deepEqual(lines.slice(-warnings.length), warnings, 'one line per warning, after the table');
    }
  });
}
