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
  /** Median of the per-round ratios to the baseline's run of the same round (raw kafkajs for consumers, direct kafkajs for producers). */
  ratio: number | null;
  /** Per-round ratios to the baseline (runs alternate, so run i of each variant are neighbours in time). */
  ratios?: number[];
  correctness: string;
  /** Messages per timed run (consumers: the topic the warm-up sized). */
  messages?: number;
  /** Median seconds per timed run. */
  seconds?: number;
  scaling?: { mode: 'event' | 'batch'; concurrency: number; processes: number };
  /** The client comparison (bench/variants.ts inChild): which client, what is compared, which Node ran it. */
  comparison?: { client: 'kafkajs' | 'platformatic'; what: string; node: string };
}

export interface BenchReport {
  date: string;
  machine: { cpus: number; cpuModel: string; memoryGiB: number; node: string; platform: string; kafka: string; postgres: string; loadavg?: { start: number[]; end: number[] } };
  settings: Record<string, number | string>;
  results: VariantResult[];
  /** Idle-to-delivered latency, relay (LISTEN / poll only) vs kafkajs direct (bench/latency.ts). */
  latency?: LatencyReport;
  /** Writer transactions with and without the lane lock and NOTIFY (bench/writers.ts). */
  writers?: WritersReport;
  /** Draining a full outbox table: delete vs mark published, xmin pinned (bench/outbox-table.ts). */
  table?: TableReport;
}

export function summarise(name: string, group: 'consume' | 'produce', runs: Measurement[], extra: Pick<VariantResult, 'messages' | 'scaling' | 'comparison'> = {}): VariantResult {
  const rates = runs.map((r) => r.items / Math.max(r.seconds, 0.001));
  const correct = runs.map((r) => r.correct);
  let correctness = 'n/a';
  if (correct.every((c) => c === true)) correctness = 'exact';
  else if (correct.some((c) => c === false)) {
    const errors = runs.map((r) => r.error ?? 0);
    correctness = `WRONG: totals ${(median(errors) * 100 >= 0 ? '+' : '')}${(median(errors) * 100).toFixed(1)} %`;
  }
  return { name, group, runs, median: median(rates), min: Math.min(...rates), max: Math.max(...rates), ratio: null, correctness, ...extra, seconds: median(runs.map((r) => r.seconds)) };
}

const rate = (m: Measurement): number => m.items / Math.max(m.seconds, 0.001);

/** Per-round ratios of `r` to `base` (run i against run i). */
export function roundRatios(r: VariantResult, base: VariantResult): number[] {
  return r.runs.map((m, i) => (base.runs[i] === undefined ? Number.NaN : rate(m) / rate(base.runs[i] as Measurement))).filter(Number.isFinite);
}

export function withRatios(results: VariantResult[]): VariantResult[] {
  const base = { consume: results.find((r) => r.group === 'consume'), produce: results.find((r) => r.group === 'produce' && r.name.startsWith('kafkajs')) };
  return results.map((r) => {
    const b = base[r.group];
    if (b === undefined) return { ...r, ratio: null };
    const ratios = roundRatios(r, b);
    return { ...r, ratios, ratio: median(ratios) };
  });
}

const fmtRatios = (ratios: number[] | undefined, m: number | null): string => {
  if (m === null || ratios === undefined || ratios.length === 0) return '';
  const f = (x: number): string => x.toFixed(x < 0.1 ? 3 : 2);
  return `${f(m)}× (${f(Math.min(...ratios))}–${f(Math.max(...ratios))})`;
};

const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');

