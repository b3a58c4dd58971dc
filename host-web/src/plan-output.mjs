// `hereabouts plan`'s output, built from what the component answered: the JSON document (keys
// sorted, as serde_json's default map writes them, so `plan.mjs` prints byte for byte what the
// native command prints) and the `--format text` table.

/** One range: `{capacity, first, free, last, next, persistent?, range}`; `persistent` (the
 *  count of addresses kept for an IPAMClaim or StatefulSet member with no pod) only when the
 *  document lists persistent addresses (`showPersistent`). */
export function rangeOut(report, showPersistent = false) {
  return {
    capacity: report.capacity,
    first: report.first ?? null,
    free: report.free,
    last: report.last ?? null,
    next: report.next.length > 0 ? report.next[0] : null,
    ...(showPersistent ? { persistent: report.persistent } : {}),
    range: report.range,
  };
}

/** One config-warning: `{field, ignored, reason, rule}`. */
export function warningOut(warning) {
  return { field: warning.field, ignored: warning.ignored, reason: warning.reason, rule: warning.rule };
}

/** The core's node-slicing: `{addresses_per_slice, count, range, slice_size, slices}`. */
export function nodeSlicesOut(slicing) {
  return {
    addresses_per_slice: slicing.addressesPerSlice,
    count: slicing.slices.length,
    range: slicing.range,
    slice_size: slicing.sliceSize,
    slices: slicing.slices,
  };
}

/** The whole answer for a plan document: `{ranges, warnings}`, with `node_slices` first when the
 *  config has node_slice_size (`slicing`, else undefined); each range with `persistent` when
 *  `showPersistent` (the document lists persistent addresses). */
export const planOut = (reports, warnings, slicing, showPersistent = false) => ({
  ...(slicing ? { node_slices: nodeSlicesOut(slicing) } : {}),
  ranges: reports.map((r) => rangeOut(r, showPersistent)),
  warnings: warnings.map(warningOut),
});

/** Slices listed in full up to this many; beyond, the first few and the last. */
const TEXT_SLICES = 8;

/** `--format text`: the table, columns padded to their widest cell (a PERSISTENT column after
 *  FREE only when a range has persistent addresses), the node slices line, then one line per
 *  warning. */
export function planText({ node_slices: slices, ranges, warnings }) {
  const kept = ranges.some((r) => r.persistent !== undefined && r.persistent !== '0');
  const header = ['RANGE', 'FIRST', 'LAST', 'CAPACITY', 'FREE', ...(kept ? ['PERSISTENT'] : []), 'NEXT'];
  const rows = ranges.map((r) => [r.range, r.first ?? '-', r.last ?? '-', r.capacity, r.free, ...(kept ? [r.persistent ?? '-'] : []), r.next ?? '(exhausted)']);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const line = (cells) => cells.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd();
  const lines = [line(header), ...rows.map(line)];
  if (slices) {
    const listed = slices.slices.length <= TEXT_SLICES
      ? slices.slices.join(', ')
      : `${slices.slices.slice(0, TEXT_SLICES - 2).join(', ')}, ..., ${slices.slices.at(-1)}`;
    lines.push(`node slices: ${slices.count} of ${slices.slice_size} in ${slices.range}, ${slices.addresses_per_slice} addresses each: ${listed}`);
  }
  for (const w of warnings) lines.push(`warning: ${w.field}: ignored ${w.ignored}: ${w.reason} [${w.rule}]`);
  return `${lines.join('\n')}\n`;
}
