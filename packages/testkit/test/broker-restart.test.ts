import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { ServiceStartError } from '@effectively/core';
import { createTopics, produceMessages, readTopic, startLocalBroker, testKafka, type LocalKafkaBroker } from '../src';
import { eventually, listening } from './support/net';

const portOf = (brokers: string[]): number => Number(brokers[0]?.split(':')[1]);

// A private broker, not the run-wide one: halting that would break every other test file.
describe('a local broker halted and restarted (a broker outage)', () => {
  let broker: LocalKafkaBroker | undefined;
  const started = (): LocalKafkaBroker => {
    if (broker === undefined) throw new Error('the broker did not start');
    return broker;
  };

  beforeAll(async () => {
    broker = await startLocalBroker({ heap: '384m' });
  });
  afterAll(async () => {
    await broker?.stop();
  });

  it('comes back on the same port with the messages produced before the halt', async () => {
    const kafka = started();
    const brokers = [...kafka.brokers];
    const port = portOf(brokers);
    const client = testKafka(brokers);
    const [topic] = (await createTopics(client, [{ prefix: 'outage' }])) as [string];
    // A producer that lives through the outage, as the relay's does.
    const producer = client.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    try {
      await produceMessages(producer, topic, [{ key: 'k', value: 'before halt' }]);

      await kafka.halt();
      expect(kafka.running()).toBe(false);
      expect(await listening(port)).toBe(false);
      await kafka.halt(); // halting a halted broker does nothing
      expect(fs.existsSync(path.join(kafka.dir, 'data'))).toBe(true);

      await kafka.restart();
      expect(kafka.running()).toBe(true);
      expect(kafka.brokers).toEqual(brokers);
      expect(await listening(port)).toBe(true);
      await kafka.restart(); // restarting a running broker does nothing

      await produceMessages(producer, topic, [{ key: 'k', value: 'after restart' }]);
    } finally {
      await producer.disconnect();
    }
    const read = await readTopic(client, topic);
    expect(read.map((m) => m.value?.toString())).toEqual(['before halt', 'after restart']);
    expect(read.map((m) => m.offset)).toEqual(['0', '1']);
  });

  it('runs calls made at the same time one after the other', async () => {
    const kafka = started();
    await Promise.all([kafka.halt(), kafka.halt(), kafka.restart(), kafka.restart()]);
    expect(kafka.running()).toBe(true);
    const admin = testKafka(kafka.brokers).admin();
    await admin.connect();
    try {
      expect((await admin.describeCluster()).brokers).toHaveLength(1);
    } finally {
      await admin.disconnect();
    }
  });

  it('stops for good after a halt: directory removed, halt and restart refused', async () => {
    const kafka = started();
    await kafka.halt();
    await kafka.stop();
    expect(fs.existsSync(kafka.dir)).toBe(false);
    expect(await listening(portOf(kafka.brokers))).toBe(false);
    await expect(kafka.restart()).rejects.toThrow(ServiceStartError);
    await expect(kafka.halt()).rejects.toThrow(/stopped for good/);
    await kafka.stop(); // idempotent
  });
});

/** Whether a running process has `text` in its command line (the broker's has its temp directory). */
function processUses(text: string): boolean {
  for (const pid of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue;
    try {
      if (fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(text)) return true;
    } catch {
      /* gone meanwhile */
    }
  }
  return false;
}

describe('a restarted broker still dies with the process that started it', () => {
  it('is gone when that process is SIGKILLed after a halt and restart', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(__dirname, 'fixtures', 'restart-broker.ts')], { stdio: ['ignore', 'pipe', 'inherit'] });
    const line = await new Promise<string>((resolve, reject) => {
      readline.createInterface({ input: child.stdout }).once('line', resolve);
      child.once('exit', (code) => reject(new Error(`fixture exited early with ${String(code)}`)));
    });
    const { brokers, dir } = JSON.parse(line) as { brokers: string[]; dir: string };
    const port = portOf(brokers);
    try {
      expect(await listening(port)).toBe(true);

      child.kill('SIGKILL');
      expect(await eventually(async () => !(await listening(port)), 30_000)).toBe(true);
    } finally {
      child.kill('SIGKILL');
      // Nobody is left to remove the killed fixture's temp directory. The port closes before the
      // JVM has finished its shutdown (it still writes into the data directory): wait for it to exit.
      await eventually(async () => !processUses(dir), 30_000);
      fs.rmSync(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 200 });
    }
  });
});
