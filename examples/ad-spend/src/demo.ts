// npm run demo -- [--events 10000] [--duplicate-rate 0.2] [--partitions 6] [--campaigns 12]
//                 [--chaos] [--chaos-kills 4] [--seed 42] [--timeout 180] [--keep]
// Starts Kafka and Postgres through the testkit, runs the generator, two aggregators, the relay
// and the notifier as child processes, optionally SIGKILLs aggregators and the relay at random
// moments, then compares the database with the ground truth. Exits 1 if any figure disagrees.
import { parseArgs } from 'node:util';
import { createTopics, createTestSchema, seededRandom, startKafka, startPostgres, testKafka, uniqueName, type RunningKafka, type RunningPostgres, type TestSchema } from '@effectively/testkit';
import { toEnv, type PipelineEnv } from './env';
import type { GroundTruth } from './generator';
import { createAdSpendTables, loadGroundTruth, pendingOutbox, processedCount, deliveredAlerts } from './store';
import { startPart, type Part, type PartProcess } from './supervise';
import { verify, waitForVerdict, type Verdict } from './verify';

const { values: args } = parseArgs({
  options: {
    events: { type: 'string', default: '10000' },
    'duplicate-rate': { type: 'string', default: '0.2' },
    partitions: { type: 'string', default: '6' },
    campaigns: { type: 'string', default: '12' },
    chaos: { type: 'boolean', default: false },
    'chaos-kills': { type: 'string', default: '4' },
    seed: { type: 'string', default: '42' },
    timeout: { type: 'string', default: '180' },
    keep: { type: 'boolean', default: false },
  },
});

const say = (line: string): void => void process.stderr.write(`[demo] ${line}\n`);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const usd = (micros: number): string => `$${(micros / 1_000_000).toFixed(6)}`;

interface Run {
  kafka?: RunningKafka;
  postgres?: RunningPostgres;
  schema?: TestSchema;
  children: PartProcess[];
}

