import { Counter, Histogram, Gauge, type Registry } from 'prom-client';

/** Labels attached to a metric sample. */
export type MetricLabels = Record<string, string | number>;

/**
 * The small metrics seam every component reports through. Use {@link PrometheusMetrics} for
 * prom-client, {@link NoopMetrics} to discard, or implement it for your own system.
 */
export interface Metrics {
  /** Adds `value` (default 1) to the counter `name`. */
  increment(name: string, labels?: MetricLabels, value?: number): void;
  /** Records one observation (durations in seconds, sizes in items). */
  observe(name: string, value: number, labels?: MetricLabels): void;
  /** Sets the gauge `name`. */
  set(name: string, value: number, labels?: MetricLabels): void;
}

/** Discards every sample. */
export class NoopMetrics implements Metrics {
  increment(): void {}
  observe(): void {}
  set(): void {}
}

/** Describes one metric for {@link PrometheusMetrics}. */
export interface MetricDefinition {
  type: 'counter' | 'histogram' | 'gauge';
  help: string;
  labelNames: readonly string[];
  buckets?: number[];
}

/**
 * prom-client implementation. Metrics are created on first use from `definitions` (names are
 * prefixed with `prefix`, default `effectively_`) in the given registry.
 */
export class PrometheusMetrics implements Metrics {
  private readonly counters = new Map<string, Counter>();
  private readonly histograms = new Map<string, Histogram>();
  private readonly gauges = new Map<string, Gauge>();

  constructor(
    private readonly registry: Registry,
    private readonly definitions: Readonly<Record<string, MetricDefinition>>,
    private readonly prefix = 'effectively_',
  ) {}

  private definition(name: string, type: MetricDefinition['type']): MetricDefinition {
    const d = this.definitions[name];
    if (d === undefined || d.type !== type) throw new Error(`metric ${name} is not defined as a ${type}`);
    return d;
  }

  increment(name: string, labels: MetricLabels = {}, value = 1): void {
    let c = this.counters.get(name);
    if (c === undefined) {
      const d = this.definition(name, 'counter');
      c = new Counter({ name: this.prefix + name, help: d.help, labelNames: d.labelNames, registers: [this.registry] });
      this.counters.set(name, c);
    }
    c.inc(labels, value);
  }

  observe(name: string, value: number, labels: MetricLabels = {}): void {
    let h = this.histograms.get(name);
    if (h === undefined) {
      const d = this.definition(name, 'histogram');
      h = new Histogram({ name: this.prefix + name, help: d.help, labelNames: d.labelNames, registers: [this.registry], ...(d.buckets ? { buckets: d.buckets } : {}) });
      this.histograms.set(name, h);
    }
    h.observe(labels, value);
  }

  set(name: string, value: number, labels: MetricLabels = {}): void {
    let g = this.gauges.get(name);
    if (g === undefined) {
      const d = this.definition(name, 'gauge');
      g = new Gauge({ name: this.prefix + name, help: d.help, labelNames: d.labelNames, registers: [this.registry] });
      this.gauges.set(name, g);
    }
    g.set(labels, value);
  }
}
