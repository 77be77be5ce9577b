import { createTestSchema, createTopics, testKafka, testServices, uniqueName, type TestSchema } from '@effectively/testkit';
import { toEnv, type PipelineEnv } from '../src/env';
import type { GroundTruth } from '../src/generator';
import { createAdSpendTables, loadGroundTruth, storedTotals } from '../src/store';
import { startPart, type PartProcess } from '../src/supervise';
import { waitForVerdict } from '../src/verify';

/**
 * The whole pipeline in separate processes: generator (with retried events) → two aggregators
 * (one SIGKILLed after its DB commit, before its offset commit, then restarted) → outbox →
 * relay → notifier. Totals must be exact and every budget alert delivered exactly once.
 */
describe('ad-spend pipeline', () => {
  const { brokers, databaseUrl } = testServices();
  const children: PartProcess[] = [];
  let ts: TestSchema;

  afterAll(async () => {
    await Promise.all(children.map((c) => c.stop(5_000)));
    await ts?.drop();
  });

  it('exact totals and exactly-once alerts with duplicates and a SIGKILLed aggregator', async () => {
    ts = await createTestSchema(databaseUrl, 'ad_spend_test', { max: 3 });
    await createAdSpendTables(ts.db, ts.schema);
    const [spendTopic, alertsTopic] = await createTopics(testKafka(brokers), [
      { prefix: 'ad_spend_t', partitions: 4 },
      { prefix: 'ad_alerts_t', partitions: 1 },
    ]);
    const pipeline: PipelineEnv = {
      brokers,
      databaseUrl,
      schema: ts.schema,
      spendTopic: spendTopic as string,
      alertsTopic: alertsTopic as string,
      aggregatorGroup: uniqueName('agg'),
      notifierGroup: uniqueName('notify'),
    };
    const env = { ...toEnv(pipeline), LOG_LEVEL: 'error', SESSION_TIMEOUT_MS: '6000', BATCH_SIZE: '50' };
    const start = (part: PartProcess['part'], name: string, extra: Record<string, string> = {}): PartProcess => {
      const p = startPart(part, name, { ...env, ...extra });
      children.push(p);
      return p;
    };

    const doomed = start('aggregator', 'aggregator-1', { CRASH_AT: 'after-db-commit', CRASH_ON_CHUNK: '3' });
    await doomed.waitFor('started');
    const others = [start('aggregator', 'aggregator-2'), start('relay', 'relay'), start('notifier', 'notifier')];
    await Promise.all(others.map((p) => p.waitFor('started')));

    const generator = start('generator', 'generator', { EVENTS: '2000', CAMPAIGNS: '8', DUPLICATE_RATE: '0.3', SEED: '7', ROUND_DELAY_MS: '300' });
    await generator.waitFor('done');
    expect(await doomed.exitWithin(60_000)).toBe('SIGKILL');
    expect(doomed.reports.some((r) => r.kind === 'crashing')).toBe(true);
    start('aggregator', 'aggregator-1b');

    const truth = (await loadGroundTruth(ts.db, ts.schema)) as GroundTruth;
    expect(truth.duplicates).toBeGreaterThan(300);
    expect(truth.alerts.length).toBeGreaterThan(0);
    let verdict = await waitForVerdict(ts.db, ts.schema, truth, pipeline.aggregatorGroup, 120_000);
    // Late re-deliveries (if any) must not add a second alert.
    await new Promise((r) => setTimeout(r, 1_000));
    verdict = await waitForVerdict(ts.db, ts.schema, truth, pipeline.aggregatorGroup, 1);
    expect(await storedTotals(ts.db, ts.schema)).toEqual(truth.totals);
    expect(verdict.processed).toBe(truth.uniqueEvents);
    expect(verdict.alertsMissing).toEqual([]);
    expect(verdict.alertsDoubled).toEqual([]);
    expect(verdict.alertsUnexpected).toEqual([]);
    expect(verdict.alertsDelivered).toBe(truth.alerts.length);
    expect(verdict.ok).toBe(true);
    // Bounded by the waits above (each returns as soon as its condition holds); this only stops a
    // hung run. Five processes start under tsx: on a loaded 2-core machine that alone took > 90 s.
  }, 360_000);
});
