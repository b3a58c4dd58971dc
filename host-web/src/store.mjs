// The WIT `store` import (contract v2) in JavaScript: the one in-memory store of the JS hosts —
// the playground's simulated pods, the API tests and `plan.mjs` all run on it. Its semantics are
// the contract's (wit/hereabouts.wit, interface `store`), the same as the core's reference store
// (core-wasm/src/memory.rs), and it passes the shared cases of vectors/store-contract.json
// (host-web/test/store-contract.test.mjs) in both of the contract's shapes:
// - keeping the core's summaries (as SQLite and etcd do): a read returns the summary and only the
//   query's slots;
// - whole pools (as Kubernetes' IPPool): no summary, every slot.
// It decides nothing: which address, when to retry and how long to wait are the core's.

const sameAttachment = (a, b) => a.containerId === b.containerId && a.ifname === b.ifname;
/** The same pod's interface under any container id; never for an unknown podref. */
const samePodInterface = (a, b) => a.podref !== '' && a.podref === b.podref && a.ifname === b.ifname;
/** Whether `owner` may take over a reservation `holder` has (`reserve` in the WIT). */
const mayTakeOver = (holder, owner) => sameAttachment(holder, owner) || samePodInterface(holder, owner);

const copyOwner = (o) => ({ containerId: o.containerId, ifname: o.ifname, podref: o.podref ?? '', cniNetwork: o.cniNetwork ?? '' });
const slotOf = ([offset, owner]) => ({ offset, owner: copyOwner(owner) });
const reservationKey = (networkName, address) => `${networkName}\u0000${address}`;

/** An in-memory store; `snapshot()` / `MemoryStore.restore()` make it savable (localStorage). */
export class MemoryStore {
  /** `keepsSummaries: false` makes it a store of whole pools, like Kubernetes'. */
  constructor({ keepsSummaries = true } = {}) {
    this.keepsSummaries = keepsSummaries;
    /** pool name → {version: number, range, networkName, summary?: string, slots: Map<offset, owner>} */
    this.pools = new Map();
    /** reservationKey(network, address) → owner */
    this.reservations = new Map();
    /** Refuse this many upcoming commits as stale after bumping the pool's version, as if
     *  another writer had committed in between (tests of the core's retries). */
    this.racesToInject = 0;
    /** `pause-before-retry` answers false from this attempt on (a host deadline). */
    this.deadlineAtAttempt = undefined;
    /** Calls made, by kind (tests of the transaction shape). */
    this.calls = { reads: 0, listings: 0, commits: 0, pauses: 0 };
  }

  /** The functions jco's bindings call for `hereabouts:ipam/store`. */
  imports() {
    return {
      readPool: (pool, query) => this.readPool(pool, query),
      listSlots: (pool) => this.listSlots(pool),
      commit: (pool, query, change) => this.commit(pool, query, change),
      listReservations: (networkName) => this.listReservations(networkName),
      pauseBeforeRetry: (attempt, ceilingUs) => this.pauseBeforeRetry(attempt, ceilingUs),
    };
  }

