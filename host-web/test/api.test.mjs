// The JS host through the real component: the store import (idempotent ADD, lowest free after a
// release, network-wide reservations for overlapping ranges), the API shapes, saved plans.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { loadHereabouts, MemoryStore, networkConfig, PlanError, SavedPlans } from '../src/node.mjs';

const owner = (id) => ({ containerId: id, ifname: 'eth0', podref: `default/${id}` });

test('allocate hands out the lowest free address, is idempotent, and reuses a released one', async () => {
  const hb = await loadHereabouts();
  const net = networkConfig({ range: '10.1.0.0/29', exclude: ['10.1.0.1/32'] });
  const a = await hb.allocate(net, owner('a'));
  const b = await hb.allocate(net, owner('b'));
  const c = await hb.allocate(net, owner('c'));
  assert.deepEqual([a, b, c].map((l) => l[0].address), ['10.1.0.2', '10.1.0.3', '10.1.0.4']);
  assert.equal((await hb.allocate(net, owner('a')))[0].address, '10.1.0.2', 'same owner, same address');
  await hb.release(net, owner('b'));
  assert.equal((await hb.allocate(net, owner('d')))[0].address, '10.1.0.3', 'lowest free after release');
  assert.deepEqual(await hb.release(net, owner('nobody')), [], 'releasing nothing succeeds');
  const leases = await hb.listLeases(net);
  assert.deepEqual(leases.map((l) => l.owner.containerId).sort(), ['a', 'c', 'd']);
});

test('the store keeps Whereabouts pool names and decimal offsets', async () => {
  const store = new MemoryStore();
  const hb = await loadHereabouts({ store });
  await hb.allocate(networkConfig({ range: '10.2.0.0/24', network_name: 'blue' }), owner('a'));
  const [entry] = store.entries();
  assert.equal(entry.pool, 'blue-10.2.0.0-24');
  assert.equal(entry.offset, '1');
  assert.equal(entry.owner.containerId, 'a');
});

test('overlapping ranges of one network_name never hand out an address twice', async () => {
  const hb = await loadHereabouts();
  const wide = networkConfig({ range: '10.3.0.0/24', network_name: 'n' });
  const narrow = networkConfig({ range: '10.3.0.0/28', network_name: 'n' });
  const first = (await hb.allocate(wide, owner('a')))[0].address;
  const second = (await hb.allocate(narrow, owner('b')))[0].address;
  assert.equal(first, '10.3.0.1');
  assert.notEqual(second, first);
  const overlaps = await hb.overlaps(wide, narrow);
  assert.equal(overlaps.length, 1);
  assert.deepEqual([overlaps[0].first, overlaps[0].last], ['10.3.0.1', '10.3.0.14']);
});

test('exhaustion is a typed error with the native CNI code', async () => {
  const hb = await loadHereabouts();
  const net = networkConfig({ range: '10.4.0.0/30' });
  await hb.allocate(net, owner('a'));
  await hb.allocate(net, owner('b'));
  await assert.rejects(hb.allocate(net, owner('c')), (e) => e instanceof PlanError && e.code === 100);
});

test('plan, validate and range-map answer in the documented shapes', async () => {
  const hb = await loadHereabouts();
  const report = await hb.plan({ ipam: { range: '10.5.0.0/24', exclude: ['10.5.0.0/30'] }, allocated: ['10.5.0.4'] });
  assert.deepEqual(Object.keys(report.ranges[0]), ['capacity', 'first', 'free', 'last', 'next', 'range']);
  assert.equal(report.ranges[0].next, '10.5.0.5');
  const findings = await hb.validate(networkConfig({ range: '10.5.0.0/24', exclude: ['10.6.0.0/24'] }));
  assert.ok(findings.some((f) => f.field === 'exclude[0]' && f.severity === 'error'), JSON.stringify(findings));
  const map = await hb.rangeMap(networkConfig({ range: '10.0.0.0/8' }), [], 0, undefined, undefined, 64);
  assert.equal(map.length, 64);
  assert.deepEqual([map[0].first, map.at(-1).last], ['10.0.0.0', '10.255.255.255']);
  const total = map.reduce((n, b) => n + BigInt(b.allocatable) + BigInt(b.allocated) + BigInt(b.excluded) + BigInt(b.reserved), 0n);
  assert.equal(total, 1n << 24n);
  const zoomed = await hb.rangeMap(networkConfig({ range: '10.0.0.0/8' }), [], 0, '10.0.0.0', '10.0.0.15', 64);
  assert.equal(zoomed.length, 16, 'a bucket never holds less than one address');
});

test('runPlan reports undecodable input with code 6 and exits non-zero', async () => {
  const hb = await loadHereabouts();
  const result = await hb.runPlan('{"ipam": ');
  assert.equal(result.status, 1);
  assert.equal(result.output.code, 6);
});

test('a store snapshot survives a round trip through SavedPlans (localStorage shape)', async () => {
  const storage = new Map();
  const local = { getItem: (k) => storage.get(k) ?? null, setItem: (k, v) => storage.set(k, String(v)) };
  const store = new MemoryStore();
  const hb = await loadHereabouts({ store });
  const net = networkConfig({ range: '10.6.0.0/24' });
  await hb.allocate(net, owner('a'));
  const saved = new SavedPlans(local);
  saved.save('lab', { networks: [{ ipam: { range: '10.6.0.0/24' } }], store: store.snapshot() });
  assert.deepEqual(saved.list(), ['lab']);
  const again = await loadHereabouts({ store: MemoryStore.restore(saved.load('lab').store) });
  assert.equal((await again.allocate(net, owner('b')))[0].address, '10.6.0.2');
  assert.equal((await again.allocate(net, owner('a')))[0].address, '10.6.0.1');
  saved.remove('lab');
  assert.deepEqual(saved.list(), []);
});
