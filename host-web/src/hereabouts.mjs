// The Hereabouts allocator component in JavaScript — the host shared by Node and the browser.
//
// `load*` (see node.mjs, browser.mjs) instantiates the jco-transpiled component, which is the very
// `.wasm` that `hereabouts` embeds (build.mjs records its sha256; the loaders check every core
// module against it). The component imports exactly the contract's `store` and `types`
// interfaces: it gets one capability, the store, served by a `MemoryStore` (store.mjs). There is
// no WASI to provide, so nothing is stubbed or trapped.
//
// The host decides nothing itself: an ipam section is read by the component (`readConfig`), and
// every answer — plans, findings, overlap verdicts, maps, leases — is the component's. This file
// only passes values across and turns WIT errors into CniErrors (errors.mjs).
//
// API (every method is async):
//   readConfig(ipam)        → {network, warnings}: `ipam` is the section's JSON text or a value;
//                             throws CniError 6 (not JSON) or 7 (invalid, with `field`).
//   readPlanDocument(text)  → {reading: {network, warnings}, allocated, persistent}
//   plan(document)          → {node_slices?, ranges: [{capacity, first, free, last, next,
//                              persistent?, range}],
//                              warnings: [{field, ignored, reason, rule}]} — `hereabouts plan`'s
//                             output; `document` is its input, as text or a value. `node_slices`
//                             ({addresses_per_slice, count, range, slice_size, slices}) only for
//                             a config with node_slice_size; `persistent` only when the
//                             document lists persistent addresses.
//   runPlan(text)           → {status, output}: exactly what `hereabouts plan` prints and exits with.
//   reports(network, allocated, preview, {persistent}) → the WIT range-reports (next: up to
//                             `preview` addresses; `persistent`: the count of the request's
//                             `persistent` addresses, kept for an IPAMClaim or StatefulSet
//                             member with no pod — taken, whether or not also in `allocated`).
//   validate(network)       → [{rule, severity, field, message}] — every finding at once.
//   nodeSlicing(network, cniNetwork) → {poolName, range, sliceSize, slices, addressesPerSlice}
//                             for a config with node_slice_size (throws CniError 7 without).
//   fitNodes(network, nodes) → null when `nodes` nodes each get a slice, else the core's warning
//                             {rule: 'node-slices-fewer-than-nodes', severity, field, message}.
//   overlaps(a, b)          → [{aField, bField, first, last, kind}], kind: same-pool | protected |
//                             unprotected | separate-networks (the core's verdict).
//   rangeMap(network, allocated, rangeIndex, from, to, buckets, {persistent}) → [{first, last,
//                             allocatable, allocated, persistent, excluded, reserved,
//                             hasGateway}]: each address one kind (allocated: held by pods).
//   allocate(network, owner, {requested}) / release / leasesOf / listLeases /
//   collectGarbage(network, cniNetwork, keep) — through the store.
// `network` is a WIT network-config as `readConfig` returned it; owners are
// `{containerId, ifname, podref?, cniNetwork?}`.

import { Code, CniError, fromConfigError, fromIpamError } from './errors.mjs';
import { planOut } from './plan-output.mjs';
import { MemoryStore } from './store.mjs';

export { Code, CniError } from './errors.mjs';
export { planOut, planText } from './plan-output.mjs';
export { MemoryStore, SavedPlans } from './store.mjs';

/** An owner with every WIT field (podref and CNI network "" when unknown). */
const fullOwner = (o) => ({ containerId: o.containerId, ifname: o.ifname, podref: o.podref ?? '', cniNetwork: o.cniNetwork ?? '' });

/** A thrown WIT error of an export (jco's ComponentError carries it as `payload`). */
const witError = (e) => e !== null && typeof e === 'object' && 'payload' in e && typeof e.payload?.tag === 'string';

/**
 * Creates the host. `instantiate` is jco's (async instantiation mode), `getCoreModule(name)`
 * returns a (promise of a) compiled WebAssembly.Module, `store` serves the store import.
 */
export async function createHereabouts({ instantiate, getCoreModule, store = new MemoryStore(), manifest = {} }) {
  // Exactly the component's imports; `types` has no functions.
  const imports = { 'hereabouts:ipam/store': store.imports(), 'hereabouts:ipam/types': {} };
  let exports = null;
  const start = async () => {
    exports = (await instantiate(getCoreModule, imports)).allocator;
  };
  await start();

  /** Runs one export; a WIT error becomes a CniError (by `convert`), a trap poisons the instance. */
  async function call(fn, convert = fromIpamError) {
    if (!exports) await start();
    try {
      return fn(exports);
    } catch (e) {
      if (witError(e)) throw convert(e.payload);
      exports = null; // a trapped instance must not be reused
      throw new CniError(Code.Internal, `allocator component trapped: ${e?.message ?? e}`);
    }
  }

  const text = (value) => (typeof value === 'string' ? value : JSON.stringify(value));
  const planRequest = (network, allocated = [], preview = 1, persistent = []) => ({ network, allocated, persistent, preview });

  const api = {
    store,
    manifest,
    componentSha256: manifest.sha256,

    async readConfig(ipam) {
      return call((a) => a.readConfig(text(ipam)), fromConfigError);
    },
    async readPlanDocument(document) {
      return call((a) => a.readPlanDocument(text(document)), fromConfigError);
    },
    async reports(network, allocated = [], preview = 1, { persistent = [] } = {}) {
      return call((a) => a.plan(planRequest(network, allocated, preview, persistent)));
    },
    async plan(document) {
      const { reading, allocated, persistent } = await api.readPlanDocument(document);
      const reports = await api.reports(reading.network, allocated, 1, { persistent });
      // A plan document has no CNI `name`: the slicing's pool name is not shown.
      const slicing = reading.network.nodeSliceSize == null ? undefined : await api.nodeSlicing(reading.network, '');
      return planOut(reports, reading.warnings, slicing, persistent.length > 0);
    },
    async nodeSlicing(network, cniNetwork = '') {
      return call((a) => a.nodeSlicing(network, cniNetwork));
    },
    async fitNodes(network, nodes) {
      return (await call((a) => a.fitNodes(network, nodes))) ?? null;
    },
    async runPlan(documentText) {
      try {
        return { status: 0, output: await api.plan(documentText) };
      } catch (e) {
        if (e instanceof CniError) return { status: 1, output: e.toJSON() };
        throw e;
      }
    },
    async validate(network) {
      return call((a) => a.validate(network));
    },
    async overlaps(a, b) {
      return call((x) => x.overlaps(a, b));
    },
    async rangeMap(network, allocated, rangeIndex, from, to, buckets, { persistent = [] } = {}) {
      return call((a) => a.rangeMap(planRequest(network, allocated, 0, persistent), rangeIndex, from ?? undefined, to ?? undefined, buckets));
    },
    async allocate(network, owner, { requested = [] } = {}) {
      return call((a) => a.allocate(network, { owner: fullOwner(owner), requested }));
    },
    async release(network, owner) {
      return call((a) => a.release(network, fullOwner(owner)));
    },
    async leasesOf(network, owner) {
      return call((a) => a.leasesOf(network, fullOwner(owner)));
    },
    async collectGarbage(network, cniNetwork, keep = []) {
      return call((a) => a.collectGarbage(network, cniNetwork, keep.map(fullOwner)));
    },
    async listLeases(network) {
      return call((a) => a.listLeases(network));
    },
  };
  return api;
}
