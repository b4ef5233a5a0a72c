/**
 * The forgetting benchmark's run: K concepts taught one after another to three arms with the same method (LoRA or
 * full fine-tuning), steps, learning rate, rank, batch and seed per stage (stage k trains with seed `seed + k`),
 * scored after every stage.
 * - alone: a PRIVATE fine-tune through the platform's API, from the base model (the upper bound);
 * - big: a contribution to one PRIVATE_META metamodel through the API: the worker's own BIG split and replay;
 * - naive: plain DreamBooth continuing from the previous stage's weights, in process with the engine's
 *   `trainDreamBooth` (what the worker calls) and the platform's own class images of the category (its non-meta split).
 * Resumable: `state.json` in the work folder records each finished stage and the jobs in flight; the platform's
 * database and bucket live there too, and the naive arm's weights after each stage.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  EngineWorker, FolderPackSource, imageGeometry, loadStableDiffusionFrom, loadTrainingPicture, parseLoraFile, parseUNetWeights, serializeLora,
  serializeUNet, trainDreamBooth, Txt2ImgPipeline, type StableDiffusionModels,
} from '../../src/engine';
import { pickIdentifier } from '../../src/services/identifiers';
import { readEmojiDataset } from '../../scripts/base-model/emoji-records';
import { buildConcepts, pngOf } from './concepts';
import { Encoder, loadEncoder, saveEncoder, trainEncoder } from './encoder';
import { BenchPlatform, type ForgettingMethod, type StartedFineTune, type TrainingSettings } from './platform';
import { type Arm, type GridRow, meanRetention, type Results, type StageResult, stageTable, writeGrid, writeReport } from './report';
import { type ArmWeights, Scorer, type Taught } from './scores';

export interface ForgettingOptions {
  /** The base model: a diffusers pack folder. */
  pack: string;
  /** The emoji dataset (`npm run train:base:data`). */
  data: string;
  /** Platform data, encoder, the naive arm's weights and state: what a resumed run continues from. */
  work: string;
  /** Tables, plot and grids. */
  out: string;
  method: ForgettingMethod;
  k: number;
  steps: number;
  learningRate: number;
  /** LoRA only: a full fine-tune ignores it. */
  rank: number;
  batchSize: number;
  seed: number;
  /** Generated images per concept prompt. */
  images: number;
  sampleSteps: number;
  guidance: number;
  encoderSteps: number;
  log?: (line: string) => void;
}

/**
 * What must match for a work folder to be continued: the options, and the pack's content (retrained weights keep its
 * folder name). A LoRA run's is what it was before full fine-tuning came (its work folders and results.json's options
 * stay as they were); a full run's names its method and leaves out the rank it ignores.
 */
async function fingerprint({ log: _log, out: _out, work: _work, method, ...rest }: ForgettingOptions): Promise<string> {
  const hash = createHash('sha256');
  for (const file of (await readdir(rest.pack, { recursive: true })).sort()) {
    const path = join(rest.pack, file);
    if ((await stat(path)).isFile()) hash.update(file).update(await readFile(path));
  }
  const { rank: _rank, ...full } = rest;
  return JSON.stringify({ ...(method === 'lora' ? rest : { ...full, method }), packSha256: hash.digest('hex') });
}

interface Pending {
  alone?: StartedFineTune;
  big?: StartedFineTune;
  aloneSeconds?: number;
  bigSeconds?: number;
  naiveSeconds?: number;
}

interface State {
  fingerprint: string;
  baseModelId: string;
  metamodelId: string;
  tokens: string[];
  base?: Record<string, number>;
  stages: StageResult[];
  pending?: Pending;
}

const STATE = 'state.json';

