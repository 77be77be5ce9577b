/**
 * The alert rules and the dashboard name only metrics the library registers; every alert has
 * a runbook paragraph in the README, and every metric is documented there.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { Registry } from 'prom-client';
import { parse } from 'yaml';
import { PrometheusMetrics, type MetricDefinition, type Metrics } from '@effectively/core';
import { IDEMPOTENCY_METRICS } from '@effectively/http';
import { CONSUMER_METRICS, consumerPrometheusMetrics } from '@effectively/kafka';
import { RELAY_METRICS, relayPrometheusMetrics } from '@effectively/relay';

const root = path.join(__dirname, '..', '..');
const read = (file: string): string => readFileSync(path.join(root, file), 'utf8');

/**
 * Builds each package's registry through its factory, reports every definition once, and reads
 * the names back: as registered (`base`) and as queried (`series`, with histograms' suffixes).
 */
async function registered(): Promise<{ base: Set<string>; series: Set<string> }> {
  const factories: Array<[Readonly<Record<string, MetricDefinition>>, (registry: Registry) => Metrics]> = [
    [CONSUMER_METRICS, consumerPrometheusMetrics],
    [RELAY_METRICS, relayPrometheusMetrics],
    [IDEMPOTENCY_METRICS, (registry) => new PrometheusMetrics(registry, IDEMPOTENCY_METRICS)],
  ];
  const base = new Set<string>();
  const series = new Set<string>();
  for (const [definitions, factory] of factories) {
    const registry = new Registry();
    const metrics = factory(registry);
    for (const [name, d] of Object.entries(definitions)) {
      const labels = Object.fromEntries(d.labelNames.map((l) => [l, 'x']));
      if (d.type === 'counter') metrics.increment(name, labels, 0);
      else if (d.type === 'histogram') metrics.observe(name, 0, labels);
      else metrics.set(name, 0, labels);
    }
    for (const m of await registry.getMetricsAsJSON()) {
      base.add(m.name);
      series.add(m.name);
      if (String(m.type) === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) series.add(m.name + suffix);
    }
  }
  return { base, series };
}

const metricNamesIn = (expr: string): string[] => [...new Set(expr.match(/\beffectively_[a-zA-Z0-9_]+/g) ?? [])];

interface Rule {
  alert?: string;
  record?: string;
  expr: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

describe('ops/prometheus and ops/grafana', () => {
  const rules = (parse(read('ops/prometheus/effectively.rules.yml')) as { groups: Array<{ name: string; rules: Rule[] }> }).groups.flatMap((g) => g.rules);
  const dashboard = JSON.parse(read('ops/grafana/effectively.json')) as { panels: Array<{ title: string; type: string; targets?: Array<{ expr: string }> }>; templating: { list: Array<{ query?: unknown }> } };
  const readme = read('README.md');

  it('every metric an alert rule queries is registered by the library', async () => {
    const known = (await registered()).series;
    expect(rules.length).toBeGreaterThanOrEqual(7);
    for (const rule of rules) {
      const used = metricNamesIn(rule.expr);
      expect({ rule: rule.alert, used: used.length > 0 }).toEqual({ rule: rule.alert, used: true });
      expect({ rule: rule.alert, unknown: used.filter((n) => !known.has(n)) }).toEqual({ rule: rule.alert, unknown: [] });
    }
  });

  it('every panel query and variable of the dashboard names only registered metrics', async () => {
    const known = (await registered()).series;
    const queries = dashboard.panels.filter((p) => p.type !== 'row').flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, expr: t.expr })));
    for (const v of dashboard.templating.list) {
      const q = v.query as { query?: string } | string | undefined;
      const text = typeof q === 'string' ? q : q?.query;
      if (text !== undefined) queries.push({ panel: 'variables', expr: text });
    }
    expect(queries.length).toBeGreaterThan(20);
    for (const q of queries) {
      const used = metricNamesIn(q.expr);
      if (q.panel !== 'variables' || q.expr.includes('label_values')) expect({ ...q, used: used.length > 0 }).toEqual({ ...q, used: true });
      expect({ ...q, unknown: used.filter((n) => !known.has(n)) }).toEqual({ ...q, unknown: [] });
    }
  });

  it('every alert has a severity, a summary, a description and a runbook paragraph in the README', () => {
    for (const rule of rules.filter((r) => r.alert !== undefined)) {
      expect({ alert: rule.alert, severity: rule.labels?.severity }).toEqual({ alert: rule.alert, severity: expect.stringMatching(/^(warning|critical)$/) });
      expect(rule.annotations?.summary).toBeTruthy();
      expect(rule.annotations?.description).toBeTruthy();
      expect({ alert: rule.alert, inReadme: readme.includes(`**${rule.alert}**`) }).toEqual({ alert: rule.alert, inReadme: true });
    }
  });

  it('every metric the library registers is named in the README', async () => {
    const { base } = await registered();
    expect(base.size).toBeGreaterThan(30);
    const undocumented = [...base].filter((n) => !readme.includes(`\`${n}\``));
    expect(undocumented).toEqual([]);
  });
});
