import { createTopics, produceMessages, readTopic, testKafka, testServices, seededRandom } from '../src';

describe('the run-wide Kafka broker', () => {
  const { brokers } = testServices();
  const kafka = testKafka(brokers);

  it('produces and consumes through kafkajs, duplicates included', async () => {
    const [topic] = await createTopics(kafka, [{ prefix: 'roundtrip', partitions: 3 }]);
    const messages = Array.from({ length: 200 }, (_, i) => ({ key: `k${i % 7}`, value: JSON.stringify({ i }), headers: { 'event-id': `e${i}` } }));
    const sent = await produceMessages(kafka, topic as string, messages, { duplicateRate: 0.3, maxCopies: 3, random: seededRandom(7) });
    expect(sent.length).toBeGreaterThan(messages.length);

    const read = await readTopic(kafka, topic as string);
    expect(read).toHaveLength(sent.length);
    const ids = new Set(read.map((m) => m.headers['event-id']?.toString()));
    expect(ids.size).toBe(messages.length);
    // Per-key order is kept within a partition.
    const byKey = new Map<string, number[]>();
    for (const m of read) {
      const k = m.key?.toString() ?? '';
      const i = (JSON.parse(m.value?.toString() ?? '{}') as { i: number }).i;
      byKey.set(k, [...(byKey.get(k) ?? []), i]);
    }
    for (const is of byKey.values()) {
      const firsts = is.filter((v, idx) => is.indexOf(v) === idx);
      expect(firsts).toEqual([...firsts].sort((a, b) => a - b));
    }
  });

  it('does not create topics on demand (auto-creation is off)', async () => {
    const producer = kafka.producer({ allowAutoTopicCreation: true });
    await producer.connect();
    try {
      await expect(producer.send({ topic: 'never_created_topic_x', messages: [{ value: 'x' }] })).rejects.toThrow();
    } finally {
      await producer.disconnect();
    }
  });
});
