// The range-planning playground. Every answer about addresses — how the ipam section reads (and
// what Whereabouts would ignore in it), capacity, first/last, the next addresses, the map, overlap
// verdicts, findings, allocations — comes from the allocator component (host-web); this file only
// edits configs and draws what the component says.

import { CniError, loadHereabouts, SavedPlans } from '../../host-web/src/browser.mjs';
import { debounce, fill, fraction, groupDigits, h } from './dom.js';
import { decodeShare, encodeShare, importNetworks, ipamJson, nadYaml, NODES_ANNOTATION } from './formats.js';
import './style.css';

const MAP_BUCKETS = 256;
const PREVIEW = 8;
/** Slices listed in full up to this many; beyond, the first few and the last. */
const LISTED_SLICES = 8;
const RANGE_KEYS = [
  ['range', 'range', 'CIDR, e.g. 10.10.0.0/16 or 10.10.0.5-10.10.0.250/24'],
  ['range_start', 'range_start', 'optional first address'],
  ['range_end', 'range_end', 'optional last address'],
];

const state = { networks: [], nextId: 1 };
let hb = null; // the component host
const saved = new SavedPlans();
const $ = (sel, root = document) => root.querySelector(sel);

// ---------------------------------------------------------------- model

function newNetwork(partial = {}) {
  const id = state.nextId++;
  return {
    id,
    name: partial.name ?? `network-${id}`,
    namespace: partial.namespace,
    cni: partial.cni ?? null,
    ipam: partial.ipam ?? { type: 'hereabouts', range: '' },
    podSeq: partial.podSeq ?? 0,
    // How many nodes attach (the NAD's hereabouts.io/nodes), as typed: checked against the slices.
    nodes: partial.nodes ?? '',
    // Names this network's simulated pods in the store; kept in saved and shared plans.
    key: partial.key ?? `n${Date.now().toString(36)}${id}`,
    // The IPAMClaims (owner container ids) whose VM pod was deleted: the store still holds their
    // addresses — a claim's pod DEL frees nothing — but no pod does. Saved with the store.
    kept: partial.kept ?? [],
    zoom: {}, // range index → [{from, to}]
  };
}

/** Range blocks of an ipam section: `{path, keys}` where path is '' or `ipRanges[i]`. */
function rangeBlocks(ipam) {
  const blocks = [{ path: '', keys: ipam }];
  (ipam.ipRanges ?? []).forEach((r, i) => blocks.push({ path: `ipRanges[${i}]`, keys: r }));
  return blocks;
}

const joinPath = (base, key) => (base ? `${base}.${key}` : key);

function setKey(obj, key, value) {
  if (value === '' || value === undefined) delete obj[key];
  else obj[key] = value;
}

/** Whether the form holds no range at all yet (a new network): nothing to read. Anything else,
 *  even a range of the wrong type, is for the component to read and judge. */
const blank = (value) => value === undefined || value === null || (typeof value === 'string' && value.trim() === '');
const noRangeYet = (ipam) => blank(ipam.range) && (ipam.ipRanges === undefined
  || (Array.isArray(ipam.ipRanges) && ipam.ipRanges.every((r) => blank(r?.range))));

/** The network as the component reads its ipam section: `{config, warnings}` or `{error}`. */
async function networkFor(net) {
  try {
    const { network, warnings } = await hb.readConfig(net.ipam);
    return { config: network, warnings };
  } catch (e) {
    if (e instanceof CniError) return { error: e };
    throw e;
  }
}

const plainState = () => ({
  networks: state.networks.map(({ name, namespace, cni, ipam, podSeq, key, nodes, kept }) => ({ name, namespace, cni, ipam, podSeq, key, nodes, kept })),
});

// ---------------------------------------------------------------- rendering: forms

function fieldRow(net, base, key, label, placeholder, value) {
  const path = joinPath(base, key);
  const id = `n${net.id}-${path.replace(/[^a-z0-9_]/gi, '-')}`;
  return h('div.field', { 'data-field': path },
    h('label', { for: id }, label),
    h('input', {
      id, value: value ?? '', placeholder, spellcheck: 'false', autocomplete: 'off',
      'data-path': path,
      onInput: (e) => {
        const target = base ? net.ipam.ipRanges[Number(/\d+/.exec(base)[0])] : net.ipam;
        if (key === 'range' && base) target.range = e.target.value.trim();
        else setKey(target, key, e.target.value.trim());
        scheduleUpdate();
      },
    }),
    h('p.msg', { 'data-msg': path, role: 'status' }));
}

function excludeRow(net, base, keys) {
  const path = joinPath(base, 'exclude');
  const id = `n${net.id}-${path.replace(/[^a-z0-9_]/gi, '-')}`;
  return h('div.field.wide', { 'data-field': path },
    h('label', { for: id }, 'exclude ', h('span.hint', 'one CIDR or address per line')),
    h('textarea', {
      id, rows: 3, spellcheck: 'false', 'data-path': path, placeholder: 'none',
      value: (keys.exclude ?? []).join('\n'),
      onInput: (e) => {
        const target = base ? net.ipam.ipRanges[Number(/\d+/.exec(base)[0])] : net.ipam;
        const lines = e.target.value.split('\n').map((l) => l.trim()).filter(Boolean);
        setKey(target, 'exclude', lines.length ? lines : undefined);
        scheduleUpdate();
      },
    }),
    h('p.msg', { 'data-msg': path, role: 'status' }));
}

