// The parity test: every plan vector through `node host-web/plan.mjs` and through the native
// `hereabouts plan` — same stdout, byte for byte, same exit status, and both as the vector expects.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { inputText, nativePlan, nodePlan, vectors } from './helpers.mjs';

for (const vector of vectors()) {
  test(`plan vector ${vector.file}: ${vector.name}`, () => {
    const input = inputText(vector);
    const native = nativePlan(input);
    const node = nodePlan(input);
    assert.equal(node.stdout, native.stdout, `stdout differs for input ${input}`);
    assert.equal(node.status, native.status, 'exit status differs');
    assert.deepEqual(JSON.parse(node.stdout), vector.expect, 'output is not what the vector expects');
    assert.equal(node.status === 0, 'ranges' in vector.expect, 'exit status does not match success/error');
  });
}
