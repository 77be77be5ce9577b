import { createTestSchema, createTopics, produceMessages, seededRandom, testClient, testKafka, testServices, uniqueName } from '@effectively/testkit';
import { startConsumerChild } from './support/child';
import { count, createLedger, makeEvents, model, sameTotals, toMessages, totals, waitFor } from './support/ledger';

/**
 * A consumer process is SIGKILLed at each dangerous point; a restarted consumer must converge
 * to exactly the model (no lost effect, no double effect).
 */
describe(`SIGKILL at the crash points (${testClient()})`, () => {
  const { brokers, databaseUrl } = testServices();
  const kafka = testKafka(brokers);

  // Per-event mode: at after-db-commit the next event's claim, sent with that COMMIT, is open on the killed connection.
  it.each([
    ['batch', 'before-db-commit'],
    ['batch', 'after-db-commit'],
    ['batch', 'after-offset-commit'],
    ['event', 'before-db-commit'],
    ['event', 'after-db-commit'],
    ['event', 'after-offset-commit'],
  ] as const)('%s mode, killed %s, restarted, converges to the model', async (mode, point) => {
    // Each case gets its own schema: its own ledger and processed_events.
    const own = await createTestSchema(databaseUrl, `crash_${mode}_${point}`);
    try {
      await createLedger(own.db, own.schema);
      const [topic] = await createTopics(kafka, [{ prefix: `crash_${point}`, partitions: 2 }]);
      const random = seededRandom(point.length);
      const events = makeEvents(400, random);
      await produceMessages(kafka, topic as string, toMessages(events), { duplicateRate: 0.3, maxCopies: 3, random });
      const env = { BROKERS: brokers.join(','), DATABASE_URL: databaseUrl, SCHEMA: own.schema, TOPIC: topic as string, GROUP: uniqueName('g'), BATCH_SIZE: '40', MODE: mode };
      // A chunk is one event in per-event mode: crash well inside the first fetched batch.
      const chunk = mode === 'event' ? '30' : '3';
      const doomed = startConsumerChild({ ...env, CRASH_AT: point, CRASH_ON_CHUNK: chunk });
      expect(await doomed.exitWithin(60_000, `crash at ${point} of chunk ${chunk}`)).toBe('SIGKILL');
      expect(doomed.lines).toContain(`crashing at ${point}`);
      const afterCrash = await count(own.db, own.schema, 'processed_events');

      const survivor = startConsumerChild(env);
      try {
        const expected = model(events);
        const got = await waitFor(() => totals(own.db, own.schema), (t) => sameTotals(t, expected), 90_000);
        expect(got).toEqual(expected);
        expect(await count(own.db, own.schema, 'processed_events')).toBe(events.length);
        expect(afterCrash).toBeLessThan(events.length);
      } finally {
        expect(await survivor.stop()).toBe('0');
      }
    } finally {
      await own.drop();
    }
    // The waits inside are bounded (the survivor's convergence 90 s, its stop 30 s, then SIGKILL)
    // and add up to more than jest's 120 s default: each fails with its own message first.
  }, 240_000);

  it('offsets never move backwards across a crash and restart', async () => {
    const own = await createTestSchema(databaseUrl, 'mono');
    try {
      await createLedger(own.db, own.schema);
      const [topic] = await createTopics(kafka, [{ prefix: 'mono', partitions: 1 }]);
      const events = makeEvents(300, seededRandom(11));
      await produceMessages(kafka, topic as string, toMessages(events), { duplicateRate: 0.3, random: seededRandom(12) });
      const env = { BROKERS: brokers.join(','), DATABASE_URL: databaseUrl, SCHEMA: own.schema, TOPIC: topic as string, GROUP: uniqueName('g'), BATCH_SIZE: '25', OFFSET_COMMIT_INTERVAL_MS: '0' };
      const first = startConsumerChild({ ...env, CRASH_AT: 'after-db-commit', CRASH_ON_CHUNK: '4' });
      expect(await first.exitWithin(60_000, 'crash after the db commit of chunk 4')).toBe('SIGKILL');
      const second = startConsumerChild(env);
      await waitFor(() => totals(own.db, own.schema), (t) => sameTotals(t, model(events)), 90_000);
      await second.stop();
      const commits = [...first.lines, ...second.lines].filter((l) => l.startsWith('committed')).map((l) => BigInt(l.split(' ')[3] as string));
      expect(commits.length).toBeGreaterThan(3);
      for (let i = 1; i < commits.length; i++) expect(commits[i]! >= commits[i - 1]!).toBe(true);
      const admin = kafka.admin();
      await admin.connect();
      const [committed] = await admin.fetchOffsets({ groupId: env.GROUP, topics: [topic as string] });
      await admin.disconnect();
      expect(committed?.partitions[0]?.offset).toBe(String(commits[commits.length - 1]));
    } finally {
      await own.drop();
    }
  });
});