function rangeBlock(net, block) {
  const title = block.path || 'range';
  return h('fieldset.range-block', { 'data-block': title },
    h('legend', block.path ? h('span', block.path) : 'range (top level)',
      block.path
        ? h('button.link', {
          type: 'button', title: `remove ${block.path}`,
          onClick: () => {
            net.ipam.ipRanges.splice(Number(/\d+/.exec(block.path)[0]), 1);
            if (net.ipam.ipRanges.length === 0) delete net.ipam.ipRanges;
            renderAll();
          },
        }, 'remove')
        : null),
    RANGE_KEYS.map(([key, label, placeholder]) => fieldRow(net, block.path, key, label, placeholder, block.keys[key])),
    excludeRow(net, block.path, block.keys));
}

function networkCard(net) {
  const ipam = net.ipam;
  const card = h('section.net', { 'data-net': net.id, 'data-name': net.name, 'aria-label': `network ${net.name}` },
    h('header.net-head',
      h('input.net-name', {
        value: net.name, 'aria-label': 'network name (NetworkAttachmentDefinition name)', spellcheck: 'false',
        onInput: (e) => { net.name = e.target.value.trim() || `network-${net.id}`; card.dataset.name = net.name; scheduleUpdate(); },
      }),
      h('div.actions',
        h('button', { type: 'button', onClick: () => showExport(net) }, 'Export'),
        h('button', { type: 'button', onClick: () => duplicate(net) }, 'Duplicate'),
        h('button.danger', { type: 'button', onClick: () => { state.networks = state.networks.filter((n) => n !== net); renderAll(); } }, 'Remove'))),
    h('p.msg.net-msg', { 'data-msg': '', role: 'status' }),
    h('div.net-body',
      h('form.net-form', { onSubmit: (e) => e.preventDefault() },
        h('div.row',
          fieldRow(net, '', 'network_name', 'network_name', 'pools are shared per name', ipam.network_name),
          fieldRow(net, '', 'gateway', 'gateway', 'e.g. 10.10.0.1', ipam.gateway),
          fieldRow(net, '', 'node_slice_size', 'node_slice_size', 'e.g. /28: one slice per node', ipam.node_slice_size),
          h('div.field', { 'data-field': 'nodes' },
            h('label', { for: `n${net.id}-nodes`, title: `the NAD annotation ${NODES_ANNOTATION}, as hereabouts check reads it` }, 'nodes ', h('span.hint', NODES_ANNOTATION)),
            h('input', {
              id: `n${net.id}-nodes`, value: net.nodes, placeholder: 'how many nodes attach', inputmode: 'numeric', autocomplete: 'off',
              'data-path': 'nodes',
              onInput: (e) => { net.nodes = e.target.value.trim(); scheduleUpdate(); },
            }),
            h('p.msg', { 'data-msg': 'nodes', role: 'status' })),
          h('div.field.check',
            h('label', { title: 'an address is reserved once per network_name across overlapping ranges' },
              h('input', {
                type: 'checkbox', checked: ipam.enable_overlapping_ranges !== false, 'data-path': 'enable_overlapping_ranges',
                onChange: (e) => { setKey(ipam, 'enable_overlapping_ranges', e.target.checked ? undefined : false); scheduleUpdate(); },
              }),
              'enable_overlapping_ranges'),
            h('p.msg', { 'data-msg': 'enable_overlapping_ranges', role: 'status' }))),
        rangeBlocks(ipam).map((block) => rangeBlock(net, block)),
        h('button.link', {
          type: 'button',
          onClick: () => { (ipam.ipRanges ??= []).push({ range: '' }); renderAll(); },
        }, '+ add an ipRanges entry (dual stack)')),
      h('div.net-results', { 'data-results': net.id })),
    h('div.sim',
      h('label', { for: `n${net.id}-pods` }, 'Simulate'),
      h('input.count', { id: `n${net.id}-pods`, type: 'number', min: 1, max: 10000, value: 5, 'aria-label': 'number of pods' }),
      h('button', { type: 'button', 'data-action': 'add-pods', onClick: () => addPods(net, Number($(`#n${net.id}-pods`).value) || 1) }, 'Add pods'),
      h('button', {
        type: 'button', 'data-action': 'add-vm-pod', onClick: () => addVmPod(net),
        title: 'a KubeVirt VM\'s pod: the address belongs to its IPAMClaim and outlives the pod',
      }, '+ VM pod (IPAMClaim)'),
      h('button', { type: 'button', onClick: () => resetPods(net) }, 'Delete all'),
      h('span.hint', 'pods get the lowest free address; delete one and watch the next pod take it'),
      h('div.pods', { 'data-pods': net.id })));
  return card;
}

