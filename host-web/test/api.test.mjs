// The JS host through the real component: reading configs, the store import (idempotent ADD,
// lowest free after a release, network-wide reservations, the core's retries), the overlap
// verdicts, errors with their CNI codes, saved plans.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { CniError, loadHereabouts, MemoryStore, SavedPlans } from '../src/node.mjs';

const owner = (id, cniNetwork = 'net') => ({ containerId: id, ifname: 'eth0', podref: `default/${id}`, cniNetwork });

async function network(hb, ipam) {
  const { network: config, warnings } = await hb.readConfig(ipam);
  assert.deepEqual(warnings, [], `unexpected warnings for ${JSON.stringify(ipam)}`);
  return config;
}

test('allocate hands out the lowest free address, is idempotent, and reuses a released one', async () => {
  const hb = await loadHereabouts();
  const net = await network(hb, { range: '10.1.0.0/29', exclude: ['10.1.0.1/32'] });
  const a = await hb.allocate(net, owner('a'));
  const b = await hb.allocate(net, owner('b'));
  const c = await hb.allocate(net, owner('c'));
  assert.deepEqual([a, b, c].map((l) => l[0].address), ['10.1.0.2', '10.1.0.3', '10.1.0.4']);
  assert.equal((await hb.allocate(net, owner('a')))[0].address, '10.1.0.2', 'same owner, same address');
  await hb.release(net, owner('b'));
  assert.equal((await hb.allocate(net, owner('d')))[0].address, '10.1.0.3', 'lowest free after release');
  assert.deepEqual(await hb.release(net, owner('nobody')), [], 'releasing nothing succeeds');
  assert.deepEqual((await hb.leasesOf(net, owner('c'))).map((l) => l.cidr), ['10.1.0.4/29']);
  const leases = await hb.listLeases(net);
  assert.deepEqual(leases.map((l) => l.owner.containerId).sort(), ['a', 'c', 'd']);
});

test('the same allocations in a store of whole pools (the Kubernetes shape)', async () => {
  const store = new MemoryStore({ keepsSummaries: false });
  const hb = await loadHereabouts({ store });
  const net = await network(hb, { range: '10.1.1.0/29' });
  for (const id of ['a', 'b', 'c']) await hb.allocate(net, owner(id));
  await hb.release(net, owner('b'));
  assert.equal((await hb.allocate(net, owner('d')))[0].address, '10.1.1.2');
  assert.equal(store.pools.get('10.1.1.0-29').summary, undefined, 'no summary kept');
});

test('the store keeps Whereabouts pool names, decimal offsets, the owner whole, and the core\'s summary', async () => {
  const store = new MemoryStore();
  const hb = await loadHereabouts({ store });
  await hb.allocate(await network(hb, { range: '10.2.0.0/24', network_name: 'blue' }), owner('a', 'blue-net'));
  const [entry] = store.entries();
  assert.equal(entry.pool, 'blue-10.2.0.0-24');
  assert.equal(entry.offset, '1');
  assert.deepEqual(entry.owner, owner('a', 'blue-net'));
  assert.equal(typeof store.pools.get('blue-10.2.0.0-24').summary, 'string');
  assert.deepEqual(store.listReservations('blue').map((r) => r.address), ['10.2.0.1']);
  assert.equal(store.calls.commits, 1, 'an ADD is one commit');
});

test('overlapping ranges of one network_name never hand out an address twice', async () => {
  const hb = await loadHereabouts();
  const wide = await network(hb, { range: '10.3.0.0/24', network_name: 'n' });
  const narrow = await network(hb, { range: '10.3.0.0/28', network_name: 'n' });
  const first = (await hb.allocate(wide, owner('a')))[0].address;
  const second = (await hb.allocate(narrow, owner('b')))[0].address;
  assert.equal(first, '10.3.0.1');
  assert.equal(second, '10.3.0.2');
  const overlaps = await hb.overlaps(wide, narrow);
  assert.deepEqual(overlaps, [{ aField: 'range', bField: 'range', first: '10.3.0.1', last: '10.3.0.14', kind: 'protected' }]);
});

