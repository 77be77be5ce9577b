import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Kafka, logLevel } from 'kafkajs';
import { ServiceStartError } from '@effectively/core';
import { spawnGuarded, type GuardedProcess } from '../guardian';
import { freePort, portInUse } from '../ports';
import { once, type RunningKafka } from '../service';
import { DEFAULT_KAFKA_VERSION, resolveKafkaClasspath, type ClasspathOptions } from './maven-classpath';
import { runCommand, tail } from './process-utils';

/** Options for {@link startLocalBroker}. */
export interface LocalBrokerOptions extends ClasspathOptions {
  /** Client port; default a free port. Refused with a clear error if taken. */
  port?: number;
  /** Java executable; default `$JAVA_HOME/bin/java` or `java`. */
  javaCommand?: string;
  /** Maximum JVM heap; default `768m`. */
  heap?: string;
  /** How long to wait for the broker to answer a metadata request, at start and at each restart; default 60 s. */
  startTimeoutMs?: number;
  /**
   * How long {@link LocalKafkaBroker.halt} waits after SIGTERM before it SIGKILLs the broker; default 15 s.
   * A clean shutdown takes about half a second. After a SIGKILL the next restart takes about
   * 10 s longer: the controller keeps the old registration until `broker.session.timeout.ms`
   * (default 9 s) has passed.
   */
  haltTimeoutMs?: number;
  /** Extra `server.properties` entries (override the test defaults). */
  brokerProperties?: Record<string, string | number | boolean>;
}

/**
 * A broker this kit runs itself, which a test may halt and start again (a broker outage).
 * Every call is safe in any order: `halt()` on a halted broker and `restart()` on a running one
 * do nothing; calls made at the same time run one after the other; `halt()` and `restart()`
 * after `stop()` are refused.
 */
export interface LocalKafkaBroker extends RunningKafka {
  readonly source: 'local';
  readonly version: string;
  /** The temp directory holding `server.properties`, the data (`data/`) and `broker.log`; removed by `stop()`. */
  readonly dir: string;
  /** True while the broker process runs (from spawn until it has exited). */
  running(): boolean;
  /**
   * Stops the broker process (SIGTERM, then SIGKILL after `haltTimeoutMs`) and keeps its data
   * directory and ports. Resolves once neither port accepts connections any more.
   */
  halt(): Promise<void>;
  /**
   * Starts the broker again with the same `server.properties`: same ports, same data. Resolves
   * once it answers a metadata request with itself as controller, as at the first start.
   *
   * @throws ServiceStartError `port` when something else took one of its ports meanwhile,
   *   `broker` when it exits during start-up, `timeout` when it does not answer in time.
   */
  restart(): Promise<void>;
}

/**
 * Settings fit for tests: one node, replication factor 1, no initial rebalance delay, no
 * topic auto-creation, short minimum session timeouts so tests can provoke rebalances.
 */
const TEST_DEFAULTS: Record<string, string | number | boolean> = {
  'num.partitions': 1,
  'default.replication.factor': 1,
  'offsets.topic.replication.factor': 1,
  'offsets.topic.num.partitions': 4,
  'transaction.state.log.replication.factor': 1,
  'transaction.state.log.min.isr': 1,
  'transaction.state.log.num.partitions': 4,
  'group.initial.rebalance.delay.ms': 0,
  'group.min.session.timeout.ms': 1000,
  'auto.create.topics.enable': false,
  'delete.topic.enable': true,
  'log.retention.hours': 24,
  'message.max.bytes': 1048588,
};

/** A Kafka cluster id: 16 random bytes in URL-safe base64, not starting with "-". */
function clusterId(): string {
  for (;;) {
    const id = randomBytes(16).toString('base64url');
    if (!id.startsWith('-')) return id;
  }
}

const LOG4J = `log4j.rootLogger=WARN, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaRaftServer=INFO
`;

async function checkJava(java: string): Promise<void> {
  const result = await runCommand(java, ['-version'], { timeoutMs: 30_000 });
  if (result.error?.code === 'ENOENT') {
    throw new ServiceStartError(
      'java',
      `Java was not found (tried "${java}"). The local Kafka broker needs a Java 17+ runtime: install one (apt-get install openjdk-17-jre-headless) or set JAVA_HOME, or set KAFKA_BROKERS to a running broker.`,
      result.error,
    );
  }
  const match = /version "(\d+)/.exec(result.output);
  if (result.code !== 0 || match === null || Number(match[1]) < 11) {
    throw new ServiceStartError('java', `"${java} -version" did not report Java 11 or newer:\n${tail(result.output, 5)}\nInstall Java 17+ or set JAVA_HOME.`);
  }
}

