// A few DOM helpers: elements from plain data, no framework.

/** h('div.card', {attrs}?, children…): creates an element; `class`/`.x` classes, `on*` listeners. */
export function h(tag, attrs = {}, ...children) {
  if (attrs === null || typeof attrs !== 'object' || attrs instanceof Node || Array.isArray(attrs)) {
    children.unshift(attrs);
    attrs = {};
  }
  const [name, ...classes] = tag.split('.');
  const el = document.createElement(name || 'div');
  if (classes.length) el.className = classes.join(' ');
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2).toLowerCase(), value);
    else if (key === 'class') el.className += ` ${value}`;
    else if (key === 'style' && typeof value === 'object') Object.assign(el.style, value);
    else if (key === 'value') el.value = value; // a textarea has no value attribute
    else if (key in el && typeof value !== 'string') el[key] = value;
    else el.setAttribute(key, value === true ? '' : value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** Groups the digits of a decimal string: 16777214 → 16 777 214 (thin spaces). */
export function groupDigits(decimal) {
  return String(decimal).replace(/\B(?=(\d{3})+(?!\d))/g, '\u202f');
}

/** count / total as a fraction 0…1, for decimal strings of any size (BigInt). */
export function fraction(count, total) {
  const t = BigInt(total);
  if (t === 0n) return 0;
  return Number((BigInt(count) * 1_000_000n) / t) / 1_000_000;
}

export function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}
