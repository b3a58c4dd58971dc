// The ipam section of a CNI config → the WIT `network-config`, exactly as the native host maps it
// (host-cni/src/config.rs). Range strings are never interpreted here: the component owns that.
//
// Type errors are reported the way the native `hereabouts plan` reports them: keys are checked in
// the order serde_json's map keeps them (sorted), the first bad key wins, and the message names the
// key and the value's type in serde's words, so `plan.mjs` and `hereabouts plan` print the same.

/** Keys whose value must be a string (or null/absent). */
const OPTIONAL_STRINGS = new Set([
  'range', 'range_start', 'range_end', 'gateway', 'network_name', 'datastore', 'etcd_username',
  'etcd_password', 'etcd_key_file', 'etcd_cert_file', 'etcd_ca_cert_file', 'configuration_path',
  'log_file', 'log_level', 'data_dir',
]);
const OPTIONAL_BOOLS = new Set(['enable_overlapping_ranges', 'sticky']);
const RANGE_KEY_STRINGS = ['range_start', 'range_end'];

/** A failed conversion: `{code, msg}` as `hereabouts plan` prints it. */
export class PlanError extends Error {
  constructor(code, msg) {
    super(msg);
    this.code = code;
    this.msg = msg;
  }
  toJSON() {
    return { code: this.code, msg: this.msg };
  }
}

/** CNI error codes used by plan (see host-cni/src/error.rs). */
export const Code = Object.freeze({
  Io: 5, Decode: 6, InvalidConfig: 7, TryAgainLater: 11, Exhausted: 100, AddressUnavailable: 101, Internal: 102,
});

/** `json_kind` in config.rs. */
export function jsonKind(value) {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  switch (typeof value) {
    case 'boolean': return 'a boolean';
    case 'number': return 'a number';
    case 'string': return 'a string';
    default: return 'an object';
  }
}

/** serde's `Unexpected` wording for a JSON value (as buffered by serde's flatten support). */
function unexpected(value) {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'sequence';
  switch (typeof value) {
    case 'boolean': return `boolean \`${value}\``;
    case 'number': return Number.isInteger(value) ? `integer \`${value}\`` : `floating point \`${value}\``;
    case 'string': return `string ${JSON.stringify(value)}`;
    default: return 'map';
  }
}

const invalidType = (value, expected) => `invalid type: ${unexpected(value)}, expected ${expected}`;
const isObject = (value) => value !== null && typeof value === 'object' && !Array.isArray(value);

/** serde's message for `value` as `Option<String>`, or null when it fits. */
function checkOptionalString(value) {
  return value === null || typeof value === 'string' ? null : invalidType(value, 'a string');
}

/** serde's message for `value` as a struct of optional/defaulted string fields, or null. */
function checkStruct(value, name, fields) {
  if (!isObject(value)) return invalidType(value, `struct ${name}`);
  for (const [key, item] of Object.entries(value)) {
    const rule = fields[key];
    const problem = rule && rule(item);
    if (problem) return problem;
  }
  return null;
}

const stringField = (value) => (typeof value === 'string' ? null : invalidType(value, 'a string'));
const stringList = (value) => {
  if (!Array.isArray(value)) return invalidType(value, 'a sequence');
  for (const item of value) if (typeof item !== 'string') return invalidType(item, 'a string');
  return null;
};
const RANGE_KEYS = {
  range: stringField,
  range_start: checkOptionalString,
  range_end: checkOptionalString,
  exclude: stringList,
};
const KUBERNETES_KEYS = { kubeconfig: checkOptionalString, k8s_api_root: checkOptionalString };