test('overlap verdicts are the core\'s: same pool, protected, unprotected, separate networks', async () => {
  const hb = await loadHereabouts();
  const kind = async (a, b) => (await hb.overlaps(await network(hb, a), await network(hb, b))).map((o) => o.kind);
  const off = { enable_overlapping_ranges: false };
  // One pool (same range and name): never twice, whatever enable_overlapping_ranges says.
  assert.deepEqual(await kind({ range: '10.7.0.0/24', ...off }, { range: '10.7.0.0/24', ...off }), ['same-pool']);
  assert.deepEqual(await kind({ range: '10.7.0.0/24' }, { range: '10.7.0.0/25' }), ['protected']);
  assert.deepEqual(await kind({ range: '10.7.0.0/24' }, { range: '10.7.0.0/25', ...off }), ['unprotected']);
  assert.deepEqual(await kind({ range: '10.7.0.0/24', network_name: 'x' }, { range: '10.7.0.0/24' }), ['separate-networks']);
  assert.deepEqual(await kind({ range: '10.7.0.0/24' }, { range: '10.8.0.0/24' }), []);
});

test('exhaustion is a typed error with the native CNI code', async () => {
  const hb = await loadHereabouts();
  const net = await network(hb, { range: '10.4.0.0/30' });
  await hb.allocate(net, owner('a'));
  await hb.allocate(net, owner('b'));
  await assert.rejects(hb.allocate(net, owner('c')), (e) => e instanceof CniError && e.code === 100);
});

test('the core reads the ipam section: warnings for what Whereabouts ignores, errors with their field', async () => {
  const hb = await loadHereabouts();
  const { network: net, warnings } = await hb.readConfig({ range: '10.9.0.0/24', range_start: '10.10.0.1' });
  assert.equal(net.range.range, '10.9.0.0/24');
  assert.deepEqual(warnings.map((w) => [w.rule, w.field, w.ignored]), [['range-start-outside-range', 'range_start', '10.10.0.1']]);
  assert.match(warnings[0].reason, /outside range 10\.9\.0\.0\/24/);
  await assert.rejects(hb.readConfig('{"range": '), (e) => e instanceof CniError && e.code === 6 && /line 1 column/.test(e.msg));
  await assert.rejects(hb.readConfig({ range: '10.9.0.0/24', exclude: ['10.9.0.0/30', 7] }), (e) => e instanceof CniError
    && e.code === 7 && e.field === 'exclude[1]' && e.msg === `exclude[1]: ${e.fieldMessage}`);
  await assert.rejects(hb.readConfig({ range: '10.9.0.0/33' }), (e) => e instanceof CniError
    && e.code === 7 && e.field === 'range' && e.rule === 'range-invalid');
});

test('plan, validate and range-map answer in the documented shapes', async () => {
  const hb = await loadHereabouts();
  const report = await hb.plan({ ipam: { range: '10.5.0.0/24', exclude: ['10.5.0.0/30'], range_end: '10.6.0.0' }, allocated: ['10.5.0.4'] });
  assert.deepEqual(Object.keys(report), ['ranges', 'warnings']);
  assert.deepEqual(Object.keys(report.ranges[0]), ['capacity', 'first', 'free', 'last', 'next', 'range']);
  assert.equal(report.ranges[0].next, '10.5.0.5');
  assert.deepEqual(Object.keys(report.warnings[0]), ['field', 'ignored', 'reason', 'rule']);
  assert.equal(report.warnings[0].field, 'range_end');
  const findings = await hb.validate(await network(hb, { range: '10.5.0.0/24', gateway: '10.5.0.1' }));
  assert.ok(findings.every((f) => ['error', 'warning'].includes(f.severity) && f.rule && f.field), JSON.stringify(findings));
  const net8 = await network(hb, { range: '10.0.0.0/8' });
  const map = await hb.rangeMap(net8, [], 0, undefined, undefined, 64);
  assert.equal(map.length, 64);
  assert.deepEqual([map[0].first, map.at(-1).last], ['10.0.0.0', '10.255.255.255']);
  const total = map.reduce((n, b) => n + BigInt(b.allocatable) + BigInt(b.allocated) + BigInt(b.persistent) + BigInt(b.excluded) + BigInt(b.reserved), 0n);
  assert.equal(total, 1n << 24n);
  const zoomed = await hb.rangeMap(net8, [], 0, '10.0.0.0', '10.0.0.15', 64);
  assert.equal(zoomed.length, 16, 'a bucket never holds less than one address');
});