export async function runForgetting(options: ForgettingOptions): Promise<Results> {
  const log = options.log ?? ((line: string) => console.log(`[forgetting] ${line}`));
  await mkdir(options.work, { recursive: true });
  await mkdir(options.out, { recursive: true });
  const data = await readEmojiDataset(options.data);
  const concepts = await buildConcepts(data, options.k);
  const models = await loadStableDiffusionFrom(new FolderPackSource(options.pack));
  const resolution = imageGeometry(models).nativeSize;
  const engine = new EngineWorker();
  const platform = await BenchPlatform.start(join(options.work, 'platform'));
  const pipeline = new Txt2ImgPipeline(models, engine);
  let encoder: Encoder | undefined;
  try {
    const statePath = join(options.work, STATE);
    const saved = existsSync(statePath) ? (JSON.parse(await readFile(statePath, 'utf8')) as State) : undefined;
    const expected = await fingerprint(options);
    if (saved && saved.fingerprint !== expected) {
      throw new Error(`${options.work} holds a run with other options (${saved.fingerprint}); pick another --work or delete it`);
    }
    const state: State = saved ?? await (async () => {
      const baseModelId = await platform.registerPack(options.pack, 'forgetting-base');
      const taken = new Set<string>();
      // The platform's identifier service, as a metamodel hands them out: the rarest free token for each concept.
      const tokens = concepts.map((c) => {
        const token = pickIdentifier(models.tokenizer, c.category, taken);
        taken.add(token);
        return token;
      });
      return { fingerprint: expected, baseModelId, metamodelId: await platform.createMetamodel(baseModelId, 'forgetting'), tokens, stages: [] };
    })();
    const save = () => writeFile(statePath, `${JSON.stringify(state, null, 2)}\n`);
    await save();
    const taught: Taught[] = concepts.map((concept, i) => ({ concept, token: state.tokens[i] }));
    // Idempotency keys of this run's fine-tunes: its metamodel is its own, so runs that share a platform folder never collide.
    const runKey = `${state.metamodelId}:`;

    const trained = await (async () => {
      const path = join(options.work, 'encoder.json');
      if (existsSync(path)) return loadEncoder(path);
      log(`training the encoder (${options.encoderSteps} steps)`);
      const fresh = await trainEncoder(engine, data, { steps: options.encoderSteps, learningRate: 2e-3, seed: options.seed }, log);
      await saveEncoder(path, fresh);
      return fresh;
    })();
    log(`encoder: held-out top-1 ${(100 * trained.heldOutAccuracy).toFixed(1)} % over ${trained.classes} subcategories (subjects it never saw); style check ${(100 * trained.styleAccuracy).toFixed(1)} %`);
    encoder = await Encoder.open(engine, trained);
    const heldIn = data.records.flatMap((r, i) => (r.heldOut ? [] : [i])).filter((_, i) => i % 4 === 0);
    await encoder.centerOn(heldIn.map((i) => data.images.subarray(i * 64 * 64 * 3, (i + 1) * 64 * 64 * 3)));
    const scorer = new Scorer(pipeline, encoder, { images: options.images, steps: options.sampleSteps, guidance: options.guidance, seed: options.seed });

    const basePrior = await scorer.prior(undefined);
    if (!state.base) {
      state.base = {};
      for (const t of taught) state.base[t.concept.name] = (await scorer.concept(t, undefined)).score;
      await save();
      await writeGrid(join(options.out, 'concepts.png'), 'Training images of each concept, in teaching order', taught.map((t) => ({
        label: `${t.concept.name}: a ${t.token} ${t.concept.category}`, images: t.concept.images,
      })));
    }

    const results = (): Results => ({
      options: JSON.parse(state.fingerprint) as Record<string, unknown>,
      encoder: { ...trained, weights: undefined } as Results['encoder'],
      concepts: taught.map((t) => ({ name: t.concept.name, kind: t.concept.kind, category: t.concept.category, token: t.token, images: t.concept.images.length })),
      base: state.base!,
      stages: state.stages,
    });

    const readNaive = async (stage: number) => readWeights(options.method, models, new Uint8Array(await readFile(join(options.work, `naive-${stage}.safetensors`))));
    let naive = state.stages.length ? await readNaive(state.stages.length) : undefined;
    for (let k = state.stages.length + 1; k <= options.k; k++) {
      const t = taught[k - 1];
      const settings: TrainingSettings = { method: options.method, steps: options.steps, learningRate: options.learningRate, rank: options.rank, seed: options.seed + k, batchSize: options.batchSize };
      const pending = (state.pending ??= {});
      const concept = { token: t.token, category: t.concept.category, kind: t.concept.kind === 'subject' ? 'OBJECT' as const : 'STYLE' as const, images: t.concept.images };
      log(`stage ${k}/${options.k}: ${t.concept.name} as "a ${t.token} ${t.concept.category}"`);

      pending.alone ??= await platform.startFineTune({ baseModelId: state.baseModelId }, concept, settings, `${runKey}alone-${k}`);
      await save();
      pending.aloneSeconds ??= await platform.waitForJob(pending.alone.jobId);
      log(`  alone: ${pending.aloneSeconds.toFixed(1)} s`);
      pending.big ??= await platform.startFineTune({ modelId: state.metamodelId }, concept, settings, `${runKey}big-${k}`);
      await save();
      pending.bigSeconds ??= await platform.waitForJob(pending.big.jobId);
      log(`  big: ${pending.bigSeconds.toFixed(1)} s`);
      const naivePath = join(options.work, `naive-${k}.safetensors`);
      if (!existsSync(naivePath) || pending.naiveSeconds === undefined) {
        const started = performance.now();
        await writeFile(naivePath, await trainNaive(platform, engine, models, state.baseModelId, t, naive, settings, resolution));
        pending.naiveSeconds = (performance.now() - started) / 1000;
        await save();
      }
      naive = await readNaive(k);
      log(`  naive: ${pending.naiveSeconds.toFixed(1)} s`);

      const evaluationStarted = performance.now();
      const arms = { naive, big: await platform.headWeights(state.metamodelId, models), alone: await platform.headWeights(pending.alone.modelId, models) };
      // Each full UNet gets a pipeline while the stage is scored (its sessions serve all its images), then closes.
      const { scores, prior, composition, grid } = await scoreStage(scorer, taught.slice(0, k), arms, basePrior.samples)
        .finally(() => scorer.release());
      state.stages.push({
        k, concept: t.concept.name, scores, prior, composition,
        trainSeconds: { alone: pending.aloneSeconds, big: pending.bigSeconds, naive: pending.naiveSeconds },
        evaluationSeconds: (performance.now() - evaluationStarted) / 1000,
      });
      state.pending = undefined;
      await save();
      await writeReport(options.out, results());
      await writeGrid(join(options.out, `stage-${k}.png`), `After stage ${k}: ${t.concept.name} (score in brackets)`, grid);
      console.log(`\n${stageTable(results(), k)}\n`);
    }
    const final = results();
    const last = final.stages.length;
    log(`mean retention at k = ${last}: naive ${meanRetention(final, 'naive', last)?.toFixed(3) ?? 'n/a'}, big ${meanRetention(final, 'big', last)?.toFixed(3) ?? 'n/a'}`);
    return final;
  } finally {
    await encoder?.close();
    await pipeline.close();
    await platform.stop();
    await engine.close();
  }
}