function duplicate(net) {
  const { namespace, cni, ipam } = structuredClone({ namespace: net.namespace, cni: net.cni, ipam: net.ipam });
  state.networks.push(newNetwork({ name: `${net.name}-copy`, namespace, cni, ipam }));
  renderAll();
}

function renderAll() {
  const list = $('#networks');
  fill(list, state.networks.map(networkCard));
  if (state.networks.length === 0) list.append(h('p.placeholder', 'No networks. Add one or import a NetworkAttachmentDefinition.'));
  update();
  persistHash();
}

// ---------------------------------------------------------------- rendering: results

/** Shows `content` (text or nodes) beside the field named by `field` (a config path as the
 *  component writes it); a path without a field of its own goes to the network's message line. */
function setMsg(card, field, content, severity = 'error', attrs = {}) {
  const slotPath = field.replace(/\.?exclude\[(\d+)\]$/, (m) => (m.startsWith('.') ? '.exclude' : 'exclude'));
  let slot = card.querySelector(`[data-msg="${CSS.escape(slotPath)}"]`);
  let prefix = '';
  if (!slot || (slotPath === '' && field !== '')) {
    slot = card.querySelector('[data-msg=""]');
    prefix = field ? `${field}: ` : '';
  } else if (slotPath !== field) {
    const index = Number(/\[(\d+)\]$/.exec(field)[1]);
    prefix = `line ${index + 1} (${field.split('.').pop()}): `;
  }
  slot.append(h(`span.${severity}`, attrs, prefix, content));
  slot.closest('.field')?.classList.add(`has-${severity}`);
}

/** A rejected config beside the field it names (with the rule id when the reading gave one). */
function showError(card, error) {
  if (!error.field) return setMsg(card, '', error.msg);
  const rule = error.rule ? [' ', h('span.rule', `[${error.rule}]`)] : [];
  return setMsg(card, error.field, [error.fieldMessage, ...rule], 'error', error.rule ? { 'data-rule': error.rule } : {});
}

/** A value Whereabouts ignores, beside its field: the value, why, and the rule `check` names. */
function showWarning(card, w) {
  setMsg(card, w.field, ['ignored ', h('code', w.ignored), `: ${w.reason} `, h('span.rule', `[${w.rule}]`)], 'warning',
    { 'data-rule': w.rule, 'data-warning': w.field });
}

function clearMsgs(card) {
  card.querySelectorAll('[data-msg]').forEach((slot) => slot.replaceChildren());
  card.querySelectorAll('.has-error, .has-warning, .has-info').forEach((el) => el.classList.remove('has-error', 'has-warning', 'has-info'));
}

function stat(label, value, testid) {
  return h('div.stat', h('dt', label), h('dd', { 'data-testid': testid }, value ?? '—'));
}

function bucketTitle(b) {
  const parts = [];
  if (b.allocatable !== '0') parts.push(`${groupDigits(b.allocatable)} free`);
  if (b.allocated !== '0') parts.push(`${groupDigits(b.allocated)} allocated`);
  if (b.persistent !== '0') parts.push(`${groupDigits(b.persistent)} persistent (kept for an IPAMClaim or StatefulSet member, no pod)`);
  if (b.excluded !== '0') parts.push(`${groupDigits(b.excluded)} excluded`);
  if (b.reserved !== '0') parts.push(`${groupDigits(b.reserved)} never handed out`);
  if (b.hasGateway) parts.push('gateway');
  return `${b.first} – ${b.last}: ${parts.join(', ')}`;
}

function bucketStyle(b) {
  const total = (BigInt(b.allocatable) + BigInt(b.allocated) + BigInt(b.persistent) + BigInt(b.excluded) + BigInt(b.reserved)).toString();
  const stops = [];
  let at = 0;
  for (const [count, color] of [[b.allocated, 'var(--allocated)'], [b.persistent, 'var(--persistent)'], [b.allocatable, 'var(--free)'], [b.excluded, 'var(--excluded)'], [b.reserved, 'var(--reserved)']]) {
    const f = fraction(count, total);
    if (f <= 0) continue;
    stops.push(`${color} ${(at * 100).toFixed(2)}% ${((at + f) * 100).toFixed(2)}%`);
    at += f;
  }
  return stops.length ? `linear-gradient(to top, ${stops.join(', ')})` : 'var(--reserved)';
}

/** `slices` (the core's slice CIDRs, for the sliced first range) by their first address, so a map
 *  cell that begins a slice can be marked: a lookup of the core's own texts, no address math. */
const sliceStarts = (slicing) => new Map((slicing?.slices ?? []).map((cidr) => [cidr.split('/')[0], cidr]));

