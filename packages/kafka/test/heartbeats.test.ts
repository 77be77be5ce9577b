import { createTestSchema, createTopics, produceMessages, seededRandom, testClient, testKafka, testServices, uniqueName } from '@effectively/testkit';
import { IdempotentConsumer, type ConsumedEvent, type HandlerContext } from '../src';
import { apply, count, createLedger, makeEvents, model, sameTotals, toMessages, totals, waitFor, type Entry } from './support/ledger';
import { holds, observedClient, type ClientObservations } from './support/observed-client';

describe(`heartbeats during a long chunk transaction (${testClient()})`, () => {
  const { brokers, databaseUrl } = testServices();
  const kafka = testKafka(brokers);

  // @platformatic/kafka only (README, "Choosing a Kafka client", Heartbeats): that client heartbeats
  // on a timer, so a chunk transaction longer than sessionTimeoutMs keeps its member in the group.
  // kafkajs heartbeats only between chunks: there the member is expelled after sessionTimeoutMs and
  // the other member is given its partition while the slow handler still runs (this test fails so).
  (testClient() === 'platformatic' ? it : it.skip)('a handler that awaits twice sessionTimeoutMs: its member stays in the group, the other member is never given its partition, the event is handled and applied once', async () => {
    const s = await createTestSchema(databaseUrl, 'heartbeat');
    const members: Array<IdempotentConsumer<Entry>> = [];
    try {
      await createLedger(s.db, s.schema);
      const [topic] = await createTopics(kafka, [{ prefix: 'heartbeat', partitions: 2 }]);
      const group = uniqueName('g');
      const slowId = 'slow';
      const slowMs = 12_000;
      const sessionTimeoutMs = 6000;
      const seen = { one: { assignments: [], pauses: [] } as ClientObservations, two: { assignments: [], pauses: [] } as ClientObservations };
      type Name = keyof typeof seen;
      const slowRuns: Array<{ member: Name; assignmentsSeen: Record<Name, number> }> = [];
      let slowDone = false;
      const member = (name: Name): IdempotentConsumer<Entry> => {
        const consumer = new IdempotentConsumer<Entry>({
          client: observedClient(testClient(), seen[name]),
          brokers, groupId: group, topics: [topic as string], db: s.db, schema: s.schema,
          handler: async (event: ConsumedEvent<Entry>, { trx }: HandlerContext) => {
            await apply(trx, s.schema, event.value);
            if (event.id === slowId) {
              // How many assignments each member had when the slow transaction began: any later one is a rebalance during it.
              slowRuns.push({ member: name, assignmentsSeen: { one: seen.one.assignments.length, two: seen.two.assignments.length } });
              await new Promise((r) => setTimeout(r, slowMs)); // the chunk transaction stays open, no chunk boundary
              slowDone = true;
            }
          },
          batchSize: 10, sessionTimeoutMs, heartbeatIntervalMs: 1000, handlerTimeoutMs: 60_000,
        });
        members.push(consumer);
        return consumer;
      };

      // Two members, one partition each, before anything is produced.
      await member('one').start();
      await waitFor(async () => seen.one.assignments.length, (n) => n > 0, 60_000);
      await member('two').start();
      const settled = (): boolean => {
        const [one, two] = [seen.one.assignments.at(-1), seen.two.assignments.at(-1)];
        return seen.one.assignments.length > 1 && one?.partitions.length === 1 && two?.partitions.length === 1 && one.partitions[0]?.partition !== two.partitions[0]?.partition;
      };
      await waitFor(async () => settled(), (v) => v, 60_000);
      expect(settled()).toBe(true);

      // Partition 0: events, the slow one, more events; partition 1: events throughout.
      const before = makeEvents(40, seededRandom(91), 'b');
      const after = makeEvents(40, seededRandom(92), 'a');
      const other = makeEvents(80, seededRandom(93), 'o');
      const slow = { id: slowId, entry: { account: 'acct-slow', amount: 7 } };
      const on = (partition: number, events: typeof before) => toMessages(events).map((m) => ({ ...m, partition }));
      await produceMessages(kafka, topic as string, [...on(0, before), ...on(0, [slow]), ...on(0, after), ...on(1, other)]);

      await waitFor(async () => slowDone, (v) => v, 90_000);
      const expected = model([...before, slow, ...after, ...other]);
      expect(await waitFor(() => totals(s.db, s.schema), (t) => sameTotals(t, expected), 90_000)).toEqual(expected);
      expect(await count(s.db, s.schema, 'processed_events')).toBe(before.length + 1 + after.length + other.length);

      // The slow event's handler ran once, in the member that held partition 0.
      expect(slowRuns.map((r) => r.member)).toHaveLength(1);
      const run = slowRuns[0] as (typeof slowRuns)[number];
      const owner = run.member;
      const peer: Name = owner === 'one' ? 'two' : 'one';
      // The other member was never given partition 0 from the slow transaction's start on ...
      expect(seen[peer].assignments.slice(run.assignmentsSeen[peer]).filter((a) => holds(a, topic as string, 0))).toEqual([]);
      // ... and the owner was never expelled: any assignment it got since is as the same member.
      const ownerId = seen[owner].assignments[run.assignmentsSeen[owner] - 1]?.memberId;
      expect(seen[owner].assignments.slice(run.assignmentsSeen[owner]).map((a) => a.memberId).filter((id) => id !== ownerId)).toEqual([]);
      expect(members.map((m) => m.stats.fenced)).toEqual([0, 0]);
    } finally {
      await Promise.all(members.map((m) => m.stop()));
      await s.drop();
    }
  }, 240_000);
});