async function main(run: Run): Promise<number> {
  const events = Number(args.events);
  const partitions = Number(args.partitions);
  const random = seededRandom(Number(args.seed) + 1);
  say('starting Kafka and Postgres (env → testcontainers → local JVM broker / embedded Postgres) …');
  [run.kafka, run.postgres] = await Promise.all([startKafka(), startPostgres()]);
  say(`Kafka ${run.kafka.brokers.join(',')} (${run.kafka.source}, ${run.kafka.startupMs} ms); Postgres (${run.postgres.source}, ${run.postgres.startupMs} ms)`);
  run.schema = await createTestSchema(run.postgres.url, 'ad_spend', { max: 4 });
  await createAdSpendTables(run.schema.db, run.schema.schema);
  const [spendTopic, alertsTopic] = await createTopics(testKafka(run.kafka.brokers), [
    { prefix: 'ad-spend', partitions },
    { prefix: 'ad-spend-alerts', partitions: 2 },
  ]);
  const pipeline: PipelineEnv = {
    brokers: run.kafka.brokers,
    databaseUrl: run.postgres.url,
    schema: run.schema.schema,
    spendTopic: spendTopic as string,
    alertsTopic: alertsTopic as string,
    aggregatorGroup: uniqueName('aggregator'),
    notifierGroup: uniqueName('notifier'),
  };
  say(`schema ${pipeline.schema}; topics ${pipeline.spendTopic} (${partitions} partitions), ${pipeline.alertsTopic}`);
  const env = { ...toEnv(pipeline), LOG_LEVEL: process.env.LOG_LEVEL ?? 'error', SESSION_TIMEOUT_MS: '6000' };
  const incarnations: Record<string, number> = {};
  const launch = (part: Part, slot: string, extra: Record<string, string> = {}): PartProcess => {
    incarnations[slot] = (incarnations[slot] ?? 0) + 1;
    const p = startPart(part, `${slot}#${incarnations[slot]}`, { ...env, ...extra });
    run.children.push(p);
    return p;
  };
  const live: Record<string, PartProcess> = {
    'aggregator-1': launch('aggregator', 'aggregator-1'),
    'aggregator-2': launch('aggregator', 'aggregator-2'),
    relay: launch('relay', 'relay'),
    notifier: launch('notifier', 'notifier'),
  };
  await Promise.all(Object.values(live).map((p) => p.waitFor('started', 60_000)));
  say('aggregator ×2, relay, notifier started');

  const generator = launch('generator', 'generator', { EVENTS: String(events), DUPLICATE_RATE: String(args['duplicate-rate']), CAMPAIGNS: String(args.campaigns), SEED: String(args.seed) });
  await generator.waitFor('truth', 60_000);
  const started = Date.now();
  const truth = (await loadGroundTruth(run.schema.db, pipeline.schema)) as GroundTruth;
  say(`generator: ${truth.uniqueEvents} unique events, ${truth.duplicates} retried copies (${truth.messages} messages), ${truth.alerts.length} budget crossings to alert`);

  // Chaos: SIGKILL an aggregator or the relay at random moments while work remains; restart it.
  let crashes = 0;
  const maxKills = args.chaos ? Number(args['chaos-kills']) : 0;
  let done = false;
  const offset = Math.floor(random() * 3);
  const chaos = (async () => {
    while (!done && crashes < maxKills) {
      await sleep(1_000 + random() * 2_000);
      if (done) break;
      const slots = ['aggregator-1', 'aggregator-2', 'relay'];
      // Round-robin from a random start, so both aggregators and the relay get killed.
      const slot = slots[(offset + crashes) % slots.length] as string;
      const victim = live[slot] as PartProcess;
      if (!victim.alive()) continue;
      await victim.kill();
      crashes++;
      say(`chaos: SIGKILL ${victim.name} (${crashes}/${maxKills})`);
      await sleep(300 + random() * 1_200);
      const next = launch(victim.part, slot);
      live[slot] = next;
      next.waitFor('started', 60_000).catch(() => undefined);
    }
  })();

  let convergedAt = 0;
  const progress = setInterval(() => {
    const db = run.schema?.db;
    if (db === undefined) return;
    void Promise.all([processedCount(db, pipeline.schema, pipeline.aggregatorGroup), deliveredAlerts(db, pipeline.schema), pendingOutbox(db, pipeline.schema)])
      .then(([processed, delivered, pending]) => {
        if (processed === truth.uniqueEvents && convergedAt === 0) convergedAt = Date.now();
        const sent = generator.reports.filter((r) => r.kind === 'sent').at(-1)?.data.sent ?? 0;
        say(`sent ${String(sent)}/${truth.messages}  aggregated ${processed}/${truth.uniqueEvents}  outbox pending ${pending}  alerts ${delivered.size}/${truth.alerts.length}  crashes ${crashes}`);
      })
      .catch(() => undefined);
  }, 1_000);
  let verdict: Verdict;
  try {
    await generator.waitFor('done', Number(args.timeout) * 1_000);
    verdict = await waitForVerdict(run.schema.db, pipeline.schema, truth, pipeline.aggregatorGroup, Number(args.timeout) * 1_000);
    if (convergedAt === 0) convergedAt = Date.now();
    done = true;
    await chaos;
    // Give a relay that re-published after a crash time to deliver a (deduplicated) copy, then look again.
    await sleep(2_000);
    verdict = await verify(run.schema.db, pipeline.schema, truth, pipeline.aggregatorGroup);
  } finally {
    done = true;
    clearInterval(progress);
  }
  const aggregators = run.children.filter((c) => c.part === 'aggregator');
  await Promise.all(run.children.map((c) => c.stop()));
  const sum = (ps: PartProcess[], key: string): number => ps.reduce((a, p) => a + Number(p.lastStats[key] ?? 0), 0);
  const skipped = sum(aggregators, 'duplicates');
  const notifiers = run.children.filter((c) => c.part === 'notifier');
  const relays = run.children.filter((c) => c.part === 'relay');
  const seconds = (convergedAt - started) / 1_000;

  const ok = (good: boolean): string => (good ? 'ok' : '**MISMATCH**');
  const out: string[] = [];
  out.push('', '| figure | expected | actual | |', '|---|---:|---:|---|');
  out.push(`| events sent (messages) | ${truth.messages} | ${truth.messages} | |`);
  out.push(`| unique events | ${truth.uniqueEvents} | ${verdict.processed} claimed | ${ok(verdict.processed === truth.uniqueEvents)} |`);
  out.push(`| retried copies (duplicates) | ${truth.duplicates} | ${skipped} skipped by the aggregators¹ | |`);
  for (const c of verdict.campaigns) out.push(`| total ${c.campaign} | ${usd(c.expected)} | ${usd(c.stored)} | ${ok(c.wrongDays === 0)} |`);
  out.push(`| budget alerts (exactly once) | ${verdict.alertsExpected} | ${verdict.alertsDelivered} | ${ok(verdict.alertsDoubled.length + verdict.alertsMissing.length + verdict.alertsUnexpected.length === 0)} |`);
  out.push(`| alerts published by relay(s)² | | ${sum(relays, 'published')} | |`);
  out.push(`| alert duplicates skipped by notifier | | ${sum(notifiers, 'duplicates')} | |`);
  out.push(`| crashes injected (SIGKILL) | ${maxKills > 0 ? `≤ ${maxKills}` : '–'} | ${crashes} | |`);
  out.push(`| throughput | | ${Math.round(truth.uniqueEvents / Math.max(seconds, 0.001))} unique events/s (${seconds.toFixed(1)} s, incl. generator pauses) | |`);
  out.push('', '¹ from the last stats each process printed; a SIGKILLed process loses its last half second, and events redelivered after a crash count as skipped too.');
  out.push('² counts publishes, including re-publishes after a relay crash (at-least-once); the notifier deduplicates them.', '');
  process.stdout.write(out.join('\n'));
  if (!verdict.ok) {
    say(`MISMATCH: missing alerts ${verdict.alertsMissing.join(',') || '-'}; doubled ${verdict.alertsDoubled.join(',') || '-'}; unexpected ${verdict.alertsUnexpected.join(',') || '-'}`);
    return 1;
  }
  say('all figures agree');
  return 0;
}

async function cleanup(run: Run): Promise<void> {
  await Promise.all(run.children.map((c) => c.stop(5_000).catch(() => undefined)));
  if (run.schema !== undefined) {
    if (args.keep) {
      say(`kept schema ${run.schema.schema}`);
      await run.schema.database.destroy();
    } else await run.schema.drop().catch(() => undefined);
  }
  await run.kafka?.stop().catch(() => undefined);
  await run.postgres?.stop().catch(() => undefined);
}

const run: Run = { children: [] };
let exiting = false;
const finish = (code: number): void => {
  if (exiting) return;
  exiting = true;
  void cleanup(run).finally(() => process.exit(code));
};
process.once('SIGINT', () => finish(130));
process.once('SIGTERM', () => finish(143));
main(run).then(finish, (error: unknown) => {
  say(`failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
  finish(1);
});