test('persistent addresses: their own count in plan and their own kind in the map', async () => {
  const hb = await loadHereabouts();
  const doc = { ipam: { range: '10.5.0.0/29' }, allocated: ['10.5.0.1', '10.5.0.2'], persistent: ['10.5.0.2', '10.5.0.3'] };
  const report = await hb.plan(doc);
  assert.deepEqual(Object.keys(report.ranges[0]), ['capacity', 'first', 'free', 'last', 'next', 'persistent', 'range']);
  assert.deepEqual([report.ranges[0].free, report.ranges[0].persistent, report.ranges[0].next], ['3', '2', '10.5.0.4']);
  const { reading, allocated, persistent } = await hb.readPlanDocument(doc);
  assert.deepEqual(persistent, ['10.5.0.2', '10.5.0.3']);
  const [r] = await hb.reports(reading.network, allocated, 4, { persistent });
  assert.deepEqual(r.next, ['10.5.0.4', '10.5.0.5', '10.5.0.6']);
  const map = await hb.rangeMap(reading.network, allocated, 0, undefined, undefined, 8, { persistent });
  const kind = (b) => ['allocatable', 'allocated', 'persistent', 'excluded', 'reserved'].filter((k) => b[k] !== '0');
  assert.deepEqual(map.map(kind), [['reserved'], ['allocated'], ['persistent'], ['persistent'], ['allocatable'], ['allocatable'], ['allocatable'], ['reserved']]);
  for (const b of map) assert.equal(['allocatable', 'allocated', 'persistent', 'excluded', 'reserved'].reduce((n, k) => n + BigInt(b[k]), 0n), 1n);
  // Without the option, the same addresses are only allocated.
  const plain = await hb.rangeMap(reading.network, [...allocated, ...persistent], 0, undefined, undefined, 1);
  assert.deepEqual([plain[0].allocated, plain[0].persistent], ['3', '0']);
  await assert.rejects(hb.plan({ ...doc, persistent: ['10.5.0.9', 'x'] }), (e) => e instanceof CniError && e.code === 7 && e.msg === 'persistent[1]: x is not an IP address');
});

test('node slices: the core\'s slicing in plan, and its verdict on a node count', async () => {
  const hb = await loadHereabouts();
  const report = await hb.plan({ ipam: { range: '10.7.0.0/24', node_slice_size: '/26' } });
  assert.deepEqual(Object.keys(report), ['node_slices', 'ranges', 'warnings']);
  assert.deepEqual(report.node_slices, {
    addresses_per_slice: '62', count: 4, range: '10.7.0.0/24', slice_size: '/26',
    slices: ['10.7.0.0/26', '10.7.0.64/26', '10.7.0.128/26', '10.7.0.192/26'],
  });
  const config = await network(hb, { range: '10.7.0.0/24', node_slice_size: '/26', network_name: 'blue' });
  assert.equal((await hb.nodeSlicing(config, 'cni-name')).poolName, 'blue');
  assert.equal(await hb.fitNodes(config, 4), null);
  const warning = await hb.fitNodes(config, 6);
  assert.equal(warning.rule, 'node-slices-fewer-than-nodes');
  assert.equal(warning.severity, 'warning');
  assert.equal(warning.field, 'node_slice_size');
  assert.match(warning.message, /into 4 slices of 62 addresses, fewer than the 6 nodes: 2 nodes get no slice/);
  assert.match(warning.message, /node_slice_size "\/27" cuts it into 8 slices of 30 addresses/);
  const unsliced = await network(hb, { range: '10.7.0.0/24' });
  await assert.rejects(hb.fitNodes(unsliced, 3), (e) => e instanceof CniError && e.code === 7 && e.field === 'node_slice_size');
});

test('runPlan reports undecodable input with code 6 and exits non-zero', async () => {
  const hb = await loadHereabouts();
  const result = await hb.runPlan('{"ipam": ');
  assert.equal(result.status, 1);
  assert.deepEqual(Object.keys(result.output), ['code', 'msg']);
  assert.equal(result.output.code, 6);
});

test('lost commits are retried by the core, which asks the store only to pause', async () => {
  const store = new MemoryStore();
  const hb = await loadHereabouts({ store });
  const net = await network(hb, { range: 'fd00::/120' });
  store.racesToInject = 3;
  assert.equal((await hb.allocate(net, owner('a')))[0].cidr, 'fd00::1/120');
  // Each retry goes at once on the stale answer's view, with no pause, for the first 16 losses
  // in a row (the core's IMMEDIATE_RETRIES).
  assert.deepEqual([store.calls.commits, store.calls.pauses], [4, 0], 'three lost commits, no pause, then the one that won');
  // Past them the core pauses, and a host deadline ends the retries: contention, CNI 11.
  store.racesToInject = 1000;
  store.deadlineAtAttempt = 2;
  await assert.rejects(hb.allocate(net, owner('b')), (e) => e instanceof CniError && e.code === 11);
  store.racesToInject = 0;
  store.deadlineAtAttempt = undefined;
  assert.equal((await hb.allocate(net, owner('b')))[0].address, 'fd00::2');
});

