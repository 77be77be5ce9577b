import { InvalidConfigError } from '@effectively/core';
import { dockerAvailable } from '../docker';
import { once, type RunningKafka } from '../service';
import { startLocalBroker, type LocalBrokerOptions } from './local-broker';

/** Options for {@link startKafka}. */
export interface StartKafkaOptions extends LocalBrokerOptions {
  /** Environment to read `KAFKA_BROKERS` from; default `process.env`. */
  env?: NodeJS.ProcessEnv;
  /** Whether a Docker engine answers; default probes for one. Injectable for tests. */
  dockerAvailable?: () => Promise<boolean>;
  /** Image for testcontainers; default `confluentinc/cp-kafka:7.7.1` in KRaft mode. */
  image?: string;
}

/** Parses a comma-separated `host:port` list, refusing anything else. */
export function parseBrokers(value: string): string[] {
  const brokers = value.split(',').map((b) => b.trim()).filter((b) => b !== '');
  for (const broker of brokers) {
    if (!/^[^\s:/]+:\d{1,5}$/.test(broker)) {
      throw new InvalidConfigError(`KAFKA_BROKERS entry ${JSON.stringify(broker)} is not host:port; write e.g. KAFKA_BROKERS=127.0.0.1:9092,127.0.0.1:9093.`);
    }
  }
  if (brokers.length === 0) throw new InvalidConfigError('KAFKA_BROKERS is set but empty; unset it to start a broker, or list host:port addresses.');
  return brokers;
}

async function startContainer(image: string): Promise<RunningKafka> {
  const started = Date.now();
  const { KafkaContainer } = await import('@testcontainers/kafka');
  const container = await new KafkaContainer(image).withKraft().start();
  const brokers = [`${container.getHost()}:${container.getMappedPort(9093)}`];
  return { brokers, source: 'testcontainers', startupMs: Date.now() - started, stop: once(async () => void (await container.stop())) };
}

/**
 * Gives a Kafka cluster to talk to, choosing in this order:
 * 1. `KAFKA_BROKERS` from the environment (nothing is started or stopped);
 * 2. testcontainers, when a Docker engine answers;
 * 3. a local single-node broker from Maven Central on the JVM ({@link startLocalBroker}).
 */
export async function startKafka(options: StartKafkaOptions = {}): Promise<RunningKafka> {
  const env = options.env ?? process.env;
  const fromEnv = env['KAFKA_BROKERS'];
  if (fromEnv !== undefined && fromEnv !== '') {
    return { brokers: parseBrokers(fromEnv), source: 'env', startupMs: 0, stop: async () => undefined };
  }
  const docker = await (options.dockerAvailable ?? (() => dockerAvailable(env)))();
  if (docker) return startContainer(options.image ?? 'confluentinc/cp-kafka:7.7.1');
  return startLocalBroker(options);
}