export function markdown(report: BenchReport): string {
  const m = report.machine;
  const lines = [
    `Machine: ${m.cpus} × ${m.cpuModel}, ${m.memoryGiB} GiB RAM, ${m.platform}, Node ${m.node}; Kafka ${m.kafka}, Postgres ${m.postgres}.`,
    `Settings: ${Object.entries(report.settings).map(([k, v]) => `${k}=${v}`).join(', ')}.`,
  ];
  if (m.loadavg !== undefined) {
    const l = (xs: number[]): string => xs.map((x) => x.toFixed(2)).join(' / ');
    lines.push(`Load average (1 / 5 / 15 min) at start ${l(m.loadavg.start)}, at end ${l(m.loadavg.end)}: on a shared machine, other work competes for the ${m.cpus} CPUs, so ratios of neighbouring runs carry over better than absolute rates.`);
  }
  const main = report.results.filter((r) => r.scaling === undefined && r.comparison === undefined);
  if (main.length > 0) {
    lines.push('', '| variant | messages per run | s per run (median) | events/s (median) | min–max | runs | vs baseline: median of per-round ratios (min–max) | totals |', '|---|---:|---:|---:|---:|---:|---:|---|');
    for (const r of main) {
      lines.push(`| ${r.name} | ${r.messages === undefined ? '' : fmt(r.messages)} | ${r.seconds === undefined ? '' : r.seconds.toFixed(1)} | ${fmt(r.median)} | ${fmt(r.min)}–${fmt(r.max)} | ${r.runs.length} | ${fmtRatios(r.ratios, r.ratio)} | ${r.correctness} |`);
    }
    lines.push(
      '',
      'Consumers: messages (including retried copies) per second from the first message handled to the last; baseline = raw kafkajs. Each variant first runs once untimed on a topic that a warm-up sized so that a run lasts at least `--min-seconds` (a timed run that ends sooner is redone on a bigger topic); then the timed runs go round by round (every variant once per round), and each ratio compares a variant with the baseline run of the same round. ' +
        'Producers: rows published per second (relay: back-to-back claims of rows already committed, until the outbox is empty); baseline = kafkajs direct; their runs alternate.',
    );
    const naive = report.results.find((r) => r.name.startsWith('naive'));
    const perEvent = report.results.find((r) => r.name === 'effectively, per-event mode');
    if (naive !== undefined && perEvent !== undefined) {
      const ratios = roundRatios(perEvent, naive);
      lines.push('', `Per-event mode vs the naive pattern, per round: ${fmtRatios(ratios, median(ratios))}.`);
    }
  }
  const scaled = report.results.filter((r) => r.scaling !== undefined);
  if (scaled.length > 0) {
    lines.push('', '### Scaling: partitions consumed concurrently, and processes', '', '| mode | processes × partitions at once | messages per run | events/s (median) | min–max | vs 1 partition: median of per-round ratios (min–max) | totals |', '|---|---:|---:|---:|---:|---:|---|');
    for (const r of scaled) {
      const s = r.scaling as NonNullable<VariantResult['scaling']>;
      const one = scaled.find((x) => x.scaling?.mode === s.mode && x.scaling.concurrency === 1 && x.scaling.processes === 1);
      const ratios = one === undefined ? undefined : roundRatios(r, one);
      lines.push(`| ${s.mode === 'event' ? 'per-event' : 'batch 500'} | ${s.processes} × ${s.concurrency} | ${r.messages === undefined ? '' : fmt(r.messages)} | ${fmt(r.median)} | ${fmt(r.min)}–${fmt(r.max)} | ${ratios === undefined ? '' : fmtRatios(ratios, median(ratios))} | ${r.correctness} |`);
    }
    lines.push('', `Topic with ${report.settings.partitions} partitions; one process: \`partitionsConsumedConcurrently\` = n; several processes: one consumer group, timed from the moment every process has handled a message (the group has settled), counting only the messages handled after it.`);
  }
  const compared = report.results.filter((r) => r.comparison !== undefined);
  if (compared.length > 0) {
    const nodes = [...new Set(compared.map((r) => r.comparison?.node))].join(', ');
    lines.push('', `### Kafka clients side by side (both under Node ${nodes})`, '', '| variant | client | messages per run | events/s (median) | min–max | runs | vs kafkajs: median of per-round ratios (min–max) | totals |', '|---|---|---:|---:|---:|---:|---:|---|');
    for (const r of compared) {
      const c = r.comparison as NonNullable<VariantResult['comparison']>;
      const base = compared.find((x) => x.comparison?.what === c.what && x.comparison.client === 'kafkajs');
      const ratios = base === undefined || base === r ? undefined : roundRatios(r, base);
      lines.push(`| ${c.what} | ${c.client} | ${r.messages === undefined ? '' : fmt(r.messages)} | ${fmt(r.median)} | ${fmt(r.min)}–${fmt(r.max)} | ${r.runs.length} | ${ratios === undefined ? '' : fmtRatios(ratios, median(ratios))} | ${r.correctness} |`);
    }
    lines.push(
      '',
      `Every run of this table in a child process under Node ${nodes} (the other tables: Node ${m.node}), on the same broker, schema and topics as the rest; the two clients of a variant run one after the other in every round, consumers on the same topic. kafkajs runs under that Node too, so the ratio is the clients' difference alone.`,
    );
  }
  for (const section of [report.latency && latencyMarkdown(report.latency), report.writers && writersMarkdown(report.writers), report.table && tableMarkdown(report.table)]) {
    if (section) lines.push('', section.trimEnd());
  }
  return lines.join('\n') + '\n';
}

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** One line chart (hand-written SVG elements) placed at (x, y): one polyline per series over shared x labels. */
export function lineChart(o: { x: number; y: number; width: number; height: number; title: string; yLabel: string; xLabels: string[]; series: Array<{ name: string; colour: string; values: Array<number | null> }> }): string[] {
  const values = o.series.flatMap((s) => s.values.filter((v): v is number => v !== null && Number.isFinite(v)));
  const top = Math.max(1, ...values) * 1.1;
  const left = o.x + 50;
  const plotW = o.width - 60;
  const plotTop = o.y + 30;
  const plotH = o.height - 60;
  const px = (i: number): number => left + (o.xLabels.length === 1 ? plotW / 2 : (i / (o.xLabels.length - 1)) * plotW);
  const py = (v: number): number => plotTop + plotH - (v / top) * plotH;
  const parts = [`<text x="${o.x}" y="${o.y + 14}" font-size="13" font-weight="bold">${esc(o.title)}</text>`];
  parts.push(`<line x1="${left}" x2="${left}" y1="${plotTop}" y2="${plotTop + plotH}" stroke="#444"/>`, `<line x1="${left}" x2="${left + plotW}" y1="${plotTop + plotH}" y2="${plotTop + plotH}" stroke="#444"/>`);
  for (let k = 0; k <= 4; k++) {
    const v = (top * k) / 4;
    parts.push(`<line x1="${left}" x2="${left + plotW}" y1="${py(v).toFixed(1)}" y2="${py(v).toFixed(1)}" stroke="#eee"/>`, `<text x="${left - 4}" y="${(py(v) + 4).toFixed(1)}" text-anchor="end" fill="#555">${v.toFixed(v < 10 ? 1 : 0)}</text>`);
  }
  o.xLabels.forEach((l, i) => parts.push(`<text x="${px(i).toFixed(1)}" y="${plotTop + plotH + 16}" text-anchor="middle" fill="#555">${esc(l)}</text>`));
  parts.push(`<text x="${o.x}" y="${plotTop - 6}" fill="#555">${esc(o.yLabel)}</text>`);
  o.series.forEach((s, k) => {
    const pts = s.values.map((v, i) => (v === null || !Number.isFinite(v) ? null : `${px(i).toFixed(1)},${py(v).toFixed(1)}`));
    const line = pts.filter((p): p is string => p !== null);
    if (line.length > 1) parts.push(`<polyline fill="none" stroke="${s.colour}" stroke-width="2" points="${line.join(' ')}"/>`);
    for (const p of line) parts.push(`<circle cx="${p.split(',')[0]}" cy="${p.split(',')[1]}" r="3" fill="${s.colour}"/>`);
    parts.push(`<rect x="${left + plotW - 170}" y="${plotTop + 4 + k * 16}" width="10" height="10" fill="${s.colour}"/>`, `<text x="${left + plotW - 155}" y="${plotTop + 13 + k * 16}">${esc(s.name)}</text>`);
  });
  return parts;
}

