// Import/export formats of the playground (pure functions, no browser).

import assert from 'node:assert/strict';
import { test } from 'node:test';

import YAML from 'yaml';

import { cniConfig, decodeShare, encodeShare, importNetworks, ipamJson, nadYaml } from '../src/formats.js';

const ipam = { type: 'whereabouts', range: '10.1.0.0/24', exclude: ['10.1.0.0/28'] };

test('a NAD in YAML, a NAD in JSON, a conflist and a bare ipam section import in one paste', () => {
  const nadJson = JSON.stringify({
    apiVersion: 'k8s.cni.cncf.io/v1', kind: 'NetworkAttachmentDefinition', metadata: { name: 'as-json', namespace: 'ns' },
    spec: { config: JSON.stringify({ cniVersion: '0.3.1', type: 'bridge', ipam }) },
  });
  const text = [
    nadYaml({ name: 'as-yaml', ipam, cni: null }),
    nadJson,
    JSON.stringify({ cniVersion: '1.0.0', name: 'list', plugins: [{ type: 'macvlan', ipam }, { type: 'tuning' }] }),
    YAML.stringify({ ...ipam, name: 'bare' }),
  ].join('\n---\n');
  const nets = importNetworks(text);
  assert.deepEqual(nets.map((n) => n.name), ['as-yaml', 'as-json', 'list', 'bare']);
  assert.deepEqual(nets[0].ipam, ipam);
  assert.equal(nets[1].namespace, 'ns');
  assert.equal(nets[1].cni.type, 'bridge');
  assert.equal(nets[2].cni.type, 'macvlan');
  assert.equal(nets[3].ipam.range, '10.1.0.0/24');
});

test('export and re-import give back the same network', () => {
  const network = { name: 'n1', namespace: 'lab', cni: { cniVersion: '0.3.1', type: 'ipvlan', master: 'eth2' }, ipam };
  const [again] = importNetworks(nadYaml(network));
  assert.equal(again.name, 'n1');
  assert.equal(again.namespace, 'lab');
  assert.deepEqual(again.ipam, ipam);
  assert.deepEqual(cniConfig(again), cniConfig(network));
  assert.deepEqual(JSON.parse(ipamJson(network)), ipam);
});

test('import errors say what was wrong', () => {
  assert.throws(() => importNetworks(''), /nothing to import/);
  assert.throws(() => importNetworks('kind: NetworkAttachmentDefinition\nmetadata: {name: x}\nspec: {}\n'), /x: spec.config must be a string/);
  assert.throws(() => importNetworks('{"cniVersion": "1.0.0", "type": "bridge"}'), /not a NetworkAttachmentDefinition, CNI config or ipam section/);
  assert.throws(() => importNetworks('a: [1'), /document 1:/);
});

test('a shared plan survives the URL fragment round trip', async () => {
  const state = { networks: [{ name: 'big', ipam: { range: '10.0.0.0/8', exclude: Array.from({ length: 1000 }, (_, i) => `10.${i % 250}.${i % 7}.0/24`) } }] };
  const fragment = await encodeShare(state);
  assert.match(fragment, /^p=[A-Za-z0-9_-]+$/);
  assert.ok(fragment.length < 8000, `fragment is ${fragment.length} characters`);
  assert.deepEqual(await decodeShare(`#${fragment}`), state);
  assert.equal(await decodeShare('#nothing'), null);
});

test('a NAD\'s hereabouts.io/nodes annotation imports as the node count and exports back', () => {
  const sliced = { type: 'hereabouts', range: '10.2.0.0/24', node_slice_size: '/26' };
  const yaml = nadYaml({ name: 'fast', namespace: 'default', ipam: sliced, cni: null, nodes: '6' });
  assert.equal(YAML.parse(yaml).metadata.annotations['hereabouts.io/nodes'], '6');
  const [net] = importNetworks(yaml);
  assert.equal(net.nodes, '6');
  assert.deepEqual(net.ipam, sliced);
  assert.equal(YAML.parse(nadYaml({ name: 'plain', ipam, cni: null })).metadata.annotations, undefined);
  assert.equal('nodes' in importNetworks(nadYaml({ name: 'plain', ipam, cni: null }))[0], false);
});
