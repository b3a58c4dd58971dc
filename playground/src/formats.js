// Import and export: CNI configs, conflists and NetworkAttachmentDefinitions (YAML or JSON), and
// the plan-in-a-URL share format. Pure functions (no DOM), so Node tests can use them too.

import YAML from 'yaml';

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

/** The NAD annotation with the number of nodes that attach (read by `hereabouts check` too). */
export const NODES_ANNOTATION = 'hereabouts.io/nodes';

/** The ipam section of a CNI config or conflist, with the config around it. */
function fromCniConfig(config, fallbackName) {
  if (isObject(config.ipam)) return { name: config.name ?? fallbackName, ipam: config.ipam, cni: config };
  if (Array.isArray(config.plugins)) {
    const plugin = config.plugins.find((p) => isObject(p) && isObject(p.ipam));
    if (plugin) return { name: config.name ?? fallbackName, ipam: plugin.ipam, cni: { ...plugin, cniVersion: config.cniVersion, name: config.name } };
  }
  return null;
}

/**
 * Reads pasted text: one or more YAML/JSON documents, each a NetworkAttachmentDefinition, a CNI
 * config or conflist, or a bare ipam section. Returns `[{name, ipam, cni}]`; throws an Error
 * whose message says what was expected.
 */
export function importNetworks(text) {
  const docs = YAML.parseAllDocuments(text);
  const out = [];
  docs.forEach((doc, i) => {
    if (doc.errors.length > 0) throw new Error(`document ${i + 1}: ${doc.errors[0].message}`);
    const value = doc.toJS();
    if (value === null || value === undefined) return;
    if (!isObject(value)) throw new Error(`document ${i + 1}: expected a mapping, found ${Array.isArray(value) ? 'a list' : typeof value}`);
    const fallback = `network-${out.length + 1}`;
    if (value.kind === 'NetworkAttachmentDefinition') {
      const name = value.metadata?.name ?? fallback;
      const raw = value.spec?.config;
      if (typeof raw !== 'string') throw new Error(`${name}: spec.config must be a string holding the CNI config JSON`);
      let config;
      try {
        config = JSON.parse(raw);
      } catch (e) {
        throw new Error(`${name}: spec.config is not valid JSON: ${e.message}`);
      }
      const found = fromCniConfig(config, name);
      if (!found) throw new Error(`${name}: spec.config has no ipam section`);
      const nodes = value.metadata?.annotations?.[NODES_ANNOTATION];
      out.push({ ...found, name, namespace: value.metadata?.namespace, ...(nodes === undefined ? {} : { nodes: String(nodes).trim() }) });
      return;
    }
    const found = fromCniConfig(value, fallback);
    if (found) {
      out.push(found);
      return;
    }
    if ('range' in value || 'ipRanges' in value) {
      out.push({ name: value.name ?? fallback, ipam: value, cni: null });
      return;
    }
    throw new Error(`document ${i + 1}: not a NetworkAttachmentDefinition, CNI config or ipam section (no "ipam", "range" or "ipRanges")`);
  });
  if (out.length === 0) throw new Error('nothing to import: paste a NetworkAttachmentDefinition, a CNI config or an ipam section');
  return out;
}

/** The CNI config around an ipam section (the imported one, or a macvlan template). */
export function cniConfig(network) {
  const base = network.cni
    ? { ...network.cni }
    : { cniVersion: '1.0.0', name: network.name, type: 'macvlan', master: 'eth0', mode: 'bridge' };
  base.name = network.name;
  base.ipam = network.ipam;
  return base;
}

/** A NetworkAttachmentDefinition for the network, as YAML. */
export function nadYaml(network) {
  const metadata = network.namespace ? { name: network.name, namespace: network.namespace } : { name: network.name };
  if (network.nodes) metadata.annotations = { [NODES_ANNOTATION]: String(network.nodes) };
  const nad = {
    apiVersion: 'k8s.cni.cncf.io/v1',
    kind: 'NetworkAttachmentDefinition',
    metadata,
    spec: { config: JSON.stringify(cniConfig(network), null, 2) },
  };
  return YAML.stringify(nad, { blockQuote: 'literal', lineWidth: 0 });
}

/** The ipam section alone, pretty JSON. */
export function ipamJson(network) {
  return JSON.stringify(network.ipam, null, 2);
}

const toBase64Url = (bytes) => {
  let s = '';
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
};
const fromBase64Url = (text) => {
  const s = atob(text.replace(/-/g, '+').replace(/_/g, '/'));
  return Uint8Array.from(s, (c) => c.charCodeAt(0));
};

async function pipe(bytes, stream) {
  return new Uint8Array(await new Response(new Blob([bytes]).stream().pipeThrough(stream)).arrayBuffer());
}

/** The plan as a URL fragment: `#p=` deflate-raw + base64url of its JSON. */
export async function encodeShare(state) {
  const json = new TextEncoder().encode(JSON.stringify(state));
  return `p=${toBase64Url(await pipe(json, new CompressionStream('deflate-raw')))}`;
}

/** Reads a fragment written by encodeShare (with or without the leading `#`); null if none. */
export async function decodeShare(fragment) {
  const match = /(?:^#?|&)p=([A-Za-z0-9_-]+)/.exec(fragment ?? '');
  if (!match) return null;
  const bytes = await pipe(fromBase64Url(match[1]), new DecompressionStream('deflate-raw'));
  return JSON.parse(new TextDecoder().decode(bytes));
}