async function drawMap(net, config, taken, index, report, box, starts = new Map()) {
  const stack = (net.zoom[index] ??= []);
  const view = stack.at(-1);
  let buckets;
  try {
    buckets = await hb.rangeMap(config, taken.allocated, index, view?.from, view?.to, MAP_BUCKETS, { persistent: taken.persistent });
  } catch (e) {
    if (stack.length) { stack.length = 0; return drawMap(net, config, taken, index, report, box, starts); }
    fill(box, h('p.error', e.msg ?? String(e)));
    return;
  }
  const detail = h('p.map-detail', { 'aria-live': 'polite' }, 'Hover or focus a cell for details; Enter or click zooms in.');
  const zoomOut = () => { stack.pop(); net.focusMap = index; update(); };
  const grid = h('div.map-grid', {
    role: 'group', 'aria-label': `map of ${report.range}`,
    onKeydown: (e) => {
      if ((e.key === 'Escape' || e.key === 'Backspace') && stack.length) { e.preventDefault(); zoomOut(); return; }
      const cells = [...grid.children];
      const i = cells.indexOf(document.activeElement);
      if (i < 0) return;
      const cols = Math.round(grid.clientWidth / (cells[0]?.offsetWidth || 1)) || 32;
      const moves = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: cols, ArrowUp: -cols };
      if (e.key in moves) { e.preventDefault(); cells[Math.max(0, Math.min(cells.length - 1, i + moves[e.key]))].focus(); }
    },
  }, buckets.map((b) => {
    const single = b.first === b.last;
    const slice = starts.get(b.first);
    const title = slice ? `${bucketTitle(b)} · node slice ${slice} starts here` : bucketTitle(b);
    return h('button.cell', {
      type: 'button', title, 'aria-label': title, tabindex: -1,
      class: [b.hasGateway ? 'gw' : '', slice ? 'slice-start' : ''].join(' ').trim() || undefined,
      'data-slice': slice,
      style: { background: bucketStyle(b) },
      onFocus: () => { detail.textContent = title; },
      onMouseenter: () => { detail.textContent = title; },
      onClick: () => { if (!single) { stack.push({ from: b.first, to: b.last }); net.focusMap = index; update(); } },
    });
  }));
  if (grid.firstChild) grid.firstChild.tabIndex = 0;
  const first = buckets[0]?.first;
  const last = buckets.at(-1)?.last;
  fill(box,
    h('div.map-head',
      h('span.map-span', `${first} – ${last}`, buckets.length > 1 && buckets[0].first !== buckets[0].last ? ` · ${buckets.length} cells` : ''),
      stack.length
        ? [h('button.link', { type: 'button', onClick: zoomOut }, 'zoom out'), h('button.link', { type: 'button', onClick: () => { stack.length = 0; update(); } }, 'whole range')]
        : null),
    grid, detail);
  if (net.focusMap === index) {
    delete net.focusMap;
    grid.firstChild?.focus();
  }
}

/** The owner container id of the network's simulated VM `n`'s IPAMClaim, as the CNI plugin
 *  names a claim's allocation (`ipamclaim:<namespace>/<name>`); the network's key keeps two
 *  networks' claims apart when they share a pool. */
const claimId = (net, n) => `ipamclaim:default/${net.key}-vm-${n}`;
const isClaim = (net, owner) => owner.containerId.startsWith(`ipamclaim:default/${net.key}-vm-`);
const ownedBy = (net, owner) => owner.containerId.startsWith(`${net.key}:`) || isClaim(net, owner);
/** Whether a lease is kept for a claim whose pod is gone, by any network's simulation. */
const keptLease = (held) => state.networks.some((n) => n.kept.includes(held.owner.containerId));

/** What a plan request needs of the leases: every address the pools hold (`allocated`) and those
 *  of them no pod holds (`persistent`: kept for an IPAMClaim). */
const takenBy = (leases) => ({
  allocated: leases.map((l) => l.lease.address),
  persistent: leases.filter(keptLease).map((l) => l.lease.address),
});

/** Draws the network's simulated pods and VMs' claims; returns every lease its pools hold. */
async function renderPods(net, config) {
  const box = $(`[data-pods="${net.id}"]`);
  let leases = [];
  if (config) {
    try {
      leases = await hb.listLeases(config);
    } catch { /* config errors are shown at the fields */ }
  }
  if (!box) return leases;
  const pods = new Map();
  for (const l of leases.filter((held) => ownedBy(net, held.owner))) {
    const pod = pods.get(l.owner.containerId) ?? { owner: l.owner, addresses: [] };
    pod.addresses.push(l.lease.address);
    pods.set(l.owner.containerId, pod);
  }
  const seq = (pod) => Number(/(\d+)$/.exec(pod.owner.containerId)[1]);
  const sorted = [...pods.values()].sort((a, b) => seq(a) - seq(b));
  fill(box, sorted.length === 0 ? h('span.hint', 'no pods yet') : sorted.map((pod) => podItem(net, pod)));
  return leases;
}

/** One pod of the list; a VM's is its IPAMClaim's allocation: held by the VM pod, or kept for the
 *  claim with no pod (then the pod can be started again, or the claim deleted). */