/** The serde error for one key, or null when its value has the right type. */
function keyProblem(key, value) {
  if (key === 'type') return stringField(value);
  if (OPTIONAL_STRINGS.has(key)) return checkOptionalString(value);
  if (OPTIONAL_BOOLS.has(key)) return value === null || typeof value === 'boolean' ? null : invalidType(value, 'a boolean');
  if (key === 'exclude') return stringList(value);
  if (key === 'ipRanges') {
    if (!Array.isArray(value)) return invalidType(value, 'a sequence');
    for (const item of value) {
      const problem = checkStruct(item, 'RangeKeys', RANGE_KEYS);
      if (problem) return problem;
    }
    return null;
  }
  if (key === 'kubernetes') return value === null ? null : checkStruct(value, 'KubernetesKeys', KUBERNETES_KEYS);
  return null; // routes, dns, addresses, etcd_host and unknown keys: any JSON value.
}

/** `describe_type_error` in config.rs. */
function describeTypeError(serdeMessage, item) {
  if (Array.isArray(item)) {
    for (let i = 0; i < item.length; i++) {
      const element = item[i];
      if (!(typeof element === 'string' || isObject(element))) return `[${i}] must be a string, found ${jsonKind(element)}`;
    }
    return serdeMessage;
  }
  return `unexpected ${jsonKind(item)}: ${serdeMessage}`;
}

/** Compares two strings by their UTF-8 bytes, as Rust's BTreeMap<String, _> orders keys. */
export function compareUtf8(a, b) {
  const ea = new TextEncoder().encode(a);
  const eb = new TextEncoder().encode(b);
  const n = Math.min(ea.length, eb.length);
  for (let i = 0; i < n; i++) if (ea[i] !== eb[i]) return ea[i] - eb[i];
  return ea.length - eb.length;
}

/**
 * Checks an ipam object and returns the WIT `network-config` (jco's camelCase form).
 * Throws PlanError(7, "ipam…: …") exactly where the native host would.
 */
export function networkConfig(ipam) {
  if (!isObject(ipam)) throw new PlanError(Code.InvalidConfig, `ipam: expected an object, found ${jsonKind(ipam)}`);
  for (const key of Object.keys(ipam).sort(compareUtf8)) {
    const problem = keyProblem(key, ipam[key]);
    if (problem) throw new PlanError(Code.InvalidConfig, `ipam.${key}: ${describeTypeError(problem, ipam[key])}`);
  }
  const some = (value) => (value === null || value === undefined ? undefined : value);
  const rangeConfig = (keys) => ({
    range: keys.range ?? '',
    rangeStart: some(keys.range_start),
    rangeEnd: some(keys.range_end),
    exclude: keys.exclude ?? [],
  });
  const range = some(ipam.range);
  const gateway = some(ipam.gateway);
  return {
    range: range === undefined ? undefined : rangeConfig(ipam),
    ipRanges: (ipam.ipRanges ?? []).map(rangeConfig),
    gateway: gateway === '' ? undefined : gateway,
    networkName: ipam.network_name ?? '',
    // Whereabouts' default is true.
    enableOverlappingRanges: ipam.enable_overlapping_ranges ?? true,
  };
}

/**
 * Parses a plan document (`{"ipam": {…}, "allocated": […]}`) as `hereabouts plan` does.
 * Returns `{network, allocated}`; throws PlanError.
 */
export function planInput(document) {
  if (!isObject(document)) {
    throw new PlanError(Code.InvalidConfig, 'input: expected an object with "ipam" and "allocated"');
  }
  if (!Object.hasOwn(document, 'ipam')) {
    throw new PlanError(Code.InvalidConfig, 'ipam: missing (the ipam section of a CNI config)');
  }
  const network = networkConfig(document.ipam);
  const allocated = document.allocated;
  if (allocated === undefined || allocated === null) return { network, allocated: [] };
  if (!Array.isArray(allocated)) throw new PlanError(Code.InvalidConfig, 'allocated: must be a list of addresses');
  allocated.forEach((item, i) => {
    if (typeof item !== 'string') throw new PlanError(Code.InvalidConfig, `allocated[${i}]: must be an address string`);
  });
  return { network, allocated: [...allocated] };
}
