// The store contract's conformance runner in JavaScript: vectors/store-contract.json over any
// object with the store import's functions (readPool, listSlots, commit, listReservations), as
// host-cni/host/src/contract.rs runs it over every Rust backend. The rules are that file's
// `about`: versions are opaque and bound by `$name`, a read's slots are compared after filtering
// by the query (a store of whole pools returns all of them), summaries only where kept, slots by
// offset, reservations by address. A failing step throws with the case, the step and both answers.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

const vectors = JSON.parse(readFileSync(new URL('../../vectors/store-contract.json', import.meta.url), 'utf8'));

/** The cases, each `{name, steps}`. */
export const cases = vectors.cases;

const sameAttachment = (a, b) => a.containerId === b.containerId && a.ifname === b.ifname;
const byOffset = (slots) => [...slots].sort((a, b) => Number(a.offset) - Number(b.offset));

/**
 * Runs one case on `store` (fresh and empty). `shape.keepsSummaries`: the store keeps the core's
 * summaries (else it returns whole pools and no summary). Returns the number of steps run.
 */
export function runCase(testCase, store, shape) {
  const versions = new Map(); // `$name` → {pool, version}
  let context = '';

  const pool = (name) => {
    const p = vectors.pools[name];
    return { name: p.name, range: p.range, networkName: p['network-name'] };
  };
  const owner = (name) => {
    const o = vectors.owners[name];
    assert.ok(o, `${context}: unknown owner ${name}`);
    return { containerId: o['container-id'], ifname: o.ifname, podref: o.podref, cniNetwork: o['cni-network'] };
  };
  const slot = (text) => {
    const [name, offset] = text.split('@');
    return { offset, owner: owner(name) };
  };
  const version = (p, expected, got) => {
    if (!expected.startsWith('$')) return assert.equal(got, expected, `${context}: version`);
    const bound = versions.get(expected);
    if (bound) return assert.equal(got, bound.version, `${context}: version ${expected}`);
    for (const [name, v] of versions) {
      assert.ok(!(v.pool === p.name && v.version === got), `${context}: ${expected} = ${JSON.stringify(got)} is ${name} of ${p.name} already`);
    }
    versions.set(expected, { pool: p.name, version: got });
  };
  const boundVersion = (text) => (text.startsWith('$') ? versions.get(text).version : text);
  const reservation = (p, r) => ({ networkName: r['network-name'] ?? p.networkName, address: r.address, owner: owner(r.owner) });
  const change = (p, c) => ({
    version: boundVersion(c.version),
    summary: c.summary,
    edits: c.edits.map((e) => {
      if (e.claim) return { tag: 'claim', val: slot(e.claim) };
      if (e.free) return { tag: 'free', val: slot(e.free) };
      if (e.reown) return { tag: 'reown', val: { slot: slot(e.reown.slot), to: owner(e.reown.to) } };
      throw new Error(`${context}: unknown edit ${JSON.stringify(e)}`);
    }),
    reservations: (c.reservations ?? []).map((e) => {
      if (e.reserve) return { tag: 'reserve', val: reservation(p, e.reserve) };
      if (e.release) return { tag: 'release', val: reservation(p, e.release) };
      throw new Error(`${context}: unknown reservation edit ${JSON.stringify(e)}`);
    }),
  });
  const expectView = (p, query, view, expected) => {
    version(p, expected.version, view.version);
    if (shape.keepsSummaries) assert.equal(view.summary ?? null, expected.summary, `${context}: summary`);
    else assert.equal(view.summary, undefined, `${context}: a store of whole pools keeps no summary`);
    const matching = view.slots.filter((s) => sameAttachment(s.owner, query)
      || (query.podref !== '' && s.owner.podref === query.podref && s.owner.ifname === query.ifname));
    assert.deepEqual(byOffset(matching), byOffset(expected.slots.map(slot)), `${context}: slots for the query`);
  };

  testCase.steps.forEach((step, i) => {
    context = `case ${JSON.stringify(testCase.name)}, step ${i}`;
    const { expect } = step;
    if ('read-pool' in step) {
      const [p, query] = [pool(step['read-pool']), owner(step.query)];
      expectView(p, query, store.readPool(p, query), expect);
    } else if ('list-slots' in step) {
      const p = pool(step['list-slots']);
      const listing = store.listSlots(p);
      version(p, expect.version, listing.version);
      assert.deepEqual(byOffset(listing.slots), byOffset(expect.slots.map(slot)), context);
    } else if ('list-reservations' in step) {
      const got = store.listReservations(step['list-reservations'])
        .sort((a, b) => (a.address < b.address ? -1 : a.address > b.address ? 1 : 0))
        .map((r) => [r.address, r.owner]);
      assert.deepEqual(got, expect.map((r) => [r.address, owner(r.owner)]), context);
    } else if ('commit' in step) {
      const [p, query] = [pool(step.commit), owner(step.query)];
      const outcome = store.commit(p, query, change(p, step.change));
      assert.ok(outcome.tag in expect, `${context}: expected ${JSON.stringify(expect)}, got ${JSON.stringify(outcome)}`);
      const want = expect[outcome.tag];
      switch (outcome.tag) {
        case 'committed': version(p, want, outcome.val); break;
        case 'stale': expectView(p, query, outcome.val, want); break;
        case 'occupied': assert.deepEqual(outcome.val, slot(want), context); break;
        case 'reserved':
          assert.equal(outcome.val.address, want.address, context);
          assert.deepEqual(outcome.val.owner, owner(want.owner), context);
          break;
        default: throw new Error(`${context}: unknown outcome ${JSON.stringify(outcome)}`);
      }
    } else {
      throw new Error(`${context}: unknown step ${JSON.stringify(step)}`);
    }
  });
  return testCase.steps.length;
}
