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
 * prom-client implementation. Every metric in `definitions` is registered in `registry` at
 * construction (names prefixed with `prefix`, default `effectively_`), so each family is listed
 * from the first scrape and a counter without labels reads 0 from the start; the components set
 * their counters' known label sets to 0 as soon as they know them (e.g. a partition when it is
 * assigned), so `rate()` and `increase()` see the first event. A metric of the same name and type
 * already in `registry` (another component or instance sharing it) is reused.
 */
export class PrometheusMetrics implements Metrics {
  private readonly counters = new Map<string, Counter>();
  private readonly histograms = new Map<string, Histogram>();
  private readonly gauges = new Map<string, Gauge>();

  constructor(
    private readonly registry: Registry,
    definitions: Readonly<Record<string, MetricDefinition>>,
    private readonly prefix = 'effectively_',
  ) {
    for (const [name, d] of Object.entries(definitions)) {
      if (d.type === 'counter') this.counters.set(name, this.register(name, d, Counter, (c) => new Counter(c)));
      else if (d.type === 'histogram') this.histograms.set(name, this.register(name, d, Histogram, (c) => new Histogram({ ...c, ...(d.buckets ? { buckets: d.buckets } : {}) })));
      else this.gauges.set(name, this.register(name, d, Gauge, (c) => new Gauge(c)));
    }
  }

  private register<M extends Counter | Histogram | Gauge>(
    name: string,
    d: MetricDefinition,
    kind: abstract new (...args: never[]) => M,
    create: (config: { name: string; help: string; labelNames: readonly string[]; registers: Registry[] }) => M,
  ): M {
    const existing = this.registry.getSingleMetric(this.prefix + name);
    if (existing instanceof kind) return existing;
    if (existing !== undefined) throw new Error(`metric ${this.prefix + name} is already registered with another type`);
    return create({ name: this.prefix + name, help: d.help, labelNames: d.labelNames, registers: [this.registry] });
  }

  private get<M>(map: Map<string, M>, name: string, type: MetricDefinition['type']): M {
    const m = map.get(name);
    if (m === undefined) throw new Error(`metric ${name} is not defined as a ${type}`);
    return m;
  }

  increment(name: string, labels: MetricLabels = {}, value = 1): void {
    this.get(this.counters, name, 'counter').inc(labels, value);
  }

  observe(name: string, value: number, labels: MetricLabels = {}): void {
    this.get(this.histograms, name, 'histogram').observe(labels, value);
  }

  set(name: string, value: number, labels: MetricLabels = {}): void {
    this.get(this.gauges, name, 'gauge').set(labels, value);
  }
}