/** Bar chart of median events/s with min–max whiskers, one row per variant; below it the scaling curve. */
export function svg(report: BenchReport): string {
  const rows = report.results.filter((r) => r.scaling === undefined && r.comparison === undefined);
  const scaled = report.results.filter((r) => r.scaling !== undefined);
  const left = 330;
  const width = 900;
  const barArea = width - left - 90;
  const rowH = 28;
  const top = 40;
  const barsH = top + rows.length * rowH + 30;
  const chartH = scaled.length > 0 ? 280 : 0;
  const height = barsH + chartH;
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
  parts.push(`<text x="10" y="${barsH - 10}" fill="#666">${esc('green: correct consumers · red: wrong totals (no dedup) · blue: producers (relay vs direct)')}</text>`);
  if (scaled.length > 0) {
    const points = [...new Map(scaled.map((r) => { const s = r.scaling as NonNullable<VariantResult['scaling']>; return [`${s.processes}x${s.concurrency}`, s] as const; })).values()];
    const labels = points.map((p) => (p.processes === 1 ? `${p.concurrency}` : `${p.processes} proc × ${p.concurrency}`));
    const series = (['batch', 'event'] as const).map((mode) => {
      const one = scaled.find((r) => r.scaling?.mode === mode && r.scaling.concurrency === 1 && r.scaling.processes === 1);
      return {
        name: mode === 'batch' ? 'batch 500' : 'per-event',
        colour: mode === 'batch' ? '#3c9d5d' : '#e08a1e',
        values: points.map((p) => {
          const r = scaled.find((x) => x.scaling?.mode === mode && x.scaling.concurrency === p.concurrency && x.scaling.processes === p.processes);
          if (r === undefined || one === undefined) return null;
          return median(roundRatios(r, one));
        }),
      };
    });
    parts.push(...lineChart({ x: 10, y: barsH, width: width - 20, height: chartH - 10, title: `Scaling: speed-up vs 1 partition at a time (median of per-round ratios), topic with ${report.settings.partitions} partitions`, yLabel: '× 1 partition', xLabels: labels.map((l) => (l.includes('proc') ? l : `${l} at once`)), series }));
  }
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}
