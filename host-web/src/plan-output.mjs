// `hereabouts plan`'s output, built from what the component answered: the JSON document (keys
// sorted, as serde_json's default map writes them, so `plan.mjs` prints byte for byte what the
// native command prints) and the `--format text` table.

/** One range: `{capacity, first, free, last, next, range}`. */
export function rangeOut(report) {
  return {
    capacity: report.capacity,
    first: report.first ?? null,
    free: report.free,
    last: report.last ?? null,
    next: report.next.length > 0 ? report.next[0] : null,
    range: report.range,
  };
}

/** One config-warning: `{field, ignored, reason, rule}`. */
export function warningOut(warning) {
  return { field: warning.field, ignored: warning.ignored, reason: warning.reason, rule: warning.rule };
}

/** The whole answer for a plan document: `{ranges, warnings}`. */
export const planOut = (reports, warnings) => ({ ranges: reports.map(rangeOut), warnings: warnings.map(warningOut) });

/** `--format text`: the table, columns padded to their widest cell, then one line per warning. */
export function planText({ ranges, warnings }) {
  const header = ['RANGE', 'FIRST', 'LAST', 'CAPACITY', 'FREE', 'NEXT'];
  const rows = ranges.map((r) => [r.range, r.first ?? '-', r.last ?? '-', r.capacity, r.free, r.next ?? '(exhausted)']);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const line = (cells) => cells.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd();
  const lines = [line(header), ...rows.map(line)];
  for (const w of warnings) lines.push(`warning: ${w.field}: ignored ${w.ignored}: ${w.reason} [${w.rule}]`);
  return `${lines.join('\n')}\n`;
}
