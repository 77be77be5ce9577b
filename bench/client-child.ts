// One run of one variant of the client comparison, in a process of its own (started by
// inChild() in bench/variants.ts under Node 22): the variant from BENCH_VARIANT (a
// ChildVariantSpec), the context (the parent's BenchContext without its pool) as JSON on stdin.
// Prints `measurement <json>` and exits 0; on failure says why on stderr and exits 1.
import { text } from 'node:stream/consumers';
import { createDatabase } from '@effectively/core';
import { variantOf, type BenchContext, type ChildVariantSpec } from './variants';

async function main(): Promise<void> {
  const spec = JSON.parse(process.env['BENCH_VARIANT'] ?? '') as ChildVariantSpec;
  const raw = JSON.parse(await text(process.stdin)) as Omit<BenchContext, 'database' | 'lastOffsets'> & { lastOffsets: Array<[number, string]> };
  const database = createDatabase({ connectionString: raw.databaseUrl, max: raw.concurrency + 4, applicationName: 'bench-client-child' });
  try {
    const measurement = await variantOf(spec).run({ ...raw, database, lastOffsets: new Map(raw.lastOffsets) });
    process.stdout.write(`measurement ${JSON.stringify(measurement)}\n`);
  } finally {
    await database.destroy();
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write(`bench client child failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(1);
  },
);