function podItem(net, pod) {
  const { owner, addresses } = pod;
  const name = owner.podref.split('/')[1];
  if (!isClaim(net, owner)) {
    return h('span.pod', { 'data-pod': owner.podref },
      h('b', name), ' ', addresses.join(', '),
      h('button.x', { type: 'button', 'aria-label': `delete ${owner.podref}`, title: `delete ${owner.podref}`, onClick: () => deletePod(net, owner) }, '×'));
  }
  const claim = owner.containerId.slice('ipamclaim:'.length);
  const title = `IPAMClaim ${claim}: the address belongs to the claim, not to the pod`;
  if (!net.kept.includes(owner.containerId)) {
    return h('span.pod.vm', { 'data-pod': owner.podref, title },
      h('b', name), ' ', addresses.join(', '), ' ', h('span.hint', 'IPAMClaim'),
      h('button.x', { type: 'button', 'aria-label': `delete ${owner.podref}`, title: `delete ${owner.podref} (its IPAMClaim keeps the address)`, onClick: () => deleteVmPod(net, owner) }, '×'));
  }
  return h('span.pod.kept', { 'data-pod': owner.podref, 'data-kept': 'true', title },
    h('b', name), ' ', addresses.join(', '), ' ', h('span.hint', 'kept for its IPAMClaim, no pod'),
    h('button.link', { type: 'button', 'aria-label': `start ${owner.podref} again`, onClick: () => startVmPod(net, owner) }, 'start pod'),
    h('button.link.danger', { type: 'button', 'aria-label': `delete the IPAMClaim of ${owner.podref}`, onClick: () => deleteClaim(net, owner) }, 'delete claim'));
}

function renderReport(net, report, index, errorText) {
  const box = h('div.report', { 'data-range': report.field },
    h('h3', h('span.field-name', report.field), ' ', h('code', { 'data-testid': 'range' }, report.range)),
    h('dl.stats',
      stat('capacity', groupDigits(report.capacity), 'capacity'),
      stat('free', groupDigits(report.free), 'free'),
      stat('persistent', groupDigits(report.persistent), 'persistent'),
      stat('first', report.first, 'first'),
      stat('last', report.last, 'last')),
    h('div.next',
      h('span.label', 'next pods get'),
      report.next.length
        ? h('ol', { 'data-testid': 'next' }, report.next.map((a) => h('li', h('code', a))))
        : h('span.error', { 'data-testid': 'next' }, 'nothing: range exhausted')),
    errorText ? h('p.error', errorText) : null,
    h('div.map', { 'data-map': index }));
  return box;
}

/** The node slices of a network with node_slice_size: the core's slicing and, for a node count,
 *  its verdict (`fitNodes`) — the warning `hereabouts check` gives. */
function renderSlices(slicing, fit) {
  const { slices } = slicing;
  const listed = slices.length <= LISTED_SLICES ? slices : [...slices.slice(0, LISTED_SLICES - 2), '…', slices.at(-1)];
  return h('div.slices', { 'data-testid': 'node-slices' },
    h('h3', 'node slices ', h('code', slicing.sliceSize), ' of ', h('code', slicing.range)),
    h('dl.stats',
      stat('slices', groupDigits(String(slices.length)), 'slice-count'),
      stat('addresses per slice', groupDigits(slicing.addressesPerSlice), 'addresses-per-slice'),
      stat('NodeSlicePool', slicing.poolName || '—', 'slice-pool'),
      stat('slice size', slicing.sliceSize, 'slice-size')),
    h('ol.slice-list', { 'data-testid': 'slices' }, listed.map((cidr) => h('li', cidr === '…' ? '…' : h('code', cidr)))),
    fit ? h('p.warning', { 'data-testid': 'slice-warning', 'data-rule': fit.rule }, fit.message, ' ', h('span.rule', `[${fit.rule}]`)) : null);
}

/** The node count as typed: a whole number (a WIT u32), '' for none, or an error text. */
function nodeCount(text) {
  if (text === '' || text === undefined) return { nodes: null };
  if (!/^\d+$/.test(text) || Number(text) > 0xffffffff) return { error: `${NODES_ANNOTATION} must be a whole number of nodes, found "${text}"` };
  return { nodes: Number(text) };
}

// ---------------------------------------------------------------- update cycle

let updating = null;
let componentMs = 0; // time spent inside the component during the current update

/** Wraps the host's calls so the footer can say how much of an update the component took. */
function timed(host) {
  for (const name of ['readConfig', 'reports', 'validate', 'overlaps', 'rangeMap', 'listLeases', 'nodeSlicing', 'fitNodes']) {
    const call = host[name];
    host[name] = async (...args) => {
      const t = performance.now();
      try {
        return await call(...args);
      } finally {
        componentMs += performance.now() - t;
      }
    };
  }
  return host;
}
let queued = false;

async function update() {
  if (!hb) return;
  document.body.dataset.pending = 'true';
  if (updating) { queued = true; return updating; }
  updating = (async () => {
    const t0 = performance.now();
    componentMs = 0;
    try {
      await updateNow();
    } finally {
      const ms = performance.now() - t0;
      $('#timing').textContent = `updated in ${ms.toFixed(1)} ms (component ${componentMs.toFixed(1)} ms)`;
      $('#timing').dataset.ms = ms.toFixed(1);
      $('#timing').dataset.componentMs = componentMs.toFixed(1);
      document.body.dataset.updates = String(Number(document.body.dataset.updates ?? 0) + 1);
    }
  })();
  await updating;
  updating = null;
  if (queued) { queued = false; await update(); }
  else if (!debouncing) delete document.body.dataset.pending;
}

