import { InvalidConfigError, InvalidIdentifierError, silentLogger } from '@effectively/core';
import { createTestSchema, testServices, type TestSchema } from '@effectively/testkit';
import { IdempotentConsumer, type IdempotentConsumerOptions } from '../src';

describe('hostile or inconsistent configuration is refused at construction', () => {
  const { brokers, databaseUrl } = testServices();
  let s: TestSchema;
  beforeAll(async () => {
    s = await createTestSchema(databaseUrl, 'cfg');
  });
  afterAll(async () => s.drop());
  const base = (): IdempotentConsumerOptions => ({ brokers, groupId: 'g', topics: ['t'], db: s.db, schema: s.schema, handler: async () => undefined });

  it.each([
    ['a schema with quotes', { schema: 'x"y' }, InvalidIdentifierError, /safe identifier/],
    ['a schema with ;DROP', { schema: 'x; DROP TABLE users' }, InvalidIdentifierError, /safe identifier/],
    ['a schema longer than 63 bytes', { schema: 's'.repeat(64) }, InvalidIdentifierError, /63 bytes/],
    ['a reserved word', { schema: 'table' }, InvalidIdentifierError, /reserved/],
    ['a unicode schema', { schema: 'schéma' }, InvalidIdentifierError, /safe identifier/],
    ['a heartbeat not under a third of the session timeout', { sessionTimeoutMs: 6000, heartbeatIntervalMs: 3000 }, InvalidConfigError, /heartbeatIntervalMs/],
    ['a zero batch size', { batchSize: 0 }, InvalidConfigError, /batchSize/],
    ['a huge batch size', { batchSize: 1_000_000 }, InvalidConfigError, /batchSize/],
    ['an event id limit above 512 bytes', { maxEventIdBytes: 4096 }, InvalidConfigError, /maxEventIdBytes/],
    ['no topics', { topics: [] }, InvalidConfigError, /topics/],
    ['an invalid topic name', { topics: ['bad topic'] }, InvalidConfigError, /topics/],
    ['the topic ".."', { topics: ['..'] }, InvalidConfigError, /topics/],
    ['a group id with NUL (Postgres text cannot hold it)', { groupId: 'g\u0000x' }, InvalidConfigError, /groupId/],
    ['a group id with a lone surrogate', { groupId: 'g\ud800' }, InvalidConfigError, /groupId/],
    ['a dead-letter topic too long for Kafka (the default <topic>.dlq of a 249-character topic)', { topics: ['t'.repeat(249)] }, InvalidConfigError, /dead-letter topic/],
    ['a dead-letter topic that is not a topic name', { deadLetterTopic: (t: string) => `${t} dlq` }, InvalidConfigError, /dead-letter topic/],
    ['a deadLetterTopic that is not a function', { deadLetterTopic: 'dlq' }, InvalidConfigError, /deadLetterTopic/],
    ['an unknown client', { client: 'rdkafka' }, InvalidConfigError, /client must be "kafkajs", "platformatic" or a function/],
    ['kafkajs settings with client "platformatic"', { client: 'platformatic', kafka: { ssl: true } }, InvalidConfigError, /pass connection settings \(tls, sasl\) as platformatic/],
    ['platformatic settings with client "kafkajs"', { platformatic: { tls: {} } }, InvalidConfigError, /pass client: "platformatic"/],
    ['silentLogger passed uncalled', { logger: silentLogger }, InvalidConfigError, /options\.logger must be a pino logger, got a function: call it/],
    ['console as the logger', { logger: console }, InvalidConfigError, /options\.logger must be a pino logger \(it lacks child, bindings/],
  ])('refuses %s', (_name, patch, type, message) => {
    expect(() => new IdempotentConsumer({ ...base(), ...patch } as IdempotentConsumerOptions)).toThrow(type);
    expect(() => new IdempotentConsumer({ ...base(), ...patch } as IdempotentConsumerOptions)).toThrow(message);
  });

  it.each(['autoCommit', 'eachBatchAutoResolve', 'autoCommitInterval', 'eachMessage'])('refuses %s: offsets are committed only after the database commit', (key) => {
    const options = { ...base(), [key]: true } as unknown as IdempotentConsumerOptions;
    expect(() => new IdempotentConsumer(options)).toThrow(/only after the database transaction commits/);
    const nested = { ...base(), kafka: { [key]: true } } as unknown as IdempotentConsumerOptions;
    expect(() => new IdempotentConsumer(nested)).toThrow(InvalidConfigError);
  });

  it('does not change the caller\'s options object', () => {
    const options = base();
    const copy = { ...options };
    new IdempotentConsumer(options);
    expect(options).toEqual(copy);
  });
});
