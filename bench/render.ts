// Re-renders bench/results/latest.{md,svg} from latest.json (or the JSON file given) without re-running.
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { markdown, svg, type BenchReport } from './report';

const dir = path.join(__dirname, 'results');
const report = JSON.parse(readFileSync(process.argv[2] ?? path.join(dir, 'latest.json'), 'utf8')) as BenchReport;
writeFileSync(path.join(dir, 'latest.md'), markdown(report));
writeFileSync(path.join(dir, 'latest.svg'), svg(report));
process.stdout.write(markdown(report));