async function updateNow() {
  const configs = new Map();
  for (const net of state.networks) {
    const card = $(`[data-net="${net.id}"]`);
    if (!card) continue;
    clearMsgs(card);
    const results = $(`[data-results="${net.id}"]`);
    if (noRangeYet(net.ipam)) {
      fill(results, h('p.placeholder', 'Enter a range (IPv4 or IPv6 CIDR) to see capacity, the next addresses and a map.'));
      await renderPods(net, null);
      continue;
    }
    const { config, warnings, error } = await networkFor(net);
    if (error) {
      showError(card, error);
      fill(results, h('p.placeholder', 'Fix the config to see the plan.'));
      await renderPods(net, null);
      continue;
    }
    for (const w of warnings) showWarning(card, w);
    const findings = await hb.validate(config);
    for (const f of findings) setMsg(card, f.field, f.message, f.severity);
    if (findings.some((f) => f.severity === 'error')) {
      fill(results, h('p.placeholder', 'Fix the errors beside the fields to see the plan.'));
      await renderPods(net, null);
      continue;
    }
    configs.set(net, config);
    // Everything the network's pools hold counts, this network's simulated pods or another's;
    // what is kept for a claim with no pod is persistent.
    const taken = takenBy(await renderPods(net, config));
    let reports;
    try {
      reports = await hb.reports(config, taken.allocated, PREVIEW, { persistent: taken.persistent });
    } catch (e) {
      if (e instanceof CniError) {
        showError(card, e);
        fill(results, h('p.placeholder', 'The component rejected this config.'));
        continue;
      }
      throw e;
    }
    const { nodes, error: nodesError } = nodeCount(net.nodes);
    if (nodesError) setMsg(card, 'nodes', nodesError, 'error', { 'data-rule': 'nodes-invalid' });
    let slicing = null;
    let fit = null;
    if (config.nodeSliceSize != null) {
      slicing = await hb.nodeSlicing(config, net.name);
      if (nodes !== null) fit = await hb.fitNodes(config, nodes);
      // The core's full message is in the node slices panel; the field gets the gist.
      if (fit) setMsg(card, 'node_slice_size', [`${slicing.slices.length} slices for ${nodes} nodes: see node slices `, h('span.rule', `[${fit.rule}]`)], 'warning', { 'data-rule': fit.rule });
    } else if (nodes !== null) {
      setMsg(card, 'nodes', 'no node_slice_size: every node allocates from the whole range', 'info');
    }
    fill(results, slicing ? renderSlices(slicing, fit) : null, reports.map((r, i) => renderReport(net, r, i)));
    // Only the first range is sliced: its map marks where each slice starts.
    const starts = sliceStarts(slicing);
    await Promise.all(reports.map((r, i) => drawMap(net, config, taken, i, r, results.querySelector(`[data-map="${i}"]`), i === 0 ? starts : undefined)));
  }
  await renderConflicts(configs);
}

/** How the playground words the core's overlap verdict (`overlap-kind`): severity, the line in
 *  the list of overlaps, and the note beside each range. */
const OVERLAP_KINDS = {
  'same-pool': {
    severity: 'info',
    says: () => 'the same pool (same range and network_name): one IPPool, no address is handed out twice',
    note: 'same pool: no address is handed out twice',
  },
  protected: {
    severity: 'info',
    says: (ca) => `same network_name "${ca.networkName}": each shared address is handed out once (overlapping-range reservations)`,
    note: 'same network_name: no address is handed out twice',
  },
  unprotected: {
    severity: 'warning',
    says: () => 'same network_name, but enable_overlapping_ranges is off in one of them: the same address can go to two pods',
    note: 'overlapping reservations off: duplicates possible',
  },
  'separate-networks': {
    severity: 'warning',
    says: (ca, cb) => `network_name keeps them apart ("${ca.networkName}" vs "${cb.networkName}"): the same address can go to a pod in each — a conflict wherever the two networks meet`,
    note: 'different network_name: duplicates possible',
  },
};

