import { createTestSchema, createTopics, produceMessages, seededRandom, testClient, testKafka, testServices, uniqueName } from '@effectively/testkit';
import { startConsumerChild } from './support/child';
import { count, createLedger, makeEvents, model, sameTotals, toMessages, totals, waitFor } from './support/ledger';

describe(`rebalances and zombies (${testClient()})`, () => {
  const { brokers, databaseUrl } = testServices();
  const kafka = testKafka(brokers);

  it('a member joins mid-batch, another is frozen (SIGSTOP) past its session timeout and resumed: exact effects, offsets never move backwards', async () => {
    const s = await createTestSchema(databaseUrl, 'rebal');
    const admin = kafka.admin();
    await admin.connect();
    const members: Array<ReturnType<typeof startConsumerChild>> = [];
    let sampling = true;
    try {
      await createLedger(s.db, s.schema);
      const [topic] = await createTopics(kafka, [{ prefix: 'rebal', partitions: 4 }]);
      const events = makeEvents(800, seededRandom(21));
      const random = seededRandom(22);
      // Produced in three parts, each when a member must find work: the first before A starts, the
      // second once B has joined (so B's partitions get records whatever A got through meanwhile:
      // produced all at once, a fast A drained the topic before a slow-starting B joined, and B never
      // committed), the third just before A is frozen (so A is likely mid-batch), with re-sent copies
      // of the first part's events.
      const produce = (part: typeof events): Promise<unknown> => produceMessages(kafka, topic as string, toMessages(part), { duplicateRate: 0.3, maxCopies: 3, random });
      await produce(events.slice(0, 300));
      const filled = await admin.fetchTopicOffsets(topic as string);
      expect(filled.filter((p) => p.high === '0')).toEqual([]); // every partition has records, whichever a member gets
      const group = uniqueName('g');
      // Slow handlers make long batches, so joins and freezes land mid-transaction.
      const env = { BROKERS: brokers.join(','), DATABASE_URL: databaseUrl, SCHEMA: s.schema, TOPIC: topic as string, GROUP: group, BATCH_SIZE: '20', HANDLER_DELAY_MS: '5', SESSION_TIMEOUT_MS: '6000' };

      const seen = new Map<number, bigint>();
      let backwards = 0;
      const sampler = (async () => {
        while (sampling) {
          const [offsets] = await admin.fetchOffsets({ groupId: group, topics: [topic as string] }).catch(() => []);
          for (const p of offsets?.partitions ?? []) {
            if (p.offset === '-1') continue;
            const now = BigInt(p.offset);
            const before = seen.get(p.partition);
            if (before !== undefined && now < before) backwards++;
            seen.set(p.partition, now);
          }
          await new Promise((r) => setTimeout(r, 200));
        }
      })();

      const a = startConsumerChild(env);
      members.push(a);
      await a.waitForLine(/^committed/);
      const b = startConsumerChild(env);
      members.push(b);
      await b.waitForLine(/^started/); // joined and synced: it owns partitions now
      await produce(events.slice(300, 600));
      await b.waitForLine(/^committed/, 60_000);

      // Freeze A past its session timeout; B takes its partitions; then A wakes up as a zombie.
      await produce([...events.slice(600), ...events.slice(0, 50)]);
      a.process.kill('SIGSTOP');
      await new Promise((r) => setTimeout(r, 9000));
      a.process.kill('SIGCONT');

      const expected = model(events);
      expect(await waitFor(() => totals(s.db, s.schema), (t) => sameTotals(t, expected), 120_000)).toEqual(expected);
      expect(await count(s.db, s.schema, 'processed_events')).toBe(events.length);
      sampling = false;
      await sampler;
      expect(backwards).toBe(0);
      expect(seen.size).toBeGreaterThan(0);
    } finally {
      sampling = false; // also when an expectation failed: a sampler left running outlived the test file
      await Promise.all(members.map((m) => m.stop()));
      await admin.disconnect();
      await s.drop();
    }
  });

  it('a member blocked past its session timeout between its database commit and its offset commit: that late commit is not made, the group offset never moves back', async () => {
    const s = await createTestSchema(databaseUrl, 'late');
    const admin = kafka.admin();
    await admin.connect();
    const members: Array<ReturnType<typeof startConsumerChild>> = [];
    try {
      await createLedger(s.db, s.schema);
      const [topic] = await createTopics(kafka, [{ prefix: 'late', partitions: 1 }]);
      const events = makeEvents(200, seededRandom(31));
      await produceMessages(kafka, topic as string, toMessages(events));
      const group = uniqueName('g');
      const env = { BROKERS: brokers.join(','), DATABASE_URL: databaseUrl, SCHEMA: s.schema, TOPIC: topic as string, GROUP: group, BATCH_SIZE: '20', SESSION_TIMEOUT_MS: '6000', OFFSET_COMMIT_INTERVAL_MS: '0' };
      // A commits chunk 1's offset (20), then blocks after chunk 2's database commit, before its offset commit (40).
      const a = startConsumerChild({ ...env, BLOCK_ON_CHUNK: '2', BLOCK_MS: '16000' });
      members.push(a);
      await a.waitForLine(/^blocking$/);
      // B joins; A cannot answer, its session ends, B takes the partition from 20 and commits the end.
      const b = startConsumerChild(env);
      members.push(b);
      await b.waitForLine(new RegExp(`^committed ${topic as string} 0 200$`), 60_000);
      await a.waitForLine(/^woke$/, 30_000);
      // A's commit of 40 is attempted now, as a member of a generation that is gone.
      await new Promise((r) => setTimeout(r, 8000));
      const after = a.lines.slice(a.lines.indexOf('woke'));
      expect(after.filter((l) => l.startsWith(`committed ${topic as string} 0 `) && l !== `committed ${topic as string} 0 200`)).toEqual([]);
      const [offsets] = await admin.fetchOffsets({ groupId: group, topics: [topic as string] });
      expect(offsets?.partitions[0]?.offset).toBe('200');
      expect(await count(s.db, s.schema, 'processed_events')).toBe(events.length);
      expect(await totals(s.db, s.schema)).toEqual(model(events));
    } finally {
      await Promise.all(members.map((m) => m.stop()));
      await admin.disconnect();
      await s.drop();
    }
  });
});