async function waitForMetadata(brokers: string[], child: ChildProcess, deadline: number, logFile: string): Promise<void> {
  const kafka = new Kafka({ clientId: 'effectively-testkit-probe', brokers, logLevel: logLevel.NOTHING, retry: { retries: 0 }, connectionTimeout: 1000 });
  let lastError: unknown;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new ServiceStartError('broker', `The Kafka broker exited during start-up (code ${String(child.exitCode)}, signal ${String(child.signalCode)}). Broker log:\n${tail(readLog(logFile))}`);
    }
    const admin = kafka.admin();
    try {
      await admin.connect();
      const cluster = await admin.describeCluster();
      if (cluster.brokers.length > 0 && cluster.controller !== null) return;
    } catch (error) {
      lastError = error;
    } finally {
      await admin.disconnect().catch(() => undefined);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new ServiceStartError('timeout', `The Kafka broker did not answer a metadata request in time (last error: ${String(lastError)}). Broker log:\n${tail(readLog(logFile))}`);
}

function readLog(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '(no log)';
  }
}

/** True when something accepts TCP connections on 127.0.0.1:`port`. */
function accepting(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1' });
    const done = (result: boolean): void => {
      socket.destroy();
      resolve(result);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/** Resolves once none of `ports` accepts connections; throws after `timeoutMs`. */
async function waitForPortsClosed(ports: number[], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const open = [];
    for (const port of ports) if (await accepting(port)) open.push(port);
    if (open.length === 0) return;
    if (Date.now() > deadline) throw new Error(`The halted Kafka broker's port ${open.join(', ')} on 127.0.0.1 still accepts connections after ${timeoutMs} ms.`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Starts a single-node Apache Kafka broker (KRaft, combined broker+controller) from the
 * official Maven Central artifacts, on 127.0.0.1, in a fresh temp directory. Resolves once it
 * answers a metadata request. `halt()`/`restart()` take it down and bring it back on the same
 * ports and data; `stop()` shuts it down for good and removes its data. Like every server this
 * kit starts, it runs under a guardian and dies with this process, also after a restart.
 *
 * @throws ServiceStartError naming the missing piece: `java`, `maven`, `port`, `broker`, `timeout`.
 */
export async function startLocalBroker(options: LocalBrokerOptions = {}): Promise<LocalKafkaBroker> {
  const started = Date.now();
  const version = options.kafkaVersion ?? DEFAULT_KAFKA_VERSION;
  const java = options.javaCommand ?? (process.env['JAVA_HOME'] ? path.join(process.env['JAVA_HOME'], 'bin', 'java') : 'java');
  await checkJava(java);
  const classpath = await resolveKafkaClasspath(options);
  const port = options.port ?? (await freePort());
  if (await portInUse(port)) {
    throw new ServiceStartError('port', `Port ${port} on 127.0.0.1 is already taken, so the Kafka broker cannot listen there. Stop what uses it or choose another port (or omit the port to get a free one).`);
  }
  let controllerPort = await freePort();
  while (controllerPort === port) controllerPort = await freePort();

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'effectively-kafka-'));
  const dataDir = path.join(dir, 'data');
  const properties: Record<string, string | number | boolean> = {
    'process.roles': 'broker,controller',
    'node.id': 1,
    'controller.quorum.voters': `1@127.0.0.1:${controllerPort}`,
    listeners: `PLAINTEXT://127.0.0.1:${port},CONTROLLER://127.0.0.1:${controllerPort}`,
    'advertised.listeners': `PLAINTEXT://127.0.0.1:${port}`,
    'controller.listener.names': 'CONTROLLER',
    'listener.security.protocol.map': 'PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT',
    'inter.broker.listener.name': 'PLAINTEXT',
    'log.dirs': dataDir,
    ...TEST_DEFAULTS,
    ...options.brokerProperties,
  };
  const propsFile = path.join(dir, 'server.properties');
  fs.writeFileSync(propsFile, Object.entries(properties).map(([k, v]) => `${k}=${String(v)}`).join('\n') + '\n');
  const log4jFile = path.join(dir, 'log4j.properties');
  fs.writeFileSync(log4jFile, LOG4J);
  const jvmArgs = [`-Xmx${options.heap ?? '768m'}`, '-Xms256m', '-XX:+UseSerialGC', '-Djava.awt.headless=true', `-Dlog4j.configuration=file:${log4jFile}`, '-cp', classpath];

  const removeDir = (): void => fs.rmSync(dir, { recursive: true, force: true });
  const format = await runCommand(java, [...jvmArgs, 'kafka.tools.StorageTool', 'format', '-t', clusterId(), '-c', propsFile], { timeoutMs: 120_000 });
  if (format.code !== 0) {
    removeDir();
    throw new ServiceStartError('broker', `Formatting the KRaft log directory failed (exit ${String(format.code)}):\n${tail(format.output)}`);
  }

  const brokers = [`127.0.0.1:${port}`];
  const logFile = path.join(dir, 'broker.log');
  const haltTimeoutMs = options.haltTimeoutMs ?? 15_000;
  /** The broker process of the current run; undefined while halted. */
  let server: GuardedProcess | undefined;
  let stopped = false;
  const refuseAfterStop = (what: string): void => {
    if (stopped) throw new ServiceStartError('broker', `Cannot ${what} the local Kafka broker at ${brokers.join(',')}: it was stopped for good (stop() removed its data). Start a new one.`);
  };

  /** Spawns the broker on the formatted directory and waits until it answers; kills it when it does not. */
  const launch = async (): Promise<void> => {
    const logFd = fs.openSync(logFile, 'a');
    const proc = spawnGuarded(java, [...jvmArgs, 'kafka.Kafka', propsFile], { stdio: ['ignore', logFd, logFd], stopSignal: 'TERM' });
    fs.closeSync(logFd);
    server = proc;
    try {
      await waitForMetadata(brokers, proc.child, Date.now() + (options.startTimeoutMs ?? 60_000), logFile);
    } catch (error) {
      await proc.kill();
      if (server === proc) server = undefined;
      throw error;
    }
  };
  const running = (): boolean => server !== undefined && !server.exited();
  /** Stops the current process, if any (SIGTERM, SIGKILL after `graceMs`). */
  const down = async (graceMs: number): Promise<void> => {
    const current = server;
    server = undefined;
    if (current !== undefined) await current.stop(graceMs);
  };

  // halt() and restart() run one at a time, in call order.
  let queue: Promise<void> = Promise.resolve();
  const serial = (fn: () => Promise<void>): Promise<void> => {
    const run = queue.then(fn);
    queue = run.catch(() => undefined);
    return run;
  };

  const halt = (): Promise<void> =>
    serial(async () => {
      refuseAfterStop('halt');
      await down(haltTimeoutMs);
      await waitForPortsClosed([port, controllerPort], 10_000);
    });

  const restart = (): Promise<void> =>
    serial(async () => {
      refuseAfterStop('restart');
      if (running()) return;
      server = undefined; // exited on its own (e.g. killed from outside): start it again
      const taken = [];
      for (const p of [port, controllerPort]) if (await portInUse(p)) taken.push(p);
      if (taken.length > 0) {
        throw new ServiceStartError('port', `Cannot restart the Kafka broker: port ${taken.join(', ')} on 127.0.0.1 was taken by something else while it was halted.`);
      }
      refuseAfterStop('restart');
      fs.appendFileSync(logFile, `\n[effectively-testkit] restart at ${new Date().toISOString()}\n`);
      try {
        await launch();
      } catch (error) {
        if (stopped) throw new ServiceStartError('broker', `The local Kafka broker at ${brokers.join(',')} was stopped while it restarted.`, error);
        throw error;
      }
    });

  const stop = once(async () => {
    stopped = true;
    // Stop a restart in flight at once (its wait then fails), then let queued calls settle.
    await down(20_000);
    await queue;
    await down(20_000);
    removeDir();
  });

  try {
    await launch();
  } catch (error) {
    await stop();
    throw error;
  }
  return { brokers, source: 'local', version, startupMs: Date.now() - started, dir, running, halt, restart, stop };
}
