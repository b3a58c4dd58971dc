// The parity test: every vector through `node host-web/plan.mjs` and through the native
// `hereabouts plan` — same stdout, byte for byte, same exit status, and both as the vector
// expects; and `--format text` alike for the vectors with warnings.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, test } from 'node:test';

import { expected, inputText, nativePlan, nodePlan, root, vectors } from './helpers.mjs';

for (const vector of vectors()) {
  test(`plan parity ${vector.file}: ${vector.name}`, () => {
    const input = inputText(vector);
    const native = nativePlan(input);
    const node = nodePlan(input);
    assert.equal(node.stdout, native.stdout, `stdout differs for input ${input}`);
    assert.equal(node.status, native.status, 'exit status differs');
    assert.deepEqual(JSON.parse(node.stdout), expected(vector), 'output is not what the vector expects');
    assert.equal(node.status === 0, 'ranges' in vector.expect, 'exit status does not match success/error');
    const slices = vector.expect.node_slices;
    const kept = vector.expect.ranges?.some((r) => (r.persistent ?? '0') !== '0');
    if (vector.expect.warnings?.length || slices || kept) {
      const [nativeText, nodeText] = [nativePlan(input, ['--format', 'text']), nodePlan(input, ['--format', 'text'])];
      assert.equal(nodeText.stdout, nativeText.stdout, '--format text differs');
      const lines = nodeText.stdout.trimEnd().split('\n');
      const warnings = (vector.expect.warnings ?? []).map((w) => `warning: ${w.field}: ignored ${w.ignored}: ${w.reason} [${w.rule}]`);
      if (warnings.length) assert.deepEqual(lines.slice(-warnings.length), warnings, 'one line per warning, after the table');
      if (kept) {
        // A PERSISTENT column after FREE, each range's count in it.
        const header = lines[0].split(/\s+/);
        assert.deepEqual(header, ['RANGE', 'FIRST', 'LAST', 'CAPACITY', 'FREE', 'PERSISTENT', 'NEXT']);
        vector.expect.ranges.forEach((r, i) => assert.equal(lines[1 + i].split(/\s+/)[5], r.persistent));
      }
      if (slices) {
        // The line after the table (these vectors have few slices: all are listed).
        assert.equal(lines[1 + vector.expect.ranges.length],
          `node slices: ${slices.count} of ${slices.slice_size} in ${slices.range}, ${slices.addresses_per_slice} addresses each: ${slices.slices.join(', ')}`);
      }
    }
  });
}

// What is decided before the component sees the text: reading the input.
const planFile = join(mkdtempSync(join(tmpdir(), 'hereabouts-plan-')), 'plan.json');
writeFileSync(planFile, JSON.stringify({ ipam: { range: '10.0.0.0/24', range_end: '10.0.1.9' }, allocated: ['10.0.0.1'] }));
after(() => rmSync(dirname(planFile), { recursive: true, force: true }));
const edges = [
  ['stdin that is not UTF-8', [], Buffer.from([0x7b, 0xff, 0x7d])],
  ['a --config file that does not exist', ['--config', '/nonexistent/hereabouts-plan.json'], ''],
  ['a --config file (read instead of stdin), --format text', ['--config', planFile, '--format', 'text'], '{}'],
  ['a --config file that is not a plan document', ['--config', `${root}vectors/plan-host-web.json`], ''],
];
for (const [name, args, input] of edges) {
  test(`plan parity: ${name}`, () => {
    const [native, node] = [nativePlan(input, args), nodePlan(input, args)];
    assert.equal(node.stdout, native.stdout);
    assert.equal(node.status, native.status);
  });
}