  #view(pool, query) {
    const stored = this.pools.get(pool.name);
    if (!stored) return { version: '', summary: undefined, slots: [] };
    const summary = this.keepsSummaries ? stored.summary : undefined;
    const slots = [...stored.slots]
      .filter(([, owner]) => summary === undefined || sameAttachment(owner, query) || samePodInterface(owner, query))
      .map(slotOf);
    return { version: String(stored.version), summary, slots };
  }

  readPool(pool, query) {
    this.calls.reads += 1;
    return this.#view(pool, query);
  }

  listSlots(pool) {
    this.calls.listings += 1;
    const stored = this.pools.get(pool.name);
    return { version: stored ? String(stored.version) : '', slots: stored ? [...stored.slots].map(slotOf) : [] };
  }

  commit(pool, query, change) {
    this.calls.commits += 1;
    if (this.racesToInject > 0) {
      this.racesToInject -= 1;
      this.#entry(pool).version += 1;
      return { tag: 'stale', val: this.#view(pool, query) };
    }
    const stored = this.pools.get(pool.name);
    if ((stored ? String(stored.version) : '') !== change.version) {
      return { tag: 'stale', val: this.#view(pool, query) };
    }
    for (const edit of change.edits) {
      const holder = edit.tag === 'claim' ? stored?.slots.get(edit.val.offset) : undefined;
      if (holder) return { tag: 'occupied', val: { offset: edit.val.offset, owner: copyOwner(holder) } };
    }
    for (const edit of change.reservations) {
      if (edit.tag !== 'reserve') continue;
      const { networkName, address, owner } = edit.val;
      const holder = this.reservations.get(reservationKey(networkName, address));
      if (holder && !mayTakeOver(holder, owner)) {
        return { tag: 'reserved', val: { networkName, address, owner: copyOwner(holder) } };
      }
    }
    const entry = this.#entry(pool);
    entry.version += 1;
    if (this.keepsSummaries) entry.summary = change.summary;
    for (const edit of change.edits) {
      switch (edit.tag) {
        case 'claim': entry.slots.set(edit.val.offset, copyOwner(edit.val.owner)); break;
        case 'free': entry.slots.delete(edit.val.offset); break;
        case 'reown': entry.slots.set(edit.val.slot.offset, copyOwner(edit.val.to)); break;
        default: throw new TypeError(`unknown pool edit ${edit.tag}`);
      }
    }
    for (const edit of change.reservations) {
      const { networkName, address, owner } = edit.val;
      const key = reservationKey(networkName, address);
      if (edit.tag === 'reserve') this.reservations.set(key, copyOwner(owner));
      else if (edit.tag === 'release') {
        const holder = this.reservations.get(key);
        if (holder && sameAttachment(holder, owner)) this.reservations.delete(key);
      } else throw new TypeError(`unknown reservation edit ${edit.tag}`);
    }
    return { tag: 'committed', val: String(entry.version) };
  }

  listReservations(networkName) {
    const out = [];
    for (const [key, owner] of this.reservations) {
      const [network, address] = key.split('\u0000');
      if (network === networkName) out.push({ networkName: network, address, owner: copyOwner(owner) });
    }
    return out;
  }

  /**
   * Called by the core after a lost commit. Nothing else writes to this store between the
   * core's read and its commit (the calls are synchronous), so a commit is only lost when a test
   * injects the race, and a wait would only waste time: the answer is immediate.
   */
  pauseBeforeRetry(attempt, _ceilingUs) {
    this.calls.pauses += 1;
    return this.deadlineAtAttempt === undefined || attempt < this.deadlineAtAttempt;
  }

  #entry(pool) {
    let entry = this.pools.get(pool.name);
    if (!entry) {
      entry = { version: 0, range: pool.range, networkName: pool.networkName, summary: undefined, slots: new Map() };
      this.pools.set(pool.name, entry);
    }
    return entry;
  }

  /** Every pool's allocations: `[{pool, range, networkName, offset, owner}]`. */
  entries() {
    const out = [];
    for (const [name, pool] of this.pools) {
      for (const [offset, owner] of pool.slots) out.push({ pool: name, range: pool.range, networkName: pool.networkName, offset, owner: copyOwner(owner) });
    }
    return out;
  }

  clear() {
    this.pools.clear();
    this.reservations.clear();
  }

  /** A JSON-able copy of the whole store. */
  snapshot() {
    return {
      pools: [...this.pools].map(([name, p]) => ({
        name, version: p.version, range: p.range, networkName: p.networkName, summary: p.summary, slots: [...p.slots].map(([o, owner]) => [o, copyOwner(owner)]),
      })),
      reservations: [...this.reservations].map(([key, owner]) => {
        const [networkName, address] = key.split('\u0000');
        return { networkName, address, owner: copyOwner(owner) };
      }),
    };
  }

  /**
   * Replaces the contents with a `snapshot()` (the component's bindings stay attached). A
   * snapshot saved before contract v2 (no summaries, reservations as `[key, owner]`, owners
   * without `cniNetwork`) loads too: its pools read as whole pools until the core's next commit
   * stores a summary.
   */
  load(snapshot) {
    this.clear();
    for (const p of snapshot?.pools ?? []) {
      this.pools.set(p.name, {
        version: p.version, range: p.range, networkName: p.networkName, summary: p.summary ?? undefined,
        slots: new Map((p.slots ?? []).map(([offset, owner]) => [offset, copyOwner(owner)])),
      });
    }
    for (const r of snapshot?.reservations ?? []) {
      if (Array.isArray(r)) this.reservations.set(r[0], copyOwner(r[1]));
      else this.reservations.set(reservationKey(r.networkName, r.address), copyOwner(r.owner));
    }
    return this;
  }

  static restore(snapshot) {
    return new MemoryStore().load(snapshot);
  }
}

/**
 * Saved plans in `localStorage` (or any object with getItem/setItem): name → any JSON value.
 * The playground saves its networks and the simulated store's snapshot under a name.
 */
export class SavedPlans {
  constructor(storage = globalThis.localStorage, key = 'hereabouts.plans.v1') {
    this.storage = storage;
    this.key = key;
  }
  #all() {
    try {
      return JSON.parse(this.storage?.getItem(this.key) ?? '{}') ?? {};
    } catch {
      return {};
    }
  }
  list() {
    return Object.keys(this.#all()).sort();
  }
  load(name) {
    return this.#all()[name];
  }
  save(name, plan) {
    const all = this.#all();
    all[name] = plan;
    this.storage.setItem(this.key, JSON.stringify(all));
  }
  remove(name) {
    const all = this.#all();
    delete all[name];
    this.storage.setItem(this.key, JSON.stringify(all));
  }
}
