/**
 * What a run shows: the per-stage table (printed and in `table.md`), `results.json`, the retention plot and the
 * image grids, all under the output folder.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { labeledGrid, lineChart } from '../../scripts/base-model/figures';
import { pngOf } from './concepts';

/** naive: sequential DreamBooth-LoRA with class priors; big: the platform's metamodel; alone: each concept from the base model. */
export const ARMS = ['naive', 'big', 'alone'] as const;
export type Arm = (typeof ARMS)[number];

export interface StageResult {
  /** 1-based: the stage that taught `concept`. */
  k: number;
  concept: string;
  /** Each arm's score of every concept it knows now (`alone`: only this stage's concept, trained by itself). */
  scores: Record<Arm, Record<string, number>>;
  /** Prior integrity of each arm's model after this stage (`alone`: the model of this concept alone). */
  prior: Record<Arm, number>;
  /** Composition scores by `subject + style` (naive and big; alone models know one concept each). */
  composition: Partial<Record<Arm, Record<string, number>>>;
  /** Seconds each arm trained this stage: the platform's job (class images it lacked included) or the in-process run. */
  trainSeconds: Record<Arm, number>;
  evaluationSeconds: number;
}

export interface Results {
  options: Record<string, unknown>;
  encoder: { classes: number; heldOutAccuracy: number; heldOutImages: number; trainImages: number; styleAccuracy: number; seconds: number };
  /** Concepts in teaching order with their identifiers. */
  concepts: { name: string; kind: string; category: string; token: string; images: number }[];
  /** The base model's score of each concept's prompt (its token untrained): the floor. */
  base: Record<string, number>;
  stages: StageResult[];
}

/** Score now / score right after it was learned, for a concept learned at stage `learnedAt` (undefined when that score is not positive). */
export function retention(results: Results, arm: Exclude<Arm, 'alone'>, concept: string, learnedAt: number, now: number): number | undefined {
  const first = results.stages[learnedAt - 1].scores[arm][concept];
  const current = results.stages[now - 1].scores[arm][concept];
  return first > 0 ? current / first : undefined;
}

/** Mean retention at stage `k` over the concepts learned before it (the newest is 1 by definition); undefined at k = 1. */
export function meanRetention(results: Results, arm: Exclude<Arm, 'alone'>, k: number): number | undefined {
  const values = results.concepts.slice(0, k - 1).map((c, i) => retention(results, arm, c.name, i + 1, k)).filter((r): r is number => r !== undefined);
  return values.length ? values.reduce((a, b) => a + b, 0) / values.length : undefined;
}

const f3 = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? 'n/a' : x.toFixed(3));
const f2 = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? 'n/a' : x.toFixed(2));

/** The table after stage `k`, as Markdown (readable printed too). */
export function stageTable(results: Results, k: number): string {
  const stage = results.stages[k - 1];
  const taught = results.concepts[k - 1];
  const lines = [
    `### Stage ${k} of ${results.options.k}: learned ${taught.name} (\`${taught.token} ${taught.category}\`)`,
    '',
    `Training seconds this stage: alone ${stage.trainSeconds.alone.toFixed(1)}, naive ${stage.trainSeconds.naive.toFixed(1)}, `
      + `big ${stage.trainSeconds.big.toFixed(1)}; evaluation ${stage.evaluationSeconds.toFixed(1)}.`,
    '',
    '| concept | score | base | alone | naive (retention) | big (retention) |',
    '|---|---|---|---|---|---|',
  ];
  results.concepts.slice(0, k).forEach((c, i) => {
    const alone = results.stages[i].scores.alone[c.name];
    const cell = (arm: 'naive' | 'big') => `${f3(stage.scores[arm][c.name])} (${f2(retention(results, arm, c.name, i + 1, k))})`;
    lines.push(`| ${c.name} \`${c.token}\` | ${c.kind === 'subject' ? 'identity' : 'style'} | ${f3(results.base[c.name])} | ${f3(alone)} | ${cell('naive')} | ${cell('big')} |`);
  });
  lines.push(`| **mean retention** (${k > 1 ? `concepts 1-${k - 1}` : 'none learned before'}) | | | | ${f2(meanRetention(results, 'naive', k))} | ${f2(meanRetention(results, 'big', k))} |`);
  lines.push(`| prior integrity | | 1.000 | ${f3(stage.prior.alone)} | ${f3(stage.prior.naive)} | ${f3(stage.prior.big)} |`);
  for (const pair of Object.keys(stage.composition.big ?? {})) {
    lines.push(`| composition: ${pair} | mean | | | ${f3(stage.composition.naive?.[pair])} | ${f3(stage.composition.big?.[pair])} |`);
  }
  return lines.join('\n');
}

const COLORS: Record<Exclude<Arm, 'alone'>, string> = { naive: '#c0392b', big: '#2471a3' };

/** results.json, table.md (every stage so far) and, from stage 2 on, retention.png. */
export async function writeReport(out: string, results: Results): Promise<void> {
  await writeFile(join(out, 'results.json'), `${JSON.stringify(results, null, 2)}\n`);
  const header = [
    '# Forgetting benchmark: tables after each stage',
    '',
    `Options: ${JSON.stringify(results.options)}`,
    '',
    `Encoder: ${results.encoder.classes} subcategories, held-out top-1 accuracy ${(100 * results.encoder.heldOutAccuracy).toFixed(1)} % `
      + `(${results.encoder.heldOutImages} images of subjects it never saw); style descriptor's nearest-centroid accuracy over `
      + `noto, twemoji and the four transformed styles ${(100 * results.encoder.styleAccuracy).toFixed(1)} % (chance 16.7 %).`,
    '',
  ];
  await writeFile(join(out, 'table.md'), `${[...header, ...results.stages.map((s) => `${stageTable(results, s.k)}\n`)].join('\n')}`);
  const points = (arm: 'naive' | 'big') => results.stages
    .map((s): [number, number | undefined] => [s.k, meanRetention(results, arm, s.k)])
    .filter((p): p is [number, number] => p[1] !== undefined && Number.isFinite(p[1]));
  const series = (['naive', 'big'] as const).map((arm) => ({ label: arm === 'big' ? 'BIG metamodel (platform)' : 'naive sequential DreamBooth', color: COLORS[arm], points: points(arm) }));
  if (series.every((s) => s.points.length > 0)) {
    await writeFile(join(out, 'retention.png'), await lineChart(series, {
      title: 'Mean retention of earlier concepts (score now / score when learned)', xLabel: 'stage k', yLabel: 'mean retention', linearY: true,
    }));
  }
}

export interface GridRow {
  label: string;
  images: Uint8Array[];
}

/** A labelled grid of 64 px RGB byte images. */
export async function writeGrid(path: string, title: string, rows: readonly GridRow[]): Promise<void> {
  const pngRows = await Promise.all(rows.map(async (row) => ({ label: row.label, images: await Promise.all(row.images.map(pngOf)) })));
  await writeFile(path, await labeledGrid(pngRows, { cell: 64, labelWidth: 420, title }));
}
