import { createRequire } from 'node:module';
import { KafkaJSConnectionError, KafkaJSRequestTimeoutError } from 'kafkajs';
import { importOptionalPeer, PLATFORMATIC_KAFKA } from '@effectively/core';
import { testClient } from '@effectively/testkit';
import type * as Platformatic from '@platformatic/kafka';
import { classifyKafkajsError, classifyPlatformaticError, PlatformaticSendError, type ProduceFailureKind } from '../src';

/**
 * What a failed send means, from the error objects kafkajs itself builds (its factory for Kafka
 * error codes, and its retrier's wrapper). The shared test broker has no authorizer and one
 * node, so "not authorised" and "no leader" cannot be provoked for real; unknown topic and too
 * large are also exercised against the broker in isolation.test.ts and poison.test.ts.
 */
const kafkajs = createRequire(require.resolve('kafkajs'));
const { createErrorFromCode } = kafkajs('./src/protocol/error') as { createErrorFromCode(code: number): Error };
const { KafkaJSNumberOfRetriesExceeded } = kafkajs('./src/errors') as { KafkaJSNumberOfRetriesExceeded: new (e: Error, info: { retryCount: number; retryTime: number }) => Error };

const cases: Array<[string, number, ProduceFailureKind]> = [
  ['UNKNOWN_TOPIC_OR_PARTITION', 3, 'unknown-topic'],
  ['INVALID_TOPIC_EXCEPTION', 17, 'unknown-topic'],
  ['TOPIC_AUTHORIZATION_FAILED', 29, 'not-authorized'],
  ['MESSAGE_TOO_LARGE', 10, 'message-too-large'],
  ['RECORD_LIST_TOO_LARGE', 18, 'message-too-large'],
  ['CORRUPT_MESSAGE', 2, 'invalid-record'],
  ['INVALID_TIMESTAMP', 32, 'invalid-record'],
  ['INVALID_RECORD', 87, 'invalid-record'],
  ['LEADER_NOT_AVAILABLE', 5, 'unavailable'],
  ['NOT_LEADER_FOR_PARTITION', 6, 'unavailable'],
  ['REQUEST_TIMED_OUT', 7, 'unavailable'],
  ['NOT_ENOUGH_REPLICAS', 19, 'unavailable'],
  ['OUT_OF_ORDER_SEQUENCE_NUMBER', 45, 'unavailable'],
];

const onKafkajs = testClient() === 'kafkajs' ? describe : describe.skip;
const onPlatformatic = testClient() === 'platformatic' ? describe : describe.skip;

onKafkajs('classifyKafkajsError', () => {
  it.each(cases)('%s (code %i) is %s, bare or wrapped by the kafkajs retrier', (type, code, kind) => {
    const error = createErrorFromCode(code);
    expect((error as Error & { type: string }).type).toBe(type);
    expect(classifyKafkajsError(error)).toBe(kind);
    expect(classifyKafkajsError(new KafkaJSNumberOfRetriesExceeded(error, { retryCount: 1, retryTime: 100 }))).toBe(kind);
  });

  it('connection errors and request time-outs are the cluster’s (unavailable); anything unknown is retriable', () => {
    expect(classifyKafkajsError(new KafkaJSConnectionError('Connection error: connect ECONNREFUSED 127.0.0.1:1'))).toBe('unavailable');
    expect(classifyKafkajsError(new KafkaJSRequestTimeoutError('Request Produce(key: 0, version: 7) timed out'))).toBe('unavailable');
    expect(classifyKafkajsError(new Error('something else'))).toBe('retriable');
  });

  it('a permanent error wins over a transient one wrapped with it', () => {
    const error = Object.assign(new Error('aggregate'), { errors: [createErrorFromCode(5), createErrorFromCode(29)] });
    expect(classifyKafkajsError(error)).toBe('not-authorized');
  });
});

/** The same, from the error objects @platformatic/kafka builds (its protocol errors, response aggregates, retries). */
onPlatformatic('classifyPlatformaticError', () => {
  let plt: typeof Platformatic;
  beforeAll(async () => {
    plt = await importOptionalPeer<typeof Platformatic>({ ...PLATFORMATIC_KAFKA, from: __filename });
  });
  const responseError = (code: number): Error => new plt.ResponseError(0, 9, { '/topics/0/partitions/0': [code, null] }, {});
  const retried = (error: Error): Error => new plt.MultipleErrors('produce failed 3 times.', [error, error, error]);

  it.each(cases)('%s (code %i) is %s, bare, in a response, or wrapped by the client’s retries', (type, code, kind) => {
    const error = new plt.ProtocolError(code);
    expect(error.apiId).toBe(type === 'NOT_LEADER_FOR_PARTITION' ? 'NOT_LEADER_OR_FOLLOWER' : type);
    expect(classifyPlatformaticError(error)).toBe(kind);
    expect(classifyPlatformaticError(responseError(code))).toBe(kind);
    expect(classifyPlatformaticError(retried(responseError(code)))).toBe(kind);
  });

  it('an unknown topic (the client’s own error for it), lost connections and time-outs; anything unknown is retriable', () => {
    expect(classifyPlatformaticError(new plt.UserError('Unknown topic orders.'))).toBe('unknown-topic');
    expect(classifyPlatformaticError(retried(new plt.UserError('Unknown topic orders.')))).toBe('unknown-topic');
    expect(classifyPlatformaticError(new plt.NetworkError('Connection closed'))).toBe('unavailable');
    expect(classifyPlatformaticError(new plt.TimeoutError('Request timed out'))).toBe('unavailable');
    expect(classifyPlatformaticError(new plt.UserError('Failed to serialize a message.'))).toBe('retriable');
    expect(classifyPlatformaticError(new Error('something else'))).toBe('retriable');
  });

  it('a permanent error wins over a transient one in the same response, and the send error names both', () => {
    const error = new plt.MultipleErrors('aggregate', [new plt.ProtocolError(5), new plt.ProtocolError(29)]);
    expect(classifyPlatformaticError(error)).toBe('not-authorized');
    const sent = new PlatformaticSendError('x', { cause: error });
    expect(classifyPlatformaticError(sent)).toBe('not-authorized');
  });
});
