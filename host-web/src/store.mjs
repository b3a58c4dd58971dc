// The WIT `store` import in JavaScript: the same model as every native backend (see
// host-cni/host/src/memory.rs): versioned pools keyed by Whereabouts' pool name, conditional
// writes, create-if-absent reservations per network. Everything the component keeps lives here.

const storeError = (tag, val) => ({ payload: val === undefined ? { tag } : { tag, val } });
const sameHolder = (a, b) => a.containerId === b.containerId && a.ifname === b.ifname;
const copyOwner = (o) => ({ containerId: o.containerId, ifname: o.ifname, podref: o.podref });

/** An in-memory store; `snapshot()` / `MemoryStore.restore()` make it savable (localStorage). */
export class MemoryStore {
  constructor() {
    /** pool name → {version: number, range, networkName, slots: Map<offset, owner>} */
    this.pools = new Map();
    /** `${network}\u0000${address}` → owner */
    this.reservations = new Map();
  }

  /** The functions jco's bindings call for `hereabouts:ipam/store`. */
  imports() {
    return {
      readPool: (pool) => this.readPool(pool),
      writePool: (pool, version, edits) => this.writePool(pool, version, edits),
      reserveAddress: (network, address, owner) => this.reserveAddress(network, address, owner),
      releaseAddress: (network, address, owner) => this.releaseAddress(network, address, owner),
      // Nothing else writes to this store, so a lost write cannot repeat: a few retries suffice.
      pauseBeforeRetry: (attempt) => attempt < 100,
    };
  }

  readPool(pool) {
    const entry = this.pools.get(pool.name);
    if (!entry) return { version: '', slots: [] };
    return {
      version: String(entry.version),
      slots: [...entry.slots].map(([offset, owner]) => ({ offset, owner: copyOwner(owner) })),
    };
  }

  writePool(pool, version, edits) {
    const entry = this.pools.get(pool.name);
    const current = entry ? String(entry.version) : '';
    if (current !== version) throw storeError('conflict');
    const next = entry ?? { version: 0, range: pool.range, networkName: pool.networkName, slots: new Map() };
    next.version += 1;
    for (const edit of edits) {
      if (edit.tag === 'claim') next.slots.set(edit.val.offset, copyOwner(edit.val.owner));
      else if (edit.tag === 'free') next.slots.delete(edit.val);
      else throw storeError('failed', `unknown pool edit ${edit.tag}`);
    }
    this.pools.set(pool.name, next);
  }

  reserveAddress(network, address, owner) {
    const key = `${network}\u0000${address}`;
    const holder = this.reservations.get(key);
    if (holder && !sameHolder(holder, owner)) return copyOwner(holder);
    this.reservations.set(key, copyOwner(owner));
    return undefined;
  }

  releaseAddress(network, address, owner) {
    const key = `${network}\u0000${address}`;
    const holder = this.reservations.get(key);
    if (holder && sameHolder(holder, owner)) this.reservations.delete(key);
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
      pools: [...this.pools].map(([name, p]) => ({ name, version: p.version, range: p.range, networkName: p.networkName, slots: [...p.slots] })),
      reservations: [...this.reservations],
    };
  }

  /** Replaces the contents with a `snapshot()` (the component's bindings stay attached). */
  load(snapshot) {
    this.clear();
    for (const p of snapshot?.pools ?? []) {
      this.pools.set(p.name, { version: p.version, range: p.range, networkName: p.networkName, slots: new Map(p.slots) });
    }
    for (const [key, owner] of snapshot?.reservations ?? []) this.reservations.set(key, owner);
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
