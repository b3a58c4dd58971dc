// The ipam section of a CNI config → the WIT `network-config`, exactly as the native host maps it
// (host-cni/host/src/config.rs). Range strings are never interpreted here: the component owns that.
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

/** CNI error codes used by plan (see host-cni/host/src/error.rs). */
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

/** The source text of the number at `path` (from json-errors.mjs's scan), when known. */
let rawNumber = () => undefined;

/**
 * A float as serde_json writes it in errors (the `zmij` crate): the shortest round-trip digits,
 * positional for decimal exponents -5..=15 (`100000.0`, `0.00001`), else `1e+20`, `1.5e-7`.
 */
function zmijFloat(x) {
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const [mantissa, expText] = x.toExponential().split('e');
  const exp = Number(expText);
  const sign = mantissa.startsWith('-') ? '-' : '';
  const digits = mantissa.replace(/[-.]/g, '');
  if (exp < -5 || exp > 15) {
    const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    return `${sign}${m}e${exp < 0 ? '-' : '+'}${Math.abs(exp)}`;
  }
  if (exp < 0) return `${sign}0.${'0'.repeat(-exp - 1)}${digits}`;
  const whole = digits.slice(0, exp + 1).padEnd(exp + 1, '0');
  const fraction = digits.slice(exp + 1);
  return `${sign}${whole}.${fraction || '0'}`;
}

const U64_MAX = 2n ** 64n - 1n;

/**
 * The f64 serde_json 1.0 reads from a number token (without its `float_roundtrip` feature): the
 * significand as a u64 (digits past overflow only scale it), then one multiplication or
 * division by a power of ten — sometimes an ulp away from JavaScript's correctly rounded parse.
 */
function serdeF64(token) {
  const m = /^(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/.exec(token);
  if (!m) return Number(token);
  const [, sign, integer, fraction = '', expText = '0'] = m;
  let significand = 0n;
  let exponent = 0;
  let overflowed = false;
  for (const d of integer) {
    const next = significand * 10n + BigInt(d);
    if (overflowed || next > U64_MAX) {
      overflowed = true;
      exponent += 1;
    } else {
      significand = next;
    }
  }
  for (const d of fraction) {
    const next = significand * 10n + BigInt(d);
    if (overflowed || next > U64_MAX) break; // parse_decimal_overflow ignores the rest
    significand = next;
    exponent -= 1;
  }
  exponent += Number(expText);
  let f = Number(significand);
  for (;;) {
    if (Math.abs(exponent) <= 308) {
      const pow = Number(`1e${Math.abs(exponent)}`);
      f = exponent >= 0 ? f * pow : f / pow;
      break;
    }
    if (f === 0 || exponent >= 0) break;
    f /= 1e308;
    exponent += 308;
  }
  return sign ? -f : f;
}

/** serde's words for a number: `integer` when serde_json read it as u64/i64, else `floating point`. */
function numberWords(value, path) {
  const raw = rawNumber(path);
  const integral = raw === undefined
    ? Number.isInteger(value) && Math.abs(value) <= Number.MAX_SAFE_INTEGER
    : /^-?\d+$/.test(raw) && raw !== '-0' && (raw.startsWith('-') ? BigInt(raw) >= -(2n ** 63n) : BigInt(raw) < 2n ** 64n);
  if (integral) return `integer \`${raw ?? value}\``;
  return `floating point \`${zmijFloat(raw === undefined ? value : serdeF64(raw))}\``;
}

/** serde's `Unexpected` wording for a JSON value at `path` (inside the ipam object). */
function unexpected(value, path) {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'sequence';
  switch (typeof value) {
    case 'boolean': return `boolean \`${value}\``;
    case 'number': return numberWords(value, path);
    case 'string': return `string ${JSON.stringify(value)}`;
    default: return 'map';
  }
}

const invalidType = (value, path, expected) => `invalid type: ${unexpected(value, path)}, expected ${expected}`;
const isObject = (value) => value !== null && typeof value === 'object' && !Array.isArray(value);

/** serde's message for `value` as `Option<String>`, or null when it fits. */
function checkOptionalString(value, path) {
  return value === null || typeof value === 'string' ? null : invalidType(value, path, 'a string');
}

/** serde's message for `value` as a struct of optional/defaulted string fields, or null. */
function checkStruct(value, path, name, fields) {
  if (!isObject(value)) return invalidType(value, path, `struct ${name}`);
  for (const [key, item] of Object.entries(value)) {
    const rule = fields[key];
    const problem = rule && rule(item, [...path, key]);
    if (problem) return problem;
  }
  return null;
}

const stringField = (value, path) => (typeof value === 'string' ? null : invalidType(value, path, 'a string'));
const stringList = (value, path) => {
  if (!Array.isArray(value)) return invalidType(value, path, 'a sequence');
  for (let i = 0; i < value.length; i++) {
    if (typeof value[i] !== 'string') return invalidType(value[i], [...path, i], 'a string');
  }
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
  const path = [key];
  if (key === 'type') return stringField(value, path);
  if (OPTIONAL_STRINGS.has(key)) return checkOptionalString(value, path);
  if (OPTIONAL_BOOLS.has(key)) return value === null || typeof value === 'boolean' ? null : invalidType(value, path, 'a boolean');
  if (key === 'exclude') return stringList(value, path);
  if (key === 'ipRanges') {
    if (!Array.isArray(value)) return invalidType(value, path, 'a sequence');
    for (let i = 0; i < value.length; i++) {
      const problem = checkStruct(value[i], [key, i], 'RangeKeys', RANGE_KEYS);
      if (problem) return problem;
    }
    return null;
  }
  if (key === 'kubernetes') return value === null ? null : checkStruct(value, path, 'KubernetesKeys', KUBERNETES_KEYS);
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
 * Throws PlanError(7, "ipam…: …") exactly where the native host would. `numbers(path)` gives the
 * source text of a number inside the ipam object (serde tells integers from floats by it).
 */
export function networkConfig(ipam, numbers = () => undefined) {
  if (!isObject(ipam)) throw new PlanError(Code.InvalidConfig, `ipam: expected an object, found ${jsonKind(ipam)}`);
  rawNumber = numbers;
  try {
    for (const key of Object.keys(ipam).sort(compareUtf8)) {
      const problem = keyProblem(key, ipam[key]);
      if (problem) throw new PlanError(Code.InvalidConfig, `ipam.${key}: ${describeTypeError(problem, ipam[key])}`);
    }
  } finally {
    rawNumber = () => undefined;
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
export function planInput(document, numbers = () => undefined) {
  if (!isObject(document)) {
    throw new PlanError(Code.InvalidConfig, 'input: expected an object with "ipam" and "allocated"');
  }
  if (!Object.hasOwn(document, 'ipam')) {
    throw new PlanError(Code.InvalidConfig, 'ipam: missing (the ipam section of a CNI config)');
  }
  const network = networkConfig(document.ipam, (path) => numbers(['ipam', ...path]));
  const allocated = document.allocated;
  if (allocated === undefined || allocated === null) return { network, allocated: [] };
  if (!Array.isArray(allocated)) throw new PlanError(Code.InvalidConfig, 'allocated: must be a list of addresses');
  allocated.forEach((item, i) => {
    if (typeof item !== 'string') throw new PlanError(Code.InvalidConfig, `allocated[${i}]: must be an address string`);
  });
  return { network, allocated: [...allocated] };
}
