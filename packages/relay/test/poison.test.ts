import { randomBytes } from 'node:crypto';
import { createTopics, readTopic, testClient, uniqueName, type TestSchema } from '@effectively/testkit';
import { ConfigResourceTypes } from 'kafkajs';
import { createRelay, discardParked, listParked, requeueParked, type OutboxRelay } from '../src';
import { header, outboxRows, publishCommitted, relayTestBed, seqsByKey, sleep, waitFor, type OutboxRowView } from './support/lanes';

/**
 * Rows Kafka refuses for good: too large for the topic, or for a topic that does not exist.
 * They back off, are parked after maxAttempts and hold back the later rows of their topic and
 * key only; an operator re-queues them (after fixing the cause) or discards them.
 */
describe(`poison rows (${testClient()})`, () => {
  const { brokers, databaseUrl, kafka, newSchema, stopAfterAll } = relayTestBed();

  const startRelay = async (s: TestSchema): Promise<OutboxRelay> => {
    const relay = createRelay({
      client: testClient(),
      brokers,
      db: s.db,
      databaseUrl,
      schema: s.schema,
      maxAttempts: 2,
      retryDelayMs: 100,
      maxRetryDelayMs: 200,
      pollIntervalMs: 50,
      // Each client retries a refused send briefly before the relay counts an attempt.
      ...(testClient() === 'kafkajs' ? { producer: { retry: { retries: 1, initialRetryTime: 50, maxRetryTime: 200 } } } : { platformatic: { retries: 2, retryDelay: 50 } }),
    });
    stopAfterAll(relay);
    await relay.start();
    return relay;
  };

  /** A small topic limit: the 10 KB row is refused (MESSAGE_TOO_LARGE), single small rows are not. */
  const smallTopic = async (prefix: string): Promise<string> => {
    const [topic] = await createTopics(kafka, [{ prefix, partitions: 2, config: { 'max.message.bytes': '2048' } }]);
    return topic as string;
  };

  /** Writes `n` rows per key for `keys`, one transaction each, interleaved; returns their event ids per key in commit order. */
  const writeOthers = async (s: TestSchema, topic: string, keys: string[], n: number): Promise<Map<string, string[]>> => {
    const ids = new Map<string, string[]>(keys.map((k) => [k, []]));
    for (let i = 0; i < n; i++) {
      for (const key of keys) {
        const [id] = await publishCommitted(s.db, s.schema, { topic, key, value: { key, seq: i } });
        ids.get(key)?.push(id as string);
      }
    }
    return ids;
  };

  const eventIdsOn = async (topic: string): Promise<Set<string | undefined>> => new Set((await readTopic(kafka, topic)).map((m) => header(m, 'event-id')));

  const row = (rows: OutboxRowView[], eventId: string): OutboxRowView | undefined => rows.find((r) => r.eventId === eventId);

  it('an oversized row is parked and holds back only its key; after the topic limit is raised, requeueParked publishes it and then the rows that waited, in order', async () => {
    const s = await newSchema('relay_poison');
    const topic = await smallTopic('relay_too_large');
    const K = 'poison-key';
    const small = (seq: number) => ({ topic, key: K, value: { key: K, seq } });
    // K: 0 (small), 1 (10 KB), 2, 3, 4 (small), each committed on its own, other keys' rows around them.
    const kIds: string[] = [];
    kIds.push(...(await publishCommitted(s.db, s.schema, small(0))));
    const before = await writeOthers(s, topic, ['other-a', 'other-b', 'other-c'], 2);
    kIds.push(...(await publishCommitted(s.db, s.schema, { topic, key: K, value: { key: K, seq: 1, blob: randomBytes(5_000).toString('hex') } })));
    for (let seq = 2; seq <= 4; seq++) kIds.push(...(await publishCommitted(s.db, s.schema, small(seq))));
    const after = await writeOthers(s, topic, ['other-a', 'other-b', 'other-c', 'other-d'], 3);
    const othersIds = [...before.values(), ...after.values()].flat();
    const [k0, poison, ...waiting] = kIds as [string, string, ...string[]];

    const relay = await startRelay(s);
    let rows = await waitFor(
      () => outboxRows(s.db, s.schema),
      (rs) => row(rs, poison)?.status === 'parked' && rs.every((r) => r.key === K),
      30_000,
      'poison parked, other keys published',
    );
    // Let the relay run more cycles: nothing behind the parked row moves.
    await sleep(1_000);
    rows = await outboxRows(s.db, s.schema);
    expect(rows.map((r) => r.eventId)).toEqual([poison, ...waiting]);
    expect(row(rows, poison)).toMatchObject({ status: 'parked', attempts: 2 });
    expect(row(rows, poison)?.lastError).toMatch(/larger than the max message size/);
    for (const id of waiting) expect(row(rows, id)).toMatchObject({ status: 'pending', attempts: 0, lastError: null });
    expect(relay.stats.parked).toBe(1);

    let onTopic = await eventIdsOn(topic);
    expect(othersIds.every((id) => onTopic.has(id))).toBe(true);
    expect(onTopic.has(k0)).toBe(true);
    expect([poison, ...waiting].filter((id) => onTopic.has(id))).toEqual([]);

    const parked = await listParked(s.db, { schema: s.schema });
    expect(parked).toHaveLength(1);
    expect(parked[0]).toMatchObject({ eventId: poison, topic, key: K, attempts: 2, waitingBehind: waiting.length });
    expect(parked[0]?.payloadBytes).toBeGreaterThan(10_000);

    // The operator fixes the cause (raises the topic's limit), then re-queues the row.
    const admin = kafka.admin();
    await admin.connect();
    try {
      await admin.alterConfigs({
        validateOnly: false,
        resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configEntries: [{ name: 'max.message.bytes', value: '1048576' }] }],
      });
      await waitFor(
        async () => (await admin.describeConfigs({ includeSynonyms: false, resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configNames: ['max.message.bytes'] }] })).resources[0]?.configEntries[0]?.configValue,
        (v) => v === '1048576',
        10_000,
        'topic limit raised',
      );
    } finally {
      await admin.disconnect();
    }
    expect(await requeueParked(s.db, { ids: [parked[0]?.id as string] }, { schema: s.schema })).toEqual([parked[0]?.id]);
    await waitFor(() => outboxRows(s.db, s.schema), (rs) => rs.length === 0, 30_000, 'poison and waiting rows published');

    onTopic = await eventIdsOn(topic);
    expect(kIds.every((id) => onTopic.has(id))).toBe(true);
    const seqs = await seqsByKey(kafka, topic);
    expect(seqs.get(K)).toEqual([0, 1, 2, 3, 4]);
    expect(seqs.get('other-a')).toEqual([0, 1, 0, 1, 2]);
    expect(seqs.get('other-d')).toEqual([0, 1, 2]);
    await relay.stop();
  });

  it('discardParked drops the parked row for good and the rows that waited behind it flow on, in order', async () => {
    const s = await newSchema('relay_poison');
    const topic = await smallTopic('relay_discard');
    const K = 'discard-key';
    const ids: string[] = [];
    ids.push(...(await publishCommitted(s.db, s.schema, { topic, key: K, value: { key: K, seq: 0 } })));
    ids.push(...(await publishCommitted(s.db, s.schema, { topic, key: K, value: { key: K, seq: 1, blob: randomBytes(5_000).toString('hex') } })));
    for (let seq = 2; seq <= 3; seq++) ids.push(...(await publishCommitted(s.db, s.schema, { topic, key: K, value: { key: K, seq } })));
    const others = (await writeOthers(s, topic, ['x', 'y'], 2)).get('x') ?? [];
    const [, poison, ...waiting] = ids as [string, string, ...string[]];

    await startRelay(s);
    await waitFor(() => outboxRows(s.db, s.schema), (rs) => row(rs, poison)?.status === 'parked' && rs.length === 3, 30_000, 'poison parked');
    const [parked] = await listParked(s.db, { schema: s.schema });
    expect(parked).toMatchObject({ eventId: poison, key: K, waitingBehind: 2 });
    expect(await discardParked(s.db, { ids: [parked?.id as string] }, { schema: s.schema })).toEqual([parked?.id]);
    await waitFor(() => outboxRows(s.db, s.schema), (rs) => rs.length === 0, 30_000, 'waiting rows published');

    const onTopic = await eventIdsOn(topic);
    expect(onTopic.has(poison)).toBe(false);
    expect([...waiting, ...others].every((id) => onTopic.has(id))).toBe(true);
    expect((await seqsByKey(kafka, topic)).get(K)).toEqual([0, 2, 3]);
    expect(await listParked(s.db, { schema: s.schema })).toEqual([]);
  });

  it('a row for a topic that does not exist is parked after maxAttempts (with the rows of its key behind it) while other rows flow', async () => {
    const s = await newSchema('relay_poison');
    const [topic] = (await createTopics(kafka, [{ prefix: 'relay_ghost_ok', partitions: 2 }])) as [string];
    const missing = uniqueName('relay_missing'); // never created; auto-creation is off
    const [ghost1] = await publishCommitted(s.db, s.schema, { topic: missing, key: 'ghost', value: { seq: 0 } });
    const [ghost2] = await publishCommitted(s.db, s.schema, { topic: missing, key: 'ghost', value: { seq: 1 } });
    // Same key on a topic that exists: a different topic+key, so it does not wait.
    const [sameKeyElsewhere] = await publishCommitted(s.db, s.schema, { topic, key: 'ghost', value: { key: 'ghost', seq: 0 } });
    const others = [...(await writeOthers(s, topic, ['p', 'q', 'r'], 3)).values()].flat();

    const relay = await startRelay(s);
    const rows = await waitFor(
      () => outboxRows(s.db, s.schema),
      (rs) => row(rs, ghost1 as string)?.status === 'parked' && rs.length === 2,
      30_000,
      'ghost parked, the rest published',
    );
    expect(row(rows, ghost1 as string)).toMatchObject({ status: 'parked', attempts: 2, topic: missing });
    expect(row(rows, ghost1 as string)?.lastError).toMatch(testClient() === 'kafkajs' ? /does not host this topic-partition/ : /^PlatformaticSendError: Unknown topic relay_missing_/);
    expect(row(rows, ghost2 as string)).toMatchObject({ status: 'pending', attempts: 0 });
    const onTopic = await eventIdsOn(topic);
    expect([sameKeyElsewhere, ...others].every((id) => onTopic.has(id))).toBe(true);
    expect(await listParked(s.db, { schema: s.schema })).toEqual([expect.objectContaining({ eventId: ghost1, topic: missing, key: 'ghost', waitingBehind: 1 })]);
    expect(relay.stats.parked).toBe(1);
    expect(relay.health().status).toBe('ok');
  });
});
