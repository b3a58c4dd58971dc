// The JavaScript memory store meets the store contract (vectors/store-contract.json), in both of
// the contract's shapes, through the very functions jco's bindings call.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { MemoryStore } from '../src/store.mjs';
import { cases, runCase } from './contract.mjs';

assert.ok(cases.length >= 15, `store-contract.json shrank to ${cases.length} cases`);

for (const keepsSummaries of [true, false]) {
  const shape = keepsSummaries ? 'keeping summaries' : 'whole pools';
  for (const testCase of cases) {
    test(`store contract (${shape}): ${testCase.name}`, () => {
      const steps = runCase(testCase, new MemoryStore({ keepsSummaries }).imports(), { keepsSummaries });
      assert.ok(steps > 0);
    });
  }
}