/**
 * Scores after a stage: naive and big on every concept taught so far (`known`, the newest last), alone on the newest,
 * each arm's prior integrity, and the compositions; with the images of each score for the stage's grid.
 */
async function scoreStage(scorer: Scorer, known: readonly Taught[], arms: Record<Arm, ArmWeights>, basePrior: Uint8Array[]) {
  const newest = known[known.length - 1];
  const grid: GridRow[] = [];
  const scores = { naive: {}, big: {}, alone: {} } as StageResult['scores'];
  for (const arm of ['naive', 'big'] as const) {
    for (const concept of known) {
      const scored = await scorer.concept(concept, arms[arm]);
      scores[arm][concept.concept.name] = scored.score;
      grid.push({ label: `${arm}: ${concept.concept.name} (${scored.score.toFixed(2)})`, images: scored.samples.slice(0, 8) });
    }
  }
  const alone = await scorer.concept(newest, arms.alone);
  scores.alone[newest.concept.name] = alone.score;
  grid.push({ label: `alone: ${newest.concept.name} (${alone.score.toFixed(2)})`, images: alone.samples.slice(0, 8) });
  const prior = {} as Record<Arm, number>;
  grid.push({ label: 'base: prior prompts', images: basePrior });
  for (const arm of ['naive', 'big', 'alone'] as const) {
    const scored = await scorer.prior(arms[arm]);
    prior[arm] = scored.score;
    grid.push({ label: `${arm}: prior prompts (${scored.score.toFixed(2)})`, images: scored.samples });
  }
  const composition: StageResult['composition'] = { naive: {}, big: {} };
  const subjects = known.filter((x) => x.concept.kind === 'subject');
  const styles = known.filter((x) => x.concept.kind === 'style');
  for (const [j, style] of styles.entries()) {
    const subject = subjects[j % subjects.length];
    const pair = `${subject.concept.name} + ${style.concept.name}`;
    for (const arm of ['naive', 'big'] as const) {
      const scored = await scorer.composition(subject, style, arms[arm]);
      composition[arm]![pair] = scored.score;
      grid.push({ label: `${arm}: ${pair} (${scored.score.toFixed(2)})`, images: scored.samples });
    }
  }
  return { scores, prior, composition, grid };
}

/** A naive stage's file: a LoRA, or a full UNet of `models`. */
function readWeights(method: ForgettingMethod, models: StableDiffusionModels, bytes: Uint8Array): ArmWeights {
  return method === 'lora' ? { lora: parseLoraFile(bytes) } : { unet: parseUNetWeights(models, bytes) };
}

/**
 * One naive stage: the concept's images as instance examples, the platform's class images of its category for the
 * whole prior (plain DreamBooth), continuing from the previous stage's weights. Returns the weights file's bytes: a
 * LoRA, or the whole UNet as the worker stores a full fine-tune.
 */
async function trainNaive(
  platform: BenchPlatform, engine: EngineWorker, models: StableDiffusionModels, baseModelId: string, t: Taught,
  previous: ArmWeights | undefined, settings: TrainingSettings, resolution: number,
): Promise<Uint8Array> {
  const prompt = `a ${t.token} ${t.concept.category}`;
  const instance = await Promise.all(t.concept.images.map(async (image) => {
    const picture = await loadTrainingPicture(await pngOf(image), resolution);
    return { image: async () => picture, prompt };
  }));
  const prior = await platform.classImages(engine, models, baseModelId, t.concept.category, settings.steps, resolution);
  const result = await trainDreamBooth(models, {
    instance, prior, method: settings.method === 'lora' ? { kind: 'lora', rank: settings.rank } : { kind: 'full' }, steps: settings.steps,
    learningRate: settings.learningRate, batchSize: settings.batchSize, gradientAccumulation: 1, crop: 'center', flip: false, seed: settings.seed,
    resolution, start: previous,
  }, { worker: engine });
  return result.lora ? serializeLora(result.lora, settings.rank) : serializeUNet(models, result.unet!);
}
