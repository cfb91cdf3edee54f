// Summarise the StrykerJS JSON report (reports/mutation-js/mutation.json, `make mutate-js`): the score
// per file and, with --survivors, every surviving mutant as file:line mutator → replacement.
//   node scripts/mutation-js-summary.mjs [--survivors] [report.json]
import { readFileSync } from 'node:fs';

const args = process.argv.slice(2);
const survivors = args.includes('--survivors');
const path = args.find((a) => !a.startsWith('--')) ?? 'reports/mutation-js/mutation.json';
const report = JSON.parse(readFileSync(path, 'utf8'));

const DETECTED = new Set(['Killed', 'Timeout']);
const rows = [];
const total = { mutants: 0, killed: 0, timeout: 0, survived: 0, other: 0 };
for (const [file, { mutants }] of Object.entries(report.files).sort(([a], [b]) => a.localeCompare(b))) {
  const row = { file, mutants: 0, killed: 0, timeout: 0, survived: 0, other: 0 };
  for (const m of mutants) {
    if (m.status === 'CompileError' || m.status === 'Ignored') continue;
    row.mutants += 1;
    if (m.status === 'Killed') row.killed += 1;
    else if (m.status === 'Timeout') row.timeout += 1;
    else if (m.status === 'Survived' || m.status === 'NoCoverage') row.survived += 1;
    else row.other += 1;
  }
  rows.push(row);
  for (const k of Object.keys(total)) total[k] += row[k];
}
const pct = (r) => (r.mutants ? (100 * (r.killed + r.timeout) / r.mutants).toFixed(1) : '—');
console.log('| file | mutants | killed | timeout | survived | score |');
console.log('|---|---|---|---|---|---|');
for (const r of rows) console.log(`| \`${r.file}\` | ${r.mutants} | ${r.killed} | ${r.timeout} | ${r.survived} | ${pct(r)} % |`);
console.log(`| **all** | ${total.mutants} | ${total.killed} | ${total.timeout} | ${total.survived} | ${pct(total)} % |`);

if (survivors) {
  console.log('');
  for (const [file, { mutants, source }] of Object.entries(report.files).sort(([a], [b]) => a.localeCompare(b))) {
    const lines = source.split('\n');
    for (const m of mutants.filter((x) => !DETECTED.has(x.status) && x.status !== 'Ignored' && x.status !== 'CompileError')
      .sort((a, b) => a.location.start.line - b.location.start.line || a.location.start.column - b.location.start.column)) {
      const { line, column } = m.location.start;
      const original = lines[line - 1].trim().slice(0, 100);
      console.log(`${file}:${line}:${column} ${m.mutatorName} → ${JSON.stringify((m.replacement ?? '').slice(0, 80))}   [${original}]`);
    }
  }
}
