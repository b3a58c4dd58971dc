// The playground in a real browser (Debian's Chromium driven by playwright-core), checked against
// the native `hereabouts plan`: what the page shows is what the CNI plugin's component computes.
//
//   HEREABOUTS_BIN=target/release/hereabouts node --test playground/test/
// Needs playground/dist (npm run build) and /usr/bin/chromium (or $CHROMIUM).

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

import { expected, inputText, vectors } from '../../host-web/test/helpers.mjs';

const root = fileURLToPath(new URL('../../', import.meta.url));
const bin = process.env.HEREABOUTS_BIN ?? `${root}target/release/hereabouts`;
const artifacts = join(root, 'test-artifacts');

let server;
let baseUrl;
let context;
let page;
let profile;
const pageErrors = [];
const requests = [];

/** `hereabouts plan` on a plan document: its parsed stdout. */
function nativePlan(ipam, allocated = []) {
  const result = spawnSync(bin, ['plan'], { input: JSON.stringify({ ipam, allocated }), encoding: 'utf8' });
  if (result.error) throw result.error;
  return JSON.parse(result.stdout);
}

/** The ranges part of `hereabouts plan`'s answer (what the reports on the page show). */
const nativeRanges = (ipam, allocated = []) => ({ ranges: nativePlan(ipam, allocated).ranges });

/** Waits until every edit has been computed and drawn. */
async function settled() {
  await page.waitForTimeout(30);
  await page.waitForSelector('body[data-ready]:not([data-pending])', { timeout: 30_000 });
}

const card = (name) => page.locator(`section.net[data-name="${name}"]`);
const digits = (text) => text.replace(/[\s\u202f]/g, '');

/** What the page shows for a network's ranges, in `hereabouts plan`'s shape. */
async function shownPlan(net) {
  const reports = net.locator('.report');
  const out = [];
  for (let i = 0; i < (await reports.count()); i++) {
    const r = reports.nth(i);
    const text = async (id) => (await r.locator(`[data-testid="${id}"]`).innerText()).trim();
    const dash = (v) => (v === '—' ? null : v);
    const next = r.locator('[data-testid="next"] li');
    out.push({
      capacity: digits(await text('capacity')),
      first: dash(await text('first')),
      free: digits(await text('free')),
      last: dash(await text('last')),
      next: (await next.count()) ? (await next.first().innerText()).trim() : null,
      range: await text('range'),
    });
  }
  return { ranges: out };
}

async function addNetwork(name) {
  await page.click('#add-network');
  await settled();
  const net = page.locator('section.net').last();
  await net.locator('input.net-name').fill(name);
  return card(name);
}

