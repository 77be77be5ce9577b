import { spawn } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';
import { eventually, listening } from './support/net';

describe('no process is left behind', () => {
  it('kills the broker and Postgres when the process that started them is SIGKILLed', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(__dirname, 'fixtures', 'start-services.ts')], { stdio: ['ignore', 'pipe', 'inherit'] });
    const line = await new Promise<string>((resolve, reject) => {
      readline.createInterface({ input: child.stdout }).once('line', resolve);
      child.once('exit', (code) => reject(new Error(`fixture exited early with ${String(code)}`)));
    });
    const { brokers, url } = JSON.parse(line) as { brokers: string[]; url: string };
    const kafkaPort = Number(brokers[0]?.split(':')[1]);
    const pgPort = Number(new URL(url).port);
    expect(await listening(kafkaPort)).toBe(true);
    expect(await listening(pgPort)).toBe(true);

    child.kill('SIGKILL');
    expect(await eventually(async () => !(await listening(kafkaPort)) && !(await listening(pgPort)), 30_000)).toBe(true);
  });
});