async function renderConflicts(configs) {
  const box = $('#conflicts');
  const nets = [...configs.keys()];
  const items = [];
  for (let i = 0; i < nets.length; i++) {
    for (let j = i + 1; j < nets.length; j++) {
      const [a, b] = [nets[i], nets[j]];
      const [ca, cb] = [configs.get(a), configs.get(b)];
      const found = await hb.overlaps(ca, cb);
      for (const o of found) {
        const kind = OVERLAP_KINDS[o.kind];
        if (!kind) throw new Error(`unknown overlap kind ${o.kind}`);
        const text = `${a.name} ${o.aField} and ${b.name} ${o.bField} share ${o.first} – ${o.last}; ${kind.says(ca, cb)}`;
        items.push(h(`li.${kind.severity}`, { 'data-severity': kind.severity, 'data-kind': o.kind }, text));
        for (const [net, field, other] of [[a, o.aField, b], [b, o.bField, a]]) {
          const card = $(`[data-net="${net.id}"]`);
          setMsg(card, field === 'range' ? 'range' : `${field}.range`, `overlaps ${other.name} (${o.first} – ${o.last}); ${kind.note}`, kind.severity);
        }
      }
    }
  }
  const skipped = state.networks.length - nets.length;
  const note = skipped > 0 ? ` (${skipped} network${skipped > 1 ? 's' : ''} with errors not checked)` : '';
  fill(box, items.length
    ? h('ul', items)
    : h('p.hint', nets.length > 1 ? `No overlapping ranges between networks${note}.` : state.networks.length > 1 ? `Overlaps are checked between networks without errors${note}.` : 'Add a second network to check for overlaps.'));
}

// `body[data-pending]` is set from an edit until its update is drawn (tests wait on it).
let debouncing = false;
const debouncedUpdate = debounce(() => { debouncing = false; update(); persistHash(); }, 120);
function scheduleUpdate() {
  debouncing = true;
  document.body.dataset.pending = 'true';
  debouncedUpdate();
}

// ---------------------------------------------------------------- simulation

async function addPods(net, n) {
  document.body.dataset.pending = 'true';
  const { config, error } = await networkFor(net);
  if (error) {
    toast(`cannot add pods: ${error.msg}`);
    update();
    return;
  }
  for (let k = 0; k < n; k++) {
    net.podSeq += 1;
    const owner = { containerId: `${net.key}:${net.podSeq}`, ifname: 'net1', podref: `default/pod-${net.podSeq}`, cniNetwork: net.name };
    try {
      await hb.allocate(config, owner);
    } catch (e) {
      net.podSeq -= 1;
      toast(`pod-${net.podSeq + 1}: ${e.msg ?? e}`);
      break;
    }
  }
  update();
}

/** A VM's pod (KubeVirt's virt-launcher): its network selection names an IPAMClaim, so the ADD's
 *  owner is the claim (container id `ipamclaim:<namespace>/<name>`), as the CNI plugin does with
 *  `allowPersistentIPs`. */
async function addVmPod(net) {
  document.body.dataset.pending = 'true';
  const { config, error } = await networkFor(net);
  if (error) {
    toast(`cannot add a VM pod: ${error.msg}`);
    update();
    return;
  }
  net.podSeq += 1;
  const owner = { containerId: claimId(net, net.podSeq), ifname: 'net1', podref: `default/vm-${net.podSeq}`, cniNetwork: net.name };
  try {
    await hb.allocate(config, owner);
  } catch (e) {
    net.podSeq -= 1;
    toast(`vm-${net.podSeq + 1}: ${e.msg ?? e}`);
  }
  update();
  persistHash();
}

/** Deleting a VM's pod: its DEL frees nothing of the claim's, so the store is untouched; the
 *  address is now held for the claim by no pod. */
function deleteVmPod(net, owner) {
  net.kept = [...new Set([...net.kept, owner.containerId])];
  update();
  persistHash();
}

/** The VM's next pod: the claim's ADD again, idempotent, so it gets the claim's address back. */
async function startVmPod(net, owner) {
  document.body.dataset.pending = 'true';
  const { config, error } = await networkFor(net);
  if (error) {
    toast(`cannot start vm pod: ${error.msg}`);
  } else {
    try {
      await hb.allocate(config, owner);
      net.kept = net.kept.filter((id) => id !== owner.containerId);
    } catch (e) {
      toast(`${owner.podref}: ${e.msg ?? e}`);
    }
  }
  update();
  persistHash();
}

/** Deleting the IPAMClaim (KubeVirt does, with the VM) frees its address, as reconcile does. */
async function deleteClaim(net, owner) {
  document.body.dataset.pending = 'true';
  const { config } = await networkFor(net);
  if (config) await hb.release(config, owner);
  net.kept = net.kept.filter((id) => id !== owner.containerId);
  update();
  persistHash();
}

async function deletePod(net, owner) {
  document.body.dataset.pending = 'true';
  const { config } = await networkFor(net);
  if (config) await hb.release(config, owner);
  update();
}

async function resetPods(net) {
  document.body.dataset.pending = 'true';
  const { config } = await networkFor(net);
  if (config) {
    for (const l of await hb.listLeases(config)) {
      if (ownedBy(net, l.owner)) await hb.release(config, l.owner);
    }
  }
  net.podSeq = 0;
  net.kept = [];
  update();
  persistHash();
}

// ---------------------------------------------------------------- dialogs: import, export, save

function toast(text) {
  const t = $('#toast');
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, 4000);
}

function openDialog(id) {
  const d = $(id);
  d.showModal();
  return d;
}

