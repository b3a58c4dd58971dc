// serde_json's syntax errors, so `plan.mjs` rejects undecodable input with the very message
// `hereabouts plan` prints ("input is not valid JSON: expected `,` or `}` at line 3 column 7").
//
// A validating scan that follows serde_json 1.0's parser (`from_str` into a `Value`): the same
// checks in the same order, the same error codes, and the same positions — `error` reports the
// index after the consumed byte, `peek_error` the index of the peeked byte plus one, both as
// line and byte column. JSON.parse accepts a little that serde_json rejects (numbers that
// overflow to infinity, nesting of 128 and deeper), so the scan runs before JSON.parse.

const RECURSION_LIMIT = 128;

class SyntaxFailure {
  constructor(message) {
    this.message = message;
  }
}

/** The serde_json error message for `text`, or null when serde_json would parse it. */
export function serdeJsonError(text) {
  return scanJson(text).error;
}

/**
 * Scans `text` as serde_json does: `{error}` (its message, or null) and `numbers`, the source
 * text of every number by its path (`JSON.stringify(["ipam", "range"])`), since serde reports
 * `1.0` as a float and `1` as an integer where JSON.parse gives the same value.
 */
export function scanJson(text) {
  const bytes = new TextEncoder().encode(text);
  const len = bytes.length;
  let index = 0;
  let depth = RECURSION_LIMIT;
  const path = [];
  const numbers = new Map();

  const position = (i) => {
    let line = 1;
    let start = 0;
    for (let k = 0; k < i; k++) {
      if (bytes[k] === 0x0a) {
        line += 1;
        start = k + 1;
      }
    }
    return `line ${line} column ${i - start}`;
  };
  const error = (message) => new SyntaxFailure(`${message} at ${position(index)}`);
  const peekError = (message) => new SyntaxFailure(`${message} at ${position(Math.min(len, index + 1))}`);
  const peek = () => (index < len ? bytes[index] : undefined);
  const next = () => (index < len ? bytes[index++] : undefined);
  const ch = (c) => c.charCodeAt(0);
  const isDigit = (b) => b !== undefined && b >= 0x30 && b <= 0x39;

  function whitespace() {
    for (;;) {
      const b = peek();
      if (b === 0x20 || b === 0x0a || b === 0x09 || b === 0x0d) index += 1;
      else return b;
    }
  }

  function ident(rest) {
    for (const expected of rest) {
      const b = next();
      if (b === undefined) throw error('EOF while parsing a value');
      if (b !== ch(expected)) throw error('expected ident');
    }
  }

  function hexEscape() {
    if (len - index < 4) {
      index = len;
      throw error('EOF while parsing a string');
    }
    const digits = String.fromCharCode(...bytes.subarray(index, index + 4));
    index += 4;
    if (!/^[0-9a-fA-F]{4}$/.test(digits)) throw error('invalid escape');
    return parseInt(digits, 16);
  }

  function nextOrEof() {
    const b = next();
    if (b === undefined) throw error('EOF while parsing a string');
    return b;
  }

  function unicodeEscape() {
    const n = hexEscape();
    if (n >= 0xdc00 && n <= 0xdfff) throw error('lone leading surrogate in hex escape');
    if (n < 0xd800 || n > 0xdbff) return;
    for (const expected of ['\\', 'u']) {
      const b = peek();
      if (b === undefined) throw error('EOF while parsing a string');
      index += 1;
      if (b !== ch(expected)) throw error('unexpected end of hex escape');
    }
    const n2 = hexEscape();
    if (n2 < 0xdc00 || n2 > 0xdfff) throw error('lone leading surrogate in hex escape');
  }

  /** After the opening quote. */
  function string() {
    for (;;) {
      if (index === len) throw error('EOF while parsing a string');
      const b = bytes[index];
      if (b === 0x22) {
        index += 1;
        return;
      }
      if (b === 0x5c) {
        index += 1;
        const e = nextOrEof();
        if (e === ch('u')) unicodeEscape();
        else if (!'"\\/bfnrt'.includes(String.fromCharCode(e))) throw error('invalid escape');
      } else if (b < 0x20) {
        index += 1;
        throw error('control character (\\u0000-\\u001F) found while parsing a string');
      } else {
        index += 1;
      }
    }
  }

  /** After an optional `-`; index at the first digit. */
  function number(negative = false) {
    const start = index;
    const first = next();
    if (first === undefined) throw error('EOF while parsing a value');
    if (first === ch('0')) {
      if (isDigit(peek())) throw peekError('invalid number');
    } else if (!isDigit(first)) {
      throw error('invalid number');
    }
    while (isDigit(peek())) index += 1;
    if (peek() === ch('.')) {
      index += 1;
      if (!isDigit(peek())) throw peekError(peek() === undefined ? 'EOF while parsing a value' : 'invalid number');
      while (isDigit(peek())) index += 1;
    }
    if (peek() === ch('e') || peek() === ch('E')) {
      index += 1;
      if (peek() === ch('+') || peek() === ch('-')) index += 1;
      const d = next();
      if (d === undefined) throw error('EOF while parsing a value');
      if (!isDigit(d)) throw error('invalid number');
      while (isDigit(peek())) index += 1;
    }
    const token = String.fromCharCode(...bytes.subarray(start, index));
    if (!Number.isFinite(Number(token))) throw error('number out of range');
    numbers.set(JSON.stringify(path), negative ? `-${token}` : token);
  }

  function enter() {
    depth -= 1;
    if (depth === 0) throw peekError('recursion limit exceeded');
  }

  function value() {
    const b = whitespace();
    if (b === undefined) throw peekError('EOF while parsing a value');
    switch (String.fromCharCode(b)) {
      case 'n': index += 1; return ident('ull');
      case 't': index += 1; return ident('rue');
      case 'f': index += 1; return ident('alse');
      case '-': index += 1; return number(true);
      case '"': index += 1; return string();
      case '[': enter(); index += 1; list(); depth += 1; return undefined;
      case '{': enter(); index += 1; object(); depth += 1; return undefined;
      default:
        if (isDigit(b)) return number();
        throw peekError('expected value');
    }
  }

  function list() {
    let first = true;
    path.push(-1);
    for (;;) {
      const b = whitespace();
      if (b === undefined) throw peekError('EOF while parsing a list');
      if (b === ch(']')) break;
      if (first) {
        first = false;
      } else if (b === ch(',')) {
        index += 1;
        const after = whitespace();
        if (after === ch(']')) throw peekError('trailing comma');
        if (after === undefined) throw peekError('EOF while parsing a value');
      } else {
        throw peekError('expected `,` or `]`');
      }
      path[path.length - 1] += 1;
      value();
    }
    path.pop();
    index += 1; // end_seq eats the `]`
  }

  function object() {
    let first = true;
    for (;;) {
      const b = whitespace();
      if (b === undefined) throw peekError('EOF while parsing an object');
      if (b === ch('}')) break;
      if (first) {
        first = false;
        if (b !== ch('"')) throw peekError('key must be a string');
      } else if (b === ch(',')) {
        index += 1;
        const after = whitespace();
        if (after === ch('}')) throw peekError('trailing comma');
        if (after === undefined) throw peekError('EOF while parsing a value');
        if (after !== ch('"')) throw peekError('key must be a string');
      } else {
        throw peekError('expected `,` or `}`');
      }
      const keyStart = index;
      index += 1; // the key's opening quote
      string();
      path.push(JSON.parse(new TextDecoder().decode(bytes.subarray(keyStart, index))));
      const colon = whitespace();
      if (colon === undefined) throw peekError('EOF while parsing an object');
      if (colon !== ch(':')) throw peekError('expected `:`');
      index += 1;
      value();
      path.pop();
    }
    index += 1; // end_map eats the `}`
  }

  try {
    value();
    if (whitespace() !== undefined) throw peekError('trailing characters');
    return { error: null, numbers };
  } catch (e) {
    if (e instanceof SyntaxFailure) return { error: e.message, numbers };
    throw e;
  }
}
