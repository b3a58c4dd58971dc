// The shared vector files through the component in Node, as every host runs them
// (core-wasm/tests/vectors.rs, host-cni/host/tests/component.rs): the document text goes through
// `read-plan-document`, the reading through `plan`, and the answer — `hereabouts plan`'s output —
// must be the vector's `expect`.

import assert from 'node:assert/strict';
import { before, test } from 'node:test';

import { loadHereabouts } from '../src/node.mjs';
import { expected, inputText, vectors } from './helpers.mjs';

let hb;
before(async () => {
  hb = await loadHereabouts();
});

for (const vector of vectors()) {
  test(`vector ${vector.file}: ${vector.name}`, async () => {
    const { status, output } = await hb.runPlan(inputText(vector));
    assert.deepEqual(output, expected(vector));
    assert.equal(status, 'ranges' in output ? 0 : 1);
  });
}