function doImport(replace) {
  const text = $('#import-text').value;
  const msg = $('#import-msg');
  try {
    const nets = importNetworks(text);
    if (replace) state.networks = [];
    for (const n of nets) state.networks.push(newNetwork(n));
    msg.replaceChildren();
    $('#import-dialog').close();
    renderAll();
    persistHash();
    toast(`imported ${nets.map((n) => n.name).join(', ')}`);
  } catch (e) {
    fill(msg, h('span.error', e.message));
  }
}

function showExport(net) {
  const d = openDialog('#export-dialog');
  $('#export-title').textContent = `Export ${net.name}`;
  $('#export-ipam').value = ipamJson(net);
  $('#export-nad').value = nadYaml(net);
  d.dataset.name = net.name;
}

async function copy(id) {
  const text = $(id).value;
  try {
    await navigator.clipboard.writeText(text);
    toast('copied');
  } catch {
    $(id).select();
    toast('selected: press Ctrl+C to copy');
  }
}

function download(id, filename) {
  const a = h('a', { href: URL.createObjectURL(new Blob([$(id).value], { type: 'text/plain' })), download: filename });
  a.click();
  URL.revokeObjectURL(a.href);
}

async function share() {
  const fragment = await encodeShare(plainState());
  history.replaceState(null, '', `#${fragment}`);
  const url = location.href;
  $('#share-url').value = url;
  openDialog('#share-dialog');
  $('#share-url').select();
}

const persistHash = debounce(async () => {
  history.replaceState(null, '', `#${await encodeShare(plainState())}`);
}, 400);

function loadPlan(plan, store) {
  state.networks = (plan?.networks ?? []).map((n) => newNetwork(n));
  hb.store.load(store);
  renderAll();
}

function refreshSaved() {
  fill($('#saved-list'), saved.list().map((name) => h('li',
    h('button.link', { type: 'button', onClick: () => { const p = saved.load(name); loadPlan(p, p.store); $('#saved-dialog').close(); toast(`loaded ${name}`); } }, name),
    h('button.link.danger', { type: 'button', 'aria-label': `delete saved plan ${name}`, onClick: () => { saved.remove(name); refreshSaved(); } }, 'delete'))));
  if (!saved.list().length) $('#saved-list').append(h('li.hint', 'nothing saved in this browser yet'));
}

// ---------------------------------------------------------------- start

const EXAMPLE = [
  { name: 'storage', ipam: { type: 'hereabouts', range: '10.10.0.0/16', exclude: ['10.10.0.0/28', '10.10.255.0/24'], gateway: '10.10.0.1', network_name: 'storage' } },
  { name: 'storage-v6', ipam: { type: 'hereabouts', range: 'fd00:10::/64', range_start: 'fd00:10::100', network_name: 'storage' } },
];

async function main() {
  $('#add-network').addEventListener('click', () => { state.networks.push(newNetwork()); renderAll(); $('#networks section:last-of-type input[data-path="range"]')?.focus(); });
  $('#open-import').addEventListener('click', () => { $('#import-msg').replaceChildren(); openDialog('#import-dialog'); $('#import-text').focus(); });
  $('#import-add').addEventListener('click', () => doImport(false));
  $('#import-replace').addEventListener('click', () => doImport(true));
  $('#copy-ipam').addEventListener('click', () => copy('#export-ipam'));
  $('#copy-nad').addEventListener('click', () => copy('#export-nad'));
  $('#download-ipam').addEventListener('click', () => download('#export-ipam', `${$('#export-dialog').dataset.name}-ipam.json`));
  $('#download-nad').addEventListener('click', () => download('#export-nad', `${$('#export-dialog').dataset.name}.yaml`));
  $('#share').addEventListener('click', share);
  $('#copy-share').addEventListener('click', () => copy('#share-url'));
  $('#open-saved').addEventListener('click', () => { refreshSaved(); openDialog('#saved-dialog'); $('#save-name').focus(); });
  $('#save-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const name = $('#save-name').value.trim();
    if (!name) return;
    saved.save(name, { ...plainState(), store: hb.store.snapshot() });
    refreshSaved();
    toast(`saved ${name} in this browser`);
  });
  document.querySelectorAll('dialog [data-close]').forEach((b) => b.addEventListener('click', () => b.closest('dialog').close()));
  document.addEventListener('keydown', (e) => {
    if (e.target.closest?.('input, textarea, dialog')) return;
    if (e.key === 'i') { e.preventDefault(); $('#open-import').click(); }
    if (e.key === 'n') { e.preventDefault(); $('#add-network').click(); }
  });

  try {
    hb = timed(await loadHereabouts());
    // The component host, for the devtools console (and the browser tests).
    globalThis.hereabouts = hb;
  } catch (e) {
    fill($('#networks'), h('p.error', `The allocator component failed to load: ${e.message}`));
    throw e;
  }
  $('#component-hash').textContent = `component sha256 ${hb.componentSha256.slice(0, 16)}…`;
  $('#component-hash').title = hb.componentSha256;
  const shared = await decodeShare(location.hash).catch(() => null);
  loadPlan(shared ?? { networks: EXAMPLE });
  document.body.dataset.ready = 'true';
}

main();