before(async () => {
  server = spawn(process.execPath, [join(root, 'playground/serve.mjs'), '--port', '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
  baseUrl = await new Promise((resolve, reject) => {
    server.stdout.once('data', (chunk) => resolve(String(chunk).trim().split('\n')[0]));
    server.once('exit', (code) => reject(new Error(`serve.mjs exited with ${code}`)));
  });
  profile = mkdtempSync(join(tmpdir(), 'hereabouts-chromium-'));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1440, height: 900 },
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  page = context.pages()[0] ?? (await context.newPage());
  context.on('request', (r) => requests.push(r.url()));
  page.on('pageerror', (e) => pageErrors.push(e.message));
  page.on('console', (m) => { if (m.type() === 'error') pageErrors.push(m.text()); });
  await page.goto(baseUrl);
  await settled();
  mkdirSync(artifacts, { recursive: true });
});

after(async () => {
  await context?.close();
  server?.kill();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

test('the page loads the component and shows the example plan without errors', async () => {
  assert.match(await page.locator('#component-hash').innerText(), /component sha256 [0-9a-f]{16}/);
  assert.ok((await page.locator('section.net').count()) >= 1);
  assert.deepEqual(pageErrors, []);
});

test('a typed range with excludes shows the capacity, first/last and next address of `hereabouts plan`', async () => {
  const net = await addNetwork('typed');
  const ipam = { range: '10.20.0.0/22', exclude: ['10.20.0.0/28', '10.20.1.0/24'], gateway: '10.20.0.1' };
  await net.locator('input[data-path="range"]').fill(ipam.range);
  await net.locator('textarea[data-path="exclude"]').fill(ipam.exclude.join('\n'));
  await net.locator('input[data-path="gateway"]').fill(ipam.gateway);
  await settled();
  assert.deepEqual(await shownPlan(net), nativeRanges(ipam));

  // IPv6 with range_start, where the capacity exceeds 2^64.
  await net.locator('input[data-path="range"]').fill('fd00:20::/56');
  await net.locator('input[data-path="range_start"]').fill('fd00:20::1:0');
  await net.locator('textarea[data-path="exclude"]').fill('fd00:20::1:0/120');
  await net.locator('input[data-path="gateway"]').fill('');
  await settled();
  assert.deepEqual(await shownPlan(net), nativeRanges({ range: 'fd00:20::/56', range_start: 'fd00:20::1:0', exclude: ['fd00:20::1:0/120'] }));
});

test('simulated pods take the lowest free address, and a deleted pod\'s address is taken next', async () => {
  const net = await addNetwork('sim');
  const ipam = { range: '10.30.0.0/24', exclude: ['10.30.0.1/32'] };
  await net.locator('input[data-path="range"]').fill(ipam.range);
  await net.locator('textarea[data-path="exclude"]').fill(ipam.exclude[0]);
  await settled();
  await net.locator('input.count').fill('3');
  await net.locator('[data-action="add-pods"]').click();
  await settled();
  const pods = net.locator('.pod');
  assert.equal(await pods.count(), 3);
  assert.deepEqual(await pods.evaluateAll((els) => els.map((e) => e.textContent.replace('×', '').trim())),
    ['pod-1 10.30.0.2', 'pod-2 10.30.0.3', 'pod-3 10.30.0.4']);
  await net.getByRole('button', { name: 'delete default/pod-2' }).click();
  await settled();
  const shown = await shownPlan(net);
  assert.deepEqual(shown, nativeRanges(ipam, ['10.30.0.2', '10.30.0.4']));
  assert.equal(shown.ranges[0].next, '10.30.0.3');
  await net.locator('input.count').fill('1');
  await net.locator('[data-action="add-pods"]').click();
  await settled();
  assert.match(await net.locator('.pod[data-pod="default/pod-4"]').innerText(), /10\.30\.0\.3/);
});

test('a VM pod\'s address is kept for its IPAMClaim when the pod goes: persistent on the map and in the stats, skipped by the next pod, free once the claim is deleted', async () => {
  const net = await addNetwork('vms');
  const ipam = { range: '10.31.0.0/28' };
  await net.locator('input[data-path="range"]').fill(ipam.range);
  await settled();
  await net.locator('input.count').fill('1');
  await net.locator('[data-action="add-pods"]').click();
  await settled();
  await net.locator('[data-action="add-vm-pod"]').click();
  await settled();
  const vm = net.locator('.pod[data-pod="default/vm-2"]');
  assert.match(await vm.textContent(), /^vm-2 10\.31\.0\.2 IPAMClaim/);
  const stat = async (id) => (await net.locator(`[data-testid="${id}"]`).innerText()).trim();
  assert.equal(await stat('persistent'), '0');
  // The pod goes; its DEL frees nothing of the claim's: the address is held for it by no pod.
  await net.getByRole('button', { name: 'delete default/vm-2' }).click();
  await settled();
  assert.equal(await vm.getAttribute('data-kept'), 'true');
  assert.match(await vm.textContent(), /10\.31\.0\.2 kept for its IPAMClaim, no pod/);
  // The stats are `hereabouts plan`'s with the kept address as persistent.
  const doc = { ipam, allocated: ['10.31.0.1', '10.31.0.2'], persistent: ['10.31.0.2'] };
  const native = JSON.parse(spawnSync(bin, ['plan'], { input: JSON.stringify(doc), encoding: 'utf8' }).stdout).ranges[0];
  assert.equal(native.persistent, '1');
  assert.deepEqual({ ...(await shownPlan(net)).ranges[0], persistent: await stat('persistent') }, native);
  assert.equal(native.next, '10.31.0.3');
  // The map (one cell per address): .2 is its own kind, with its own colour and hover text.
  const cell = net.locator('[data-map="0"] .cell').nth(2);
  assert.equal(await cell.getAttribute('title'), '10.31.0.2 – 10.31.0.2: 1 persistent (kept for an IPAMClaim or StatefulSet member, no pod)');
  assert.match(await cell.evaluate((c) => c.style.background), /var\(--persistent\)/);
  assert.equal(await net.locator('[data-map="0"] .cell[title*="persistent"]').count(), 1);
  assert.ok(await page.locator('.legend .sw.persistent').isVisible());
  // The next pod skips it.
  await net.locator('[data-action="add-pods"]').click();
  await settled();
  assert.match(await net.locator('.pod[data-pod="default/pod-3"]').innerText(), /10\.31\.0\.3/);
  // Deleting the claim frees it: no longer persistent, and it is the next address again.
  await net.getByRole('button', { name: 'delete the IPAMClaim of default/vm-2' }).click();
  await settled();
  assert.equal(await vm.count(), 0);
  assert.equal(await stat('persistent'), '0');
  assert.deepEqual(await shownPlan(net), nativeRanges(ipam, ['10.31.0.1', '10.31.0.3']));
  assert.equal((await shownPlan(net)).ranges[0].next, '10.31.0.2');
  assert.match(await net.locator('[data-map="0"] .cell').nth(2).getAttribute('title'), /: 1 free$/);
  // A claim whose pod is started again is held again, at the same address.
  await net.locator('[data-action="add-vm-pod"]').click();
  await settled();
  const vm4 = net.locator('.pod[data-pod="default/vm-4"]');
  await net.getByRole('button', { name: 'delete default/vm-4' }).click();
  await settled();
  await net.getByRole('button', { name: 'start default/vm-4 again' }).click();
  await settled();
  assert.equal(await vm4.getAttribute('data-kept'), null);
  assert.match(await vm4.textContent(), /^vm-4 10\.31\.0\.2 IPAMClaim/);
  assert.equal(await stat('persistent'), '0');
  await net.getByRole('button', { name: 'Remove' }).click();
  await settled();
  assert.deepEqual(pageErrors, []);
});

test('an error is shown beside the field it concerns, with the component\'s message', async () => {
  const net = await addNetwork('broken');
  await net.locator('input[data-path="range"]').fill('10.40.0.0/33');
  await settled();
  const bad = nativePlan({ range: '10.40.0.0/33' });
  assert.equal(bad.code, 7);
  const [field, message] = bad.msg.split(/: (.*)/s);
  assert.equal(field, 'range');
  const shown = net.locator('[data-msg="range"] .error');
  const rule = await shown.getAttribute('data-rule');
  assert.match(rule, /^range-[a-z0-9-]+$/, 'the rule id `check` reports it under');
  assert.equal(await shown.innerText(), `${message} [${rule}]`);
  assert.ok(await net.locator('.field[data-field="range"]').evaluate((el) => el.classList.contains('has-error')));
  assert.match(await net.locator('.net-results').innerText(), /Fix the config/);

  // An exclude that is no CIDR: Whereabouts' walk fails on it, so every new ADD would.
  await net.locator('input[data-path="range"]').fill('10.40.0.0/24');
  await net.locator('textarea[data-path="exclude"]').fill('10.40.0.0/30\nnot-a-cidr');
  await settled();
  const slot = net.locator('.field[data-field="exclude"] [data-msg="exclude"]');
  assert.match(await slot.innerText(), /^line 2 \(exclude\[1\]\): not-a-cidr is not a CIDR or an IP address/);
  assert.ok(await net.locator('.field[data-field="exclude"]').evaluate((el) => el.classList.contains('has-error')));
  assert.equal(await net.locator('[data-msg="range"]').innerText(), '');
});

test('a value Whereabouts ignores is shown beside its field: the value, why, and the rule', async () => {
  const net = card('broken');
  const ipam = { range: '10.40.0.0/24', range_start: '10.41.0.1', exclude: ['10.40.0.0/30', '10.41.0.0/24'] };
  await net.locator('input[data-path="range_start"]').fill(ipam.range_start);
  await net.locator('textarea[data-path="exclude"]').fill(ipam.exclude.join('\n'));
  await settled();
  const native = nativePlan(ipam);
  assert.deepEqual(native.warnings.map((w) => w.field), ['range_start', 'exclude[1]']);
  for (const w of native.warnings) {
    const shown = net.locator(`[data-warning="${w.field}"]`);
    assert.equal(await shown.getAttribute('data-rule'), w.rule);
    const text = await shown.innerText();
    assert.ok(text.endsWith(`ignored ${w.ignored}: ${w.reason} [${w.rule}]`), `${w.field}: ${text}`);
  }
  assert.match(await net.locator('[data-msg="exclude"]').innerText(), /^line 2 \(exclude\[1\]\): ignored 10\.41\.0\.0\/24/);
  assert.ok(await net.locator('.field[data-field="range_start"]').evaluate((el) => el.classList.contains('has-warning')));
  // The plan goes on as Whereabouts would, without the ignored values.
  assert.deepEqual(await shownPlan(net), nativeRanges(ipam));
  assert.equal((await shownPlan(net)).ranges[0].first, '10.40.0.4');
  await net.getByRole('button', { name: 'Remove' }).click();
  await settled();
});

test('overlaps between networks carry the core\'s verdict', async () => {
  const a = await addNetwork('ov-a');
  await a.locator('input[data-path="range"]').fill('10.50.0.0/24');
  const b = await addNetwork('ov-b');
  await b.locator('input[data-path="range"]').fill('10.50.0.128/25');
  await settled();
  const item = page.locator('#conflicts li', { hasText: 'ov-a range and ov-b range' });
  assert.equal(await item.getAttribute('data-kind'), 'protected');
  assert.equal(await item.getAttribute('data-severity'), 'info');
  assert.match(await item.innerText(), /share 10\.50\.0\.129 – 10\.50\.0\.254; same network_name "": each shared address is handed out once/);

  await b.locator('input[data-path="enable_overlapping_ranges"]').uncheck();
  await settled();
  assert.equal(await item.getAttribute('data-kind'), 'unprotected');
  assert.match(await item.innerText(), /enable_overlapping_ranges is off in one of them: the same address can go to two pods/);
  assert.match(await b.locator('[data-msg="range"]').innerText(), /overlaps ov-a .*duplicates possible/);

  // The same pool (same range and network_name) is one IPPool: never twice, reservations or not.
  await b.locator('input[data-path="range"]').fill('10.50.0.0/24');
  await settled();
  assert.equal(await item.getAttribute('data-kind'), 'same-pool');
  assert.equal(await item.getAttribute('data-severity'), 'info');
  assert.match(await item.innerText(), /the same pool .*no address is handed out twice/);
  assert.doesNotMatch(await b.locator('[data-msg="range"]').innerText(), /duplicates possible/);

  await b.locator('input[data-path="network_name"]').fill('other');
  await settled();
  assert.equal(await item.getAttribute('data-kind'), 'separate-networks');
  assert.equal(await item.getAttribute('data-severity'), 'warning');
  assert.match(await item.innerText(), /network_name keeps them apart \("" vs "other"\)/);
  assert.match(await b.locator('[data-msg="range"]').innerText(), /overlaps ov-a .*different network_name: duplicates possible/);
  for (const net of [a, b]) await net.getByRole('button', { name: 'Remove' }).click();
  await settled();
});

test('node slices: count, addresses per slice, the slices on the map, and check\'s warning for a node count', async () => {
  const net = await addNetwork('sliced');
  const ipam = { type: 'hereabouts', range: '10.30.0.0/24', node_slice_size: '/26' };
  await net.locator('input[data-path="range"]').fill(ipam.range);
  await net.locator('input[data-path="node_slice_size"]').fill(ipam.node_slice_size);
  await settled();
  const panel = net.locator('[data-testid="node-slices"]');
  // What `hereabouts plan` says of the same section.
  const native = nativePlan(ipam).node_slices;
  assert.equal(native.count, 4);
  assert.equal(await panel.locator('[data-testid="slice-count"]').innerText(), String(native.count));
  assert.equal(await panel.locator('[data-testid="addresses-per-slice"]').innerText(), native.addresses_per_slice);
  assert.equal(await panel.locator('[data-testid="slice-pool"]').innerText(), 'sliced');
  assert.deepEqual(await panel.locator('[data-testid="slices"] li').allInnerTexts(), native.slices);
  // The /24 map has one address per cell: a slice starts at cells 0, 64, 128 and 192.
  const starts = net.locator('[data-map="0"] .cell.slice-start');
  assert.deepEqual(await starts.evaluateAll((cells) => cells.map((c) => c.dataset.slice)), native.slices);
  assert.equal(await net.locator('[data-map="0"] .cell').nth(64).getAttribute('data-slice'), '10.30.0.64/26');
  assert.equal(await panel.locator('[data-testid="slice-warning"]').count(), 0);
  // Six nodes: the warning `hereabouts check --nodes 6` gives, word for word.
  await net.locator('input[data-path="nodes"]').fill('6');
  await settled();
  const dir = mkdtempSync(join(tmpdir(), 'hereabouts-nodes-'));
  writeFileSync(join(dir, 'sliced.conf'), JSON.stringify({ cniVersion: '1.0.0', name: 'sliced', type: 'macvlan', ipam }));
  const checked = spawnSync(bin, ['check', '--nodes', '6', '--format', 'json', join(dir, 'sliced.conf')], { encoding: 'utf8' });
  rmSync(dir, { recursive: true, force: true });
  const [finding] = JSON.parse(checked.stdout).findings;
  assert.equal(finding.rule, 'node-slices-fewer-than-nodes');
  const warning = panel.locator('[data-testid="slice-warning"]');
  assert.equal(await warning.getAttribute('data-rule'), 'node-slices-fewer-than-nodes');
  assert.equal(`--nodes 6: ${(await warning.innerText()).replace(/ \[node-slices-fewer-than-nodes\]$/, '')}`, finding.message);
  assert.match(await net.locator('[data-msg="node_slice_size"]').innerText(), /^4 slices for 6 nodes: see node slices \[node-slices-fewer-than-nodes\]$/);
  // Four nodes fit; a count that is not a number is refused beside the field.
  await net.locator('input[data-path="nodes"]').fill('4');
  await settled();
  assert.equal(await warning.count(), 0);
  await net.locator('input[data-path="nodes"]').fill('four');
  await settled();
  assert.match(await net.locator('[data-msg="nodes"]').innerText(), /must be a whole number of nodes/);
  await net.getByRole('button', { name: 'Remove' }).click();
  await settled();
  assert.deepEqual(pageErrors, []);
});

test('every shared vector gives the expected answer through the component in Chromium', async () => {
  const all = vectors();
  const answers = await page.evaluate(async (texts) => {
    const out = [];
    for (const text of texts) out.push(await globalThis.hereabouts.runPlan(text));
    return out;
  }, all.map(inputText));
  const failures = [];
  all.forEach((v, i) => {
    const want = expected(v);
    const { status, output } = answers[i];
    try {
      assert.deepEqual(output, want);
      assert.equal(status, 'ranges' in want ? 0 : 1);
    } catch (e) {
      failures.push(`${v.file}: ${v.name}: ${e.message}`);
    }
  });
  assert.deepEqual(failures, [], `${failures.length} of ${all.length} vectors failed in Chromium`);
  console.log(`# Chromium: ${all.length} vectors through the component, all as expected`);
});

test('a NetworkAttachmentDefinition imports, exports and re-imports unchanged', async () => {
  const nad = `apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata:
  name: macvlan-conf
  namespace: lab
spec:
  config: '{
      "cniVersion": "0.3.1",
      "type": "macvlan",
      "master": "eth1",
      "ipam": {
        "type": "whereabouts",
        "ipRanges": [
          {"range": "192.168.2.225/28", "exclude": ["192.168.2.229/30"]},
          {"range": "fd10::/120", "range_start": "fd10::10"}
        ],
        "network_name": "lab"
      }
    }'
`;
  await page.keyboard.press('Escape');
  await page.locator('body').click({ position: { x: 5, y: 400 } });
  await page.keyboard.press('i'); // keyboard shortcut opens the import dialog
  await page.locator('#import-text').fill(nad);
  await page.click('#import-replace');
  await settled();
  const net = card('macvlan-conf');
  assert.equal(await page.locator('section.net').count(), 1);
  const ipam = {
    type: 'whereabouts',
    ipRanges: [{ range: '192.168.2.225/28', exclude: ['192.168.2.229/30'] }, { range: 'fd10::/120', range_start: 'fd10::10' }],
    network_name: 'lab',
  };
  assert.deepEqual(await shownPlan(net), nativeRanges(ipam));

  await net.getByRole('button', { name: 'Export' }).click();
  const exportedIpam = JSON.parse(await page.locator('#export-ipam').inputValue());
  assert.deepEqual(exportedIpam, ipam);
  const yaml = await page.locator('#export-nad').inputValue();
  assert.match(yaml, /kind: NetworkAttachmentDefinition/);
  assert.match(yaml, /"master": "eth1"/, 'the plugin part of the imported config is kept');
  await page.locator('#export-dialog [data-close]').click();

  await page.click('#open-import');
  await page.locator('#import-text').fill(yaml);
  await page.click('#import-replace');
  await settled();
  await card('macvlan-conf').getByRole('button', { name: 'Export' }).click();
  assert.deepEqual(JSON.parse(await page.locator('#export-ipam').inputValue()), ipam);
  assert.equal(await page.locator('#export-nad').inputValue(), yaml);
  await page.locator('#export-dialog [data-close]').click();
});

test('an import error is shown in the import dialog', async () => {
  await page.click('#open-import');
  await page.locator('#import-text').fill('kind: NetworkAttachmentDefinition\nmetadata: {name: x}\nspec: {config: "{not json"}\n');
  await page.click('#import-add');
  assert.match(await page.locator('#import-msg').innerText(), /x: spec.config is not valid JSON/);
  await page.locator('#import-dialog [data-close]').click();
});

test('the share URL restores the plan in a fresh page', async () => {
  await page.click('#share');
  await page.waitForSelector('#share-dialog[open]');
  const url = await page.locator('#share-url').inputValue();
  await page.locator('#share-dialog [data-close]').click();
  assert.match(url, /#p=[A-Za-z0-9_-]+$/);
  const other = await context.newPage();
  await other.goto(url);
  await other.waitForSelector('body[data-ready]:not([data-pending])');
  assert.deepEqual(
    await other.locator('input.net-name').evaluateAll((els) => els.map((e) => e.value)),
    await page.locator('input.net-name').evaluateAll((els) => els.map((e) => e.value)),
  );
  assert.deepEqual(
    await other.locator('input[data-path], textarea[data-path]').evaluateAll((els) => els.map((e) => e.value)),
    await page.locator('input[data-path], textarea[data-path]').evaluateAll((els) => els.map((e) => e.value)),
  );
  await other.close();
});

test('a saved plan comes back from localStorage after a reload, simulated pods included', async () => {
  const net = page.locator('section.net').first();
  await net.locator('input.count').fill('2');
  await net.locator('[data-action="add-pods"]').click();
  await settled();
  const names = await page.locator('input.net-name').evaluateAll((els) => els.map((e) => e.value));
  const podText = () => page.locator('.pod').evaluateAll((els) => els.map((e) => e.textContent));
  const pods = await podText();
  assert.ok(pods.length >= 2, `pods before saving: ${pods}`);
  await page.click('#open-saved');
  await page.locator('#save-name').fill('lab plan');
  await page.keyboard.press('Enter');
  await page.locator('#saved-dialog [data-close]').click();
  await page.goto(`${baseUrl}#`);
  await page.reload();
  await settled();
  await page.click('#open-saved');
  await page.locator('#saved-list').getByRole('button', { name: 'lab plan', exact: true }).click();
  await settled();
  assert.deepEqual(await page.locator('input.net-name').evaluateAll((els) => els.map((e) => e.value)), names);
  assert.deepEqual(await podText(), pods);
});

test('the map zooms in with the keyboard and back out with Escape', async () => {
  const net = await addNetwork('zoom');
  await net.locator('input[data-path="range"]').fill('10.0.0.0/8');
  await settled();
  const span = net.locator('.map-span');
  assert.match(await span.innerText(), /^10\.0\.0\.0 – 10\.255\.255\.255/);
  await net.locator('.map-grid .cell').first().focus();
  await page.keyboard.press('ArrowRight');
  await page.keyboard.press('Enter');
  await settled();
  assert.match(await span.innerText(), /^10\.1\.0\.0 – 10\.1\.255\.255/);
  await page.keyboard.press('Escape');
  await settled();
  assert.match(await span.innerText(), /^10\.0\.0\.0 – 10\.255\.255\.255/);
});

test('an IPv6 /64 map is aggregated and zooms down to single addresses', async () => {
  const net = await addNetwork('v6-64');
  await net.locator('input[data-path="range"]').fill('fd00:64::/64');
  await net.locator('input[data-path="range_start"]').fill('fd00:64::100');
  await settled();
  const span = net.locator('.map-span');
  assert.match(await span.innerText(), /^fd00:64:: – fd00:64::ffff:ffff:ffff:ffff · 256 cells/);
  for (let level = 0; level < 8 && (await span.innerText()).includes('cells'); level++) {
    await net.locator('.map-grid .cell').first().click();
    await settled();
  }
  assert.match(await span.innerText(), /^fd00:64:: – fd00:64::ff$/, 'zoomed to one address per cell');
  assert.equal(await net.locator('.map-grid .cell').count(), 256);
  assert.match(await net.locator('.map-grid .cell').nth(0x100 - 1).getAttribute('title'), /fd00:64::ff – fd00:64::ff: 1 never handed out/);
  await net.getByRole('button', { name: 'Remove' }).click();
  await settled();
});

test('a /8 with 1,000 excludes updates quickly in the browser', async () => {
  const net = card('zoom');
  const exclude = Array.from({ length: 1000 }, (_, i) => `10.${(i % 250) + 1}.${Math.floor(i / 250) * 16}.0/24`);
  const ipam = { range: '10.0.0.0/8', exclude, gateway: '10.0.0.1' };
  await net.locator('input[data-path="gateway"]').fill(ipam.gateway);
  await net.locator('textarea[data-path="exclude"]').fill(exclude.join('\n'));
  await settled();
  const first = Number(await page.locator('#timing').getAttribute('data-ms'));
  const firstComponent = Number(await page.locator('#timing').getAttribute('data-component-ms'));
  assert.deepEqual(await shownPlan(net), nativeRanges(ipam));
  // A steady-state edit: change the gateway, everything (all networks) recomputed and redrawn.
  const times = [];
  const inComponent = [];
  for (const gw of ['10.0.0.2', '10.0.0.3', '10.0.0.4', '10.0.0.5', '10.0.0.6']) {
    await net.locator('input[data-path="gateway"]').fill(gw);
    await settled();
    times.push(Number(await page.locator('#timing').getAttribute('data-ms')));
    inComponent.push(Number(await page.locator('#timing').getAttribute('data-component-ms')));
  }
  const median = (xs) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
  console.log(`# browser update, /8 with 1,000 excludes: ${first.toFixed(1)} ms after pasting the excludes (component ${firstComponent.toFixed(1)} ms); `
    + `median ${median(times).toFixed(1)} ms per edit (component ${median(inComponent).toFixed(1)} ms), `
    + `all ${await page.locator('section.net').count()} networks recomputed and drawn`);
  assert.ok(median(times) < 1000, `an update took ${median(times)} ms`);
});

test('screenshot of the main view', async () => {
  await page.click('#open-import');
  await page.locator('#import-text').fill(`apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata: {name: storage}
spec:
  config: '{"cniVersion": "1.0.0", "type": "macvlan", "master": "eth1", "ipam": {"type": "hereabouts", "range": "10.10.0.0/16", "range_start": "10.10.0.10", "exclude": ["10.10.0.32/27", "10.10.255.0/24"], "gateway": "10.10.0.1", "network_name": "storage"}}'
---
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata: {name: storage-legacy}
spec:
  config: '{"cniVersion": "1.0.0", "type": "macvlan", "master": "eth1", "ipam": {"type": "whereabouts", "range": "10.10.0.0/24", "range_end": "10.10.1.20", "exclude": ["10.10.0.0/28"], "gateway": "10.10.0.1", "network_name": "legacy"}}'
`);
  await page.click('#import-replace');
  await settled();
  const net = card('storage');
  await net.locator('input.count').fill('12');
  await net.locator('[data-action="add-pods"]').click();
  await settled();
  await net.getByRole('button', { name: 'delete default/pod-3' }).click();
  await settled();
  await net.locator('.map-grid .cell').first().click();
  await settled();
  await net.locator('.map-grid .cell').nth(8).hover();
  assert.match(await page.locator('#conflicts').innerText(), /storage range and storage-legacy range share 10\.10\.0\.16 – 10\.10\.0\.254; network_name keeps them apart/);
  assert.equal(await card('storage-legacy').locator('[data-warning="range_end"]').getAttribute('data-rule'), 'range-end-outside-range');
  await page.evaluate(() => { document.querySelector('#toast').hidden = true; });
  await page.screenshot({ path: join(artifacts, 'playground.png'), fullPage: true });
  assert.deepEqual(pageErrors, []);
});

test('everything the page loaded came from the local server (works offline, no CDN)', () => {
  const origin = new URL(baseUrl).origin;
  const foreign = requests.filter((url) => !url.startsWith(`${origin}/`) && !/^(data|blob):/.test(url));
  assert.deepEqual(foreign, []);
  assert.ok(requests.some((url) => url.endsWith('/component/hereabouts.core.wasm')), 'the core module was fetched');
});