test('store errors leave with their CNI code and the native words', async () => {
  const failing = (error) => ({
    imports: () => ({
      readPool: () => { throw { payload: error }; },
      listSlots: () => { throw { payload: error }; },
      commit: () => { throw { payload: error }; },
      listReservations: () => { throw { payload: error }; },
      pauseBeforeRetry: () => false,
    }),
  });
  for (const [error, code, msg] of [
    [{ tag: 'unavailable', val: 'etcd timed out' }, 11, 'store unavailable: etcd timed out'],
    [{ tag: 'corrupt', val: 'pool 10.0.0.0-24' }, 5, 'store data is corrupt: pool 10.0.0.0-24'],
    [{ tag: 'failed', val: 'permission denied' }, 5, 'store failed: permission denied'],
  ]) {
    const hb = await loadHereabouts({ store: failing(error) });
    const net = await network(hb, { range: '10.0.0.0/24' });
    await assert.rejects(hb.allocate(net, owner('a')), (e) => e instanceof CniError && e.code === code && e.msg === msg);
  }
});

test('a store import that throws is a trap (CNI 102), and the next call gets a fresh instance', async () => {
  const store = new MemoryStore();
  const readPool = store.readPool.bind(store);
  let explode = true;
  store.readPool = (pool, query) => {
    if (explode) throw new Error('storage import exploded');
    return readPool(pool, query);
  };
  const hb = await loadHereabouts({ store });
  const net = await network(hb, { range: '10.0.0.0/24' });
  await assert.rejects(hb.allocate(net, owner('a')), (e) => e instanceof CniError && e.code === 102 && /exploded/.test(e.msg));
  explode = false;
  assert.equal((await hb.allocate(net, owner('a')))[0].address, '10.0.0.1');
});

test('garbage collection frees only the named CNI network\'s attachments not kept', async () => {
  const hb = await loadHereabouts();
  const net = await network(hb, { range: '10.11.0.0/24' });
  for (const o of [owner('a', 'red'), owner('b', 'red'), owner('c', 'blue')]) await hb.allocate(net, o);
  const freed = await hb.collectGarbage(net, 'red', [owner('a', 'red')]);
  assert.deepEqual(freed.map((h) => [h.owner.containerId, h.lease.address]), [['b', '10.11.0.2']]);
  assert.deepEqual((await hb.listLeases(net)).map((h) => h.owner.containerId).sort(), ['a', 'c']);
});

test('a store snapshot survives a round trip through SavedPlans (localStorage shape)', async () => {
  const storage = new Map();
  const local = { getItem: (k) => storage.get(k) ?? null, setItem: (k, v) => storage.set(k, String(v)) };
  const store = new MemoryStore();
  const hb = await loadHereabouts({ store });
  const net = await network(hb, { range: '10.6.0.0/24' });
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

test('a snapshot saved before contract v2 (no summaries, old reservation keys) still loads', async () => {
  const old = {
    pools: [{ name: 'n-10.12.0.0-24', version: 3, range: '10.12.0.0/24', networkName: 'n',
      slots: [['1', { containerId: 'a', ifname: 'eth0', podref: 'default/a' }], ['3', { containerId: 'c', ifname: 'eth0', podref: 'default/c' }]] }],
    reservations: [['n\u000010.12.0.1', { containerId: 'a', ifname: 'eth0', podref: 'default/a' }],
      ['n\u000010.12.0.3', { containerId: 'c', ifname: 'eth0', podref: 'default/c' }]],
  };
  const store = MemoryStore.restore(old);
  const hb = await loadHereabouts({ store });
  const net = await network(hb, { range: '10.12.0.0/24', network_name: 'n' });
  assert.equal((await hb.allocate(net, owner('b')))[0].address, '10.12.0.2', 'the whole pool was read');
  assert.equal(typeof store.pools.get('n-10.12.0.0-24').summary, 'string', 'the commit stored a summary');
  assert.equal((await hb.allocate(net, owner('d')))[0].address, '10.12.0.4', 'and the summary is right');
  assert.equal((await hb.allocate(net, { containerId: 'a', ifname: 'eth0', podref: 'default/a' }))[0].address, '10.12.0.1');
});
