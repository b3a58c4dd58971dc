// The Hereabouts allocator component in JavaScript — the host shared by Node and the browser.
//
// `load*` (see node.mjs, browser.mjs) instantiates the jco-transpiled component, which is the very
// `.wasm` that `hereabouts` embeds (build.mjs records its sha256; the loaders check every core
// module against it). The component gets one capability, the `store` import, served by a
// `MemoryStore`; the WASI imports std links in are traps, exactly as in the native host.
//
// API (every method is async):
//   plan(document)          → {ranges: [{capacity, first, free, last, next, range}]}
//                             `document` is `hereabouts plan`'s input {ipam, allocated}; throws a
//                             PlanError whose toJSON() is `hereabouts plan`'s error {code, msg}.
//   runPlan(text)           → {status, output}: exactly what `hereabouts plan` prints and exits with.
//   reports(network, allocated, preview) → the WIT range-reports (next: up to `preview` addresses).
//   validate(network)       → [{rule, severity, field, message}] — every finding at once.
//   overlaps(a, b)          → [{aField, bField, first, last}]
//   rangeMap(network, allocated, rangeIndex, from, to, buckets) → [{first, last, allocatable,
//                             allocated, excluded, reserved, hasGateway}]
//   allocate(network, owner) / release(network, owner) / listLeases(network) — through `store`.
// `network` is a WIT network-config; `networkConfig(ipam)` builds one from an ipam section.
// Component errors are thrown as PlanError with the CNI code the native host would use.

import { Code, PlanError, networkConfig, planInput } from './config.mjs';
import { scanJson } from './json-errors.mjs';
import { MemoryStore } from './store.mjs';

export { Code, PlanError, networkConfig, planInput } from './config.mjs';
export { MemoryStore, SavedPlans } from './store.mjs';

/** Imports the component needs beyond `store`: every function traps, like wasmtime's
 *  `define_unknown_imports_as_traps`. The core never calls them. */
function trapInterface(name) {
  return new Proxy({}, {
    has: () => true,
    get(_, member) {
      if (typeof member !== 'string') return undefined;
      const trap = function () {
        throw new Error(`${name}#${member}: the allocator has no ambient authority (WASI import trapped)`);
      };
      Object.defineProperty(trap, 'name', { value: member });
      return trap;
    },
  });
}

function importsFor(store) {
  const storeImports = store.imports();
  return new Proxy({}, {
    has: () => true,
    get(_, name) {
      if (typeof name !== 'string') return undefined;
      if (name.startsWith('hereabouts:ipam/store')) return storeImports;
      if (name.startsWith('hereabouts:ipam/')) return {};
      return trapInterface(name);
    },
  });
}

/** `describe_store_error` (host-cni/host/src/bindings.rs) and the CNI codes of host-cni/host/src/error.rs. */
function storeErrorToPlanError(error) {
  switch (error.tag) {
    case 'conflict': return new PlanError(Code.TryAgainLater, 'store write conflict');
    case 'unavailable': return new PlanError(Code.TryAgainLater, `store unavailable: ${error.val}`);
    case 'corrupt': return new PlanError(Code.Io, `store data is corrupt: ${error.val}`);
    default: return new PlanError(Code.Io, `store failed: ${error.val}`);
  }
}

/** An ipam-error payload → PlanError (`describe_ipam_error` + `From<&IpamError> for CniError`). */
export function ipamErrorToPlanError(error) {
  switch (error.tag) {
    case 'invalid-config': return new PlanError(Code.InvalidConfig, `${error.val.field}: ${error.val.message}`);
    case 'exhausted': return new PlanError(Code.Exhausted, error.val);
    case 'address-unavailable': return new PlanError(Code.AddressUnavailable, error.val);
    case 'contention': return new PlanError(Code.TryAgainLater, error.val);
    case 'store': return storeErrorToPlanError(error.val);
    default: return new PlanError(Code.Internal, `unknown allocator error ${JSON.stringify(error)}`);
  }
}

/** Canonical JSON key order of the native output (serde_json maps are sorted). */
function rangeOut(report) {
  return {
    capacity: report.capacity,
    first: report.first ?? null,
    free: report.free,
    last: report.last ?? null,
    next: report.next.length > 0 ? report.next[0] : null,
    range: report.range,
  };
}

/**
 * Creates the host. `instantiate` is jco's (async instantiation mode), `getCoreModule(name)`
 * returns a (promise of a) compiled WebAssembly.Module, `store` a MemoryStore.
 */
export async function createHereabouts({ instantiate, getCoreModule, store = new MemoryStore(), manifest = {} }) {
  let exports = null;
  const start = async () => {
    exports = (await instantiate(getCoreModule, importsFor(store))).allocator;
  };
  await start();

  /** Runs one export; a typed error becomes a PlanError, a trap poisons the instance. */
  async function call(fn) {
    if (!exports) await start();
    try {
      return fn(exports);
    } catch (e) {
      if (e && typeof e === 'object' && 'payload' in e && e.payload && typeof e.payload.tag === 'string') {
        throw ipamErrorToPlanError(e.payload);
      }
      exports = null; // a trapped instance must not be reused
      throw new PlanError(Code.Internal, `allocator component trapped: ${e?.message ?? e}`);
    }
  }

  const planRequest = (network, allocated = [], preview = 1) => ({ network, allocated, preview });

  const api = {
    store,
    manifest,
    componentSha256: manifest.sha256,
    networkConfig,

    async reports(network, allocated = [], preview = 1) {
      return call((a) => a.plan(planRequest(network, allocated, preview)));
    },

    async plan(document, numbers) {
      const { network, allocated } = planInput(document, numbers);
      const reports = await api.reports(network, allocated, 1);
      return { ranges: reports.map(rangeOut) };
    },

    async runPlan(text) {
      // serde_json's wording and positions for syntax errors (json-errors.mjs), then JSON.parse.
      const scan = scanJson(text);
      let document;
      try {
        if (scan.error) throw new Error(scan.error);
        document = JSON.parse(text);
      } catch (e) {
        return { status: 1, output: { code: Code.Decode, msg: `input is not valid JSON: ${e.message}` } };
      }
      try {
        return { status: 0, output: await api.plan(document, (path) => scan.numbers.get(JSON.stringify(path))) };
      } catch (e) {
        if (e instanceof PlanError) return { status: 1, output: e.toJSON() };
        throw e;
      }
    },

    async validate(network) {
      return call((a) => a.validate(network));
    },
    async overlaps(a, b) {
      return call((x) => x.overlaps(a, b));
    },
    async rangeMap(network, allocated, rangeIndex, from, to, buckets) {
      return call((a) => a.rangeMap(planRequest(network, allocated, 0), rangeIndex, from ?? undefined, to ?? undefined, buckets));
    },
    async allocate(network, owner, { requested = [], sticky = false } = {}) {
      return call((a) => a.allocate(network, { owner: { podref: '', ...owner }, requested, sticky }));
    },
    async release(network, owner) {
      return call((a) => a.release(network, { podref: '', ...owner }));
    },
    async listLeases(network) {
      return call((a) => a.listLeases(network));
    },
  };
  return api;
}
