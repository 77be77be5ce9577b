// The generator as a process: plays ad servers that retry, writes the ground truth and the
// budgets to the database, produces the stream and exits. Env: see ../env.ts; EVENTS (default
// 5000), CAMPAIGNS (12), DUPLICATE_RATE (0.2), DELAYED_SHARE (0.5), SEED (42), ROUND_DELAY_MS
// (1500: pause between send rounds, so delayed retries arrive seconds after their original).
import { createDatabase } from '@effectively/core';
import { seededRandom, testKafka } from '@effectively/testkit';
import { numFrom, pipelineEnv, report } from '../env';
import { generateScenario, toMessage } from '../generator';
import { saveGroundTruth } from '../store';

async function main(): Promise<void> {
  const config = pipelineEnv();
  const scenario = generateScenario({
    events: numFrom(process.env, 'EVENTS', 5_000),
    campaigns: numFrom(process.env, 'CAMPAIGNS', 12),
    duplicateRate: numFrom(process.env, 'DUPLICATE_RATE', 0.2),
    delayedShare: numFrom(process.env, 'DELAYED_SHARE', 0.5),
    random: seededRandom(numFrom(process.env, 'SEED', 42)),
  });
  const database = createDatabase({ connectionString: config.databaseUrl, max: 1 });
  try {
    await saveGroundTruth(database.db, config.schema, scenario.truth);
  } finally {
    await database.destroy();
  }
  const { uniqueEvents, messages, duplicates, alerts } = scenario.truth;
  report('truth', { uniqueEvents, messages, duplicates, alerts: alerts.length });
  const producer = testKafka(config.brokers, 'ad-spend-generator').producer();
  await producer.connect();
  try {
    const delay = numFrom(process.env, 'ROUND_DELAY_MS', 1_500);
    let sent = 0;
    let round = 0;
    for (let i = 0; i < scenario.stream.length; ) {
      const current = scenario.stream[i]?.round ?? 0;
      if (current !== round) {
        round = current;
        await new Promise((r) => setTimeout(r, delay));
      }
      const chunk = [];
      while (i < scenario.stream.length && scenario.stream[i]?.round === round && chunk.length < 500) chunk.push(scenario.stream[i++]);
      await producer.send({ topic: config.spendTopic, acks: -1, messages: chunk.flatMap((s) => (s === undefined ? [] : [toMessage(s.event)])) });
      sent += chunk.length;
      report('sent', { sent, of: scenario.stream.length });
    }
  } finally {
    await producer.disconnect();
  }
  report('done', { messages: scenario.stream.length });
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write(`generator failed: ${String(error)}\n`);
    process.exit(1);
  },
);
