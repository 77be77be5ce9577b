/**
 * The {@link ProducerClient} on `@platformatic/kafka` (`client: 'platformatic'`): maintained, pure
 * TypeScript, Node.js ≥ 22.22, an optional peer dependency loaded on `connect()` only. It sends
 * what the kafkajs client sends (same keys, values and headers, the Java-compatible partitioner,
 * so a key lands on the same partition with either client) with the same guarantees: an
 * idempotent producer, `acks: -1`, one request in flight per connection (so per partition).
 */
import { importOptionalPeer, PLATFORMATIC_KAFKA, type Logger } from '@effectively/core';
import type * as PlatformaticKafka from '@platformatic/kafka';
import type { MessageToProduce, Producer } from '@platformatic/kafka';
import { classifyKafkaErrorTypes, type ProduceFailureKind, type ProducerClient, type ProducerClientSettings } from './kafka-adapter';

/** The client's own codes for a lost connection and a time-out (a `TimeoutError` carries the first). */
const TRANSPORT_CODES = new Set(['PLT_KFK_NETWORK', 'PLT_KFK_TIMEOUT']);

/**
 * The client reports a topic the cluster does not have (metadata error UNKNOWN_TOPIC_OR_PARTITION)
 * as a `UserError` with this message and no Kafka error type (`clients/base/base.js`, 2.12); the
 * send-errors and poison tests send to a missing topic on the real broker with this client.
 */
const UNKNOWN_TOPIC_MESSAGE = /^Unknown topic .*\.$/;

/** The Kafka error types (`apiId`) and client codes in an error and what it wraps (retries, aggregates). */
function errorTraits(error: unknown): { types: Set<string>; codes: Set<string> } {
  const types = new Set<string>();
  const codes = new Set<string>();
  const queue: unknown[] = [error];
  for (let seen = 0; queue.length > 0 && seen < 50; seen++) {
    const current = queue.shift();
    if (typeof current !== 'object' || current === null) continue;
    const e = current as { apiId?: unknown; code?: unknown; message?: unknown; cause?: unknown; errors?: unknown };
    if (typeof e.apiId === 'string') types.add(e.apiId);
    if (typeof e.code === 'string') codes.add(e.code);
    if (e.code === 'PLT_KFK_USER' && typeof e.message === 'string' && UNKNOWN_TOPIC_MESSAGE.test(e.message)) types.add('UNKNOWN_TOPIC_OR_PARTITION');
    queue.push(e.cause);
    if (Array.isArray(e.errors)) queue.push(...(e.errors as unknown[]));
  }
  return { types, codes };
}

/**
 * Classifies a @platformatic/kafka produce error by the Kafka error types its protocol errors
 * carry (`apiId`), unwrapping the client's retries (`MultipleErrors`); a lost connection or a
 * time-out is `unavailable`. Permanent kinds win over transient ones.
 */
export function classifyPlatformaticError(error: unknown): ProduceFailureKind {
  const { types, codes } = errorTraits(error);
  return classifyKafkaErrorTypes(types, [...codes].some((c) => TRANSPORT_CODES.has(c)));
}

/** The innermost errors of a client error (its retries and per-partition errors), as `TYPE: message` once each. */
function summarize(error: unknown): string {
  const parts = new Set<string>();
  const queue: unknown[] = [error];
  for (let seen = 0; queue.length > 0 && seen < 50; seen++) {
    const current = queue.shift();
    if (typeof current !== 'object' || current === null) continue;
    const e = current as { apiId?: unknown; message?: unknown; cause?: unknown; errors?: unknown };
    const inner = [...(Array.isArray(e.errors) ? (e.errors as unknown[]) : []), ...(e.cause === undefined ? [] : [e.cause])];
    if (inner.length > 0) queue.push(...inner);
    else parts.add(`${typeof e.apiId === 'string' ? `${e.apiId}: ` : ''}${typeof e.message === 'string' ? e.message : String(current)}`);
  }
  return parts.size === 0 ? String(error) : [...parts].join('; ');
}

/**
 * A send the client gave up on, with the Kafka errors inside it in the message (what the relay
 * records as a row's `last_error`); `cause` is the client's own error, which {@link classifyPlatformaticError} reads.
 */
export class PlatformaticSendError extends Error {
  override name = 'PlatformaticSendError';
}

/**
 * Creates the @platformatic/kafka-backed {@link ProducerClient}. `connect()` loads the package
 * (an {@link OptionalPeerError} says what to install or upgrade), then gets a producer id, a
 * round trip to the cluster; the client's own connection pool reconnects as needed.
 */
export function createPlatformaticProducer(settings: ProducerClientSettings): ProducerClient {
  const log: Logger = settings.logger;
  // Keys and values are Buffers already; header names and values are strings, as for kafkajs.
  type BufferProducer = Producer<Buffer, Buffer, string, string>;
  // One producer at a time, made once even when connect, send and ping ask for it together.
  let producer: Promise<BufferProducer> | undefined;

  const create = async (): Promise<BufferProducer> => {
    const kafka = await importOptionalPeer<typeof PlatformaticKafka>({ ...PLATFORMATIC_KAFKA, from: __filename });
    return new kafka.Producer<Buffer, Buffer, string, string>({
      ...settings.platformatic,
      serializers: { headerKey: kafka.stringSerializer, headerValue: kafka.stringSerializer },
      clientId: settings.clientId,
      bootstrapBrokers: [...settings.brokers],
      // Idempotent (the client then keeps one request in flight per connection and acks: -1).
      idempotent: true,
      acks: -1,
      maxInflights: 1,
      autocreateTopics: false,
      // Where the Java client and kafkajs put a key (murmur2 & 0x7fffffff); the client's default differs.
      partitioner: kafka.compatibilityPartitioner,
    });
  };
  const open = (): Promise<BufferProducer> => {
    const current = (producer ??= create());
    // A failed load is not kept: the next call tries again.
    current.catch(() => {
      if (producer === current) producer = undefined;
    });
    return current;
  };

  return {
    connect: async () => {
      const p = await open();
      const info = await p.initIdempotentProducer({});
      log.debug({ producerId: String(info.producerId), producerEpoch: info.producerEpoch }, 'platformatic producer connected');
    },
    sendBatch: async (batches) => {
      const p = await open();
      const messages: Array<MessageToProduce<Buffer, Buffer, string, string>> = [];
      for (const batch of batches) {
        for (const m of batch.messages) {
          // A plain object (the client makes the Map): a Map from another realm (a vm context) would not be seen as one.
          const message: MessageToProduce<Buffer, Buffer, string, string> = { topic: batch.topic, headers: { ...m.headers } };
          if (m.key !== null) message.key = m.key;
          if (m.value !== null) message.value = m.value;
          messages.push(message);
        }
      }
      try {
        await p.send({ messages, acks: -1 });
      } catch (error) {
        throw new PlatformaticSendError(summarize(error), { cause: error });
      }
    },
    classify: classifyPlatformaticError,
    ping: async () => {
      const p = await open();
      await p.metadata({ topics: [], forceUpdate: true });
    },
    disconnect: async () => {
      const p = producer;
      producer = undefined;
      const opened = await p?.catch(() => undefined);
      await opened?.close(true);
    },
  };
}
