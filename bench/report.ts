import { latencyMarkdown, type LatencyReport } from './latency';
import { tableMarkdown, type TableReport } from './outbox-table';
import { median } from './stats';
import type { Measurement } from './variants';
import { writersMarkdown, type WritersReport } from './writers';

/** All runs of one variant, summarised. */
export interface VariantResult {
  name: string;
  group: 'consume' | 'produce';
  runs: Measurement[];
  median: number;
  min: number;
  max: number;
  /** Median events/s divided by the baseline's (raw kafkajs for consumers, direct kafkajs for producers). */
  ratio: number | null;
  correctness: string;
}

export interface BenchReport {
  date: string;
  machine: { cpus: number; cpuModel: string; memoryGiB: number; node: string; platform: string; kafka: string; postgres: string };
  settings: Record<string, number | string>;
  results: VariantResult[];
  /** Idle-to-delivered latency, relay (LISTEN / poll only) vs kafkajs direct (bench/latency.ts). */
  latency?: LatencyReport;
  /** Writer transactions with and without the lane lock and NOTIFY (bench/writers.ts). */
  writers?: WritersReport;
  /** Draining a full outbox table: delete vs mark published, xmin pinned (bench/outbox-table.ts). */
  table?: TableReport;
}

export function summarise(name: string, group: 'consume' | 'produce', runs: Measurement[]): VariantResult {
  const rates = runs.map((r) => r.items / Math.max(r.seconds, 0.001));
  const correct = runs.map((r) => r.correct);
  let correctness = 'n/a';
  if (correct.every((c) => c === true)) correctness = 'exact';
  else if (correct.some((c) => c === false)) {
    const errors = runs.map((r) => r.error ?? 0);
    correctness = `WRONG: totals ${(median(errors) * 100 >= 0 ? '+' : '')}${(median(errors) * 100).toFixed(1)} %`;
  }
  return { name, group, runs, median: median(rates), min: Math.min(...rates), max: Math.max(...rates), ratio: null, correctness };
}

export function withRatios(results: VariantResult[]): VariantResult[] {
  const base = { consume: results.find((r) => r.group === 'consume')?.median, produce: results.find((r) => r.group === 'produce' && r.name.startsWith('kafkajs'))?.median };
  return results.map((r) => ({ ...r, ratio: base[r.group] === undefined ? null : r.median / (base[r.group] as number) }));
}

const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');

export function markdown(report: BenchReport): string {
  const m = report.machine;
  const lines = [
    `Machine: ${m.cpus} × ${m.cpuModel}, ${m.memoryGiB} GiB RAM, ${m.platform}, Node ${m.node}; Kafka ${m.kafka}, Postgres ${m.postgres}.`,
    `Settings: ${Object.entries(report.settings).map(([k, v]) => `${k}=${v}`).join(', ')}.`,
  ];
  if (report.results.length > 0) {
    lines.push('', '| variant | events/s (median) | min–max | runs | vs baseline | totals |', '|---|---:|---:|---:|---:|---|');
    for (const r of report.results) {
      lines.push(`| ${r.name} | ${fmt(r.median)} | ${fmt(r.min)}–${fmt(r.max)} | ${r.runs.length} | ${r.ratio === null ? '' : `${r.ratio.toFixed(r.ratio < 0.1 ? 3 : 2)}×`} | ${r.correctness} |`);
    }
    lines.push(
      '',
      'Consumers: messages (including retried copies) per second from the first message handled to the last; baseline = raw kafkajs. ' +
        'Producers: rows published per second (relay: back-to-back claims of rows already committed, until the outbox is empty); baseline = kafkajs direct; their runs alternate.',
    );
  }
  for (const section of [report.latency && latencyMarkdown(report.latency), report.writers && writersMarkdown(report.writers), report.table && tableMarkdown(report.table)]) {
    if (section) lines.push('', section.trimEnd());
  }
  return lines.join('\n') + '\n';
}

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** A horizontal bar chart of median events/s with min–max whiskers, one row per variant. */
export function svg(report: BenchReport): string {
  const rows = report.results;
  const left = 330;
  const width = 900;
  const barArea = width - left - 90;
  const rowH = 28;
  const top = 40;
  const height = top + rows.length * rowH + 30;
  const max = Math.max(...rows.map((r) => r.max), 1);
  const x = (v: number): number => left + (v / max) * barArea;
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    `<text x="10" y="22" font-size="14" font-weight="bold">${esc(`events/s, median of runs (whiskers: min–max) — ${report.machine.cpus} CPUs, ${report.machine.memoryGiB} GiB`)}</text>`,
  ];
  rows.forEach((r, i) => {
    const y = top + i * rowH;
    const colour = r.correctness.startsWith('WRONG') ? '#d9534f' : r.group === 'produce' ? '#5b8def' : '#3c9d5d';
    parts.push(`<text x="${left - 8}" y="${y + 17}" text-anchor="end">${esc(r.name)}</text>`);
    parts.push(`<rect x="${left}" y="${y + 5}" width="${Math.max(1, x(r.median) - left).toFixed(1)}" height="${rowH - 10}" fill="${colour}"/>`);
    parts.push(`<line x1="${x(r.min).toFixed(1)}" x2="${x(r.max).toFixed(1)}" y1="${y + rowH / 2}" y2="${y + rowH / 2}" stroke="#222"/>`);
    parts.push(`<text x="${(x(r.max) + 6).toFixed(1)}" y="${y + 17}">${esc(fmt(r.median))}${r.correctness.startsWith('WRONG') ? ' ✗' : ''}</text>`);
  });
  parts.push(`<text x="10" y="${height - 10}" fill="#666">${esc('green: correct consumers · red: wrong totals (no dedup) · blue: producers (relay vs direct)')}</text>`);
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}
