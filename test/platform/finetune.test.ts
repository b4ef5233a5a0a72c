import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { classImageKey } from '../../src/services/training-images';
import { hasFixtures } from '../helpers/fixtures';
import { errorCode, followJob, gql, gqlUpload, ok, startTestPlatform, type TestPlatform, type TestUser } from './helpers';
import { createModel, publicMetamodelWithUsers } from './setup';

const START = 'mutation($input: StartFineTuneInput!) { startFineTune(input: $input) { job { id status type fineTune { modelId contributionId rank seed } } } }';
const UPLOAD = 'mutation($file: Upload!) { uploadInstanceImage(file: $file) { id conceptId } }';
const UPDATES = 'subscription($id: ID!) { jobUpdated(jobId: $id) { status step steps loss error } }';

interface Update {
  status: string;
  step: number;
  steps: number;
  loss: number | null;
  error: string | null;
}

const follow = (url: string, key: string, jobId: string) => followJob<Update>(url, key, UPDATES, jobId);

/** A synthetic photo: a coloured square on a background, different per seed. */
async function photo(seed: number, size = 40): Promise<Uint8Array> {
  const inner = await sharp({ create: { width: size / 2, height: size / 2, channels: 3, background: { r: (seed * 70) % 256, g: 40, b: 200 - seed * 30 } } }).png().toBuffer();
  return new Uint8Array(
    await sharp({ create: { width: size, height: size + 8, channels: 3, background: { r: 230, g: 220 - seed * 20, b: 90 } } })
      .composite([{ input: inner, left: (seed * 3) % (size / 2), top: size / 4 }])
      .png()
      .toBuffer(),
  );
}

describe.skipIf(!hasFixtures)('fine-tuning on the tiny-sd15 fixture pack', () => {
  let platform: TestPlatform;
  let url: string;
  let a: TestUser;
  let b: TestUser;
  let baseModelId: string;
  let metaModelId: string;

  const stage = async (key: string, seed: number, size?: number): Promise<string> =>
    (await ok(gqlUpload(url, UPLOAD, {}, { bytes: await photo(seed, size), name: 'p.png', type: 'image/png' }, key))).uploadInstanceImage.id;
  const counts = async () => {
    const [row] = await platform.services.db.query(
      `SELECT (SELECT count(*) FROM model)::int AS models, (SELECT count(*) FROM concept)::int AS concepts,
              (SELECT count(*) FROM contribution)::int AS contributions, (SELECT count(*) FROM job)::int AS jobs,
              (SELECT count(*) FROM instance_image WHERE "conceptId" IS NOT NULL)::int AS claimed`,
    );
    return row;
  };
  const contributionOf = async (jobId: string, key: string) => {
    const job = (await ok(gql(url, 'query($id: ID!) { job(id: $id) { fineTune { contributionId } } }', { id: jobId }, key))).job;
    return (await ok(gql(url, 'query($id: ID!) { contribution(id: $id) { id status resultingVersionId priorSplit conceptId } }', { id: job.fineTune.contributionId }, key))).contribution;
  };

  beforeAll(async () => {
    platform = await startTestPlatform();
    url = platform.url;
    ({ baseModelId, metaModelId, a, b } = await publicMetamodelWithUsers(platform));
  }, 120_000);
  afterAll(() => platform?.stop());

  it('refuses bad requests with typed errors and writes nothing', async () => {
    const mine = await stage(a.key, 1);
    const theirs = await stage(b.key, 2);
    const tiny = await stage(a.key, 3, 16); // under the pack's 32 px training size
    const privateMeta = await createModel(platform, a.key, { kind: 'PRIVATE_META', name: 'm', baseModelId });
    const valid = { target: 'PRIVATE', baseModelId, category: 'dog', kind: 'OBJECT', instanceImageIds: [mine], steps: 2, learningRate: 1e-4, method: 'LORA' };
    const before = await counts();
    const cases: [Record<string, unknown>, string, RegExp?][] = [
      [{ steps: 0 }, 'BAD_USER_INPUT', /steps/],
      [{ steps: 5000 }, 'BAD_USER_INPUT', /steps/],
      [{ learningRate: -1 }, 'BAD_USER_INPUT', /learningRate/],
      [{ method: 'FULL', rank: 4 }, 'BAD_USER_INPUT', /rank/],
      [{ category: 'dog; DROP TABLE' }, 'BAD_USER_INPUT', /category/],
      [{ token: 'dog' }, 'BAD_USER_INPUT', /common word/],
      [{ token: 'lnl' }, 'BAD_USER_INPUT', /single token/],
      [{ instanceImageIds: [] }, 'BAD_USER_INPUT', /instanceImageIds/],
      [{ instanceImageIds: null, fromConceptId: 'not-an-id' }, 'BAD_USER_INPUT', /fromConceptId/],
      [{ instanceImageIds: null, fromConceptId: '00000000-0000-4000-8000-000000000000' }, 'NOT_FOUND'],
      [{ instanceImageIds: [mine, mine] }, 'BAD_USER_INPUT', /repeat/],
      [{ instanceImageIds: [theirs] }, 'NOT_FOUND'],
      [{ instanceImageIds: [tiny] }, 'BAD_USER_INPUT', /smaller than 32x32/],
      [{ baseModelId: null }, 'BAD_USER_INPUT', /baseModelId/],
      [{ modelId: privateMeta }, 'BAD_USER_INPUT', /PRIVATE fine-tune makes a new model/],
      [{ target: 'META', baseModelId: null }, 'BAD_USER_INPUT', /modelId/],
      [{ target: 'META', baseModelId: null, modelId: privateMeta }, 'BAD_USER_INPUT', /PRIVATE_META, not META/],
      [{ target: 'PRIVATE_META', baseModelId: null, modelId: metaModelId }, 'FORBIDDEN'],
      [{ target: 'PRIVATE_META', baseModelId: null, modelId: 'not-an-id' }, 'BAD_USER_INPUT', /modelId/],
    ];
    for (const [change, code, message] of cases) {
      const response = await gql(url, START, { input: { ...valid, ...change } }, a.key);
      expect(errorCode(response), JSON.stringify(change)).toBe(code);
      if (message) expect(response.errors![0].message).toMatch(message);
    }
    expect(errorCode(await gql(url, START, { input: valid }))).toBe('UNAUTHENTICATED');
    const concept = (token?: string) =>
      gql(url, 'mutation($input: CreateConceptInput!) { createConcept(input: $input) { token } }', { input: { modelId: privateMeta, token, category: 'dog', kind: 'OBJECT' } }, a.key);
    expect(errorCode(await concept('dog'))).toBe('BAD_USER_INPUT');
    expect(await counts()).toEqual(before);

    // Concepts made by hand follow the same identifier rules; without a token, the rarest free one.
    const picked = (await ok(concept())).createConcept.token;
    expect(picked).toMatch(/^[^aeiouy]{3}$/);
    expect(errorCode(await concept(picked))).toBe('CONFLICT');
  });

  it('trains a LoRA on a private metamodel, streams the loss, versions it, generates with it, then replays it', async () => {
    const modelId = await createModel(platform, a.key, { kind: 'PRIVATE_META', name: 'pets', baseModelId });
    const photos = [await stage(a.key, 4), await stage(a.key, 5), await stage(a.key, 6)];
    expect((await ok(gql(url, '{ instanceImages { nodes { id } } }', {}, a.key))).instanceImages.nodes.map((i: { id: string }) => i.id)).toEqual(expect.arrayContaining(photos));

    const input = { target: 'PRIVATE_META', modelId, category: 'dog', kind: 'OBJECT', steps: 3, learningRate: 1e-2, method: 'LORA', rank: 2 };
    const first = (await ok(gql(url, START, { input: { ...input, instanceImageIds: photos } }, a.key))).startFineTune.job;
    expect(first).toMatchObject({ status: 'QUEUED', type: 'FINETUNE' });
    const updates = await follow(url, a.key, first.id);
    expect(updates.at(-1)).toMatchObject({ status: 'SUCCEEDED', step: 3, steps: 3, error: null });
    const losses = updates.filter((u) => u.status === 'RUNNING' && u.step > 0).map((u) => u.loss);
    expect(losses.length).toBeGreaterThan(0);
    for (const loss of losses) expect(Number.isFinite(loss) && loss! > 0).toBe(true);
    // The whole series stays with the finished job, each step's loss as it was streamed.
    const kept = (await ok(gql(url, 'query($id: ID!) { job(id: $id) { lossHistory { step loss } } }', { id: first.id }, a.key))).job.lossHistory;
    expect(kept.map((p: { step: number }) => p.step)).toEqual([1, 2, 3]);
    for (const u of updates.filter((u) => u.status === 'RUNNING' && u.step > 0)) expect(kept[u.step - 1].loss).toBeCloseTo(u.loss!, 5);

    const c1 = await contributionOf(first.id, a.key);
    expect(c1.status).toBe('MERGED');
    // Nothing learned before: all three prior images are generated dogs, cached for everyone.
    expect(c1.priorSplit).toEqual({ parts: [{ source: 'class', category: 'dog', images: 3 }], warnings: [] });
    for (let i = 0; i < 3; i++) expect(await platform.services.store.exists(classImageKey(baseModelId, 'dog', i))).toBe(true);
    const concept = (await ok(gql(url, 'query($id: ID!) { concept(id: $id) { token category } }', { id: c1.conceptId }, a.key))).concept;
    expect(concept.category).toBe('dog');
    expect(concept.token).toMatch(/^[^aeiouy]{3}$/);

    const history = (await ok(gql(url, 'query($m: ID!) { modelVersions(modelId: $m) { nodes { id number method parentVersionId contributionId } } model(id: $m) { headVersion { id } } }', { m: modelId }, a.key)));
    expect(history.modelVersions.nodes).toEqual([{ id: c1.resultingVersionId, number: 1, method: 'LORA', parentVersionId: null, contributionId: c1.id }]);
    expect(history.model.headVersion.id).toBe(c1.resultingVersionId);

    // Generation runs on the new head: the LoRA changes the picture of the same seed.
    const generate = async (versionId?: string, on = modelId) => {
      const job = (await ok(gql(url, 'mutation($input: GenerateImagesInput!) { generateImages(input: $input) { id } }', {
        input: { modelId: on, versionId, prompt: `a ${concept.token} dog`, steps: 2, seed: 7, scheduler: 'DDIM' },
      }, a.key))).generateImages;
      expect((await follow(url, a.key, job.id)).at(-1)).toMatchObject({ status: 'SUCCEEDED' });
      const [row] = await platform.services.db.query('SELECT "objectKey" FROM image WHERE "jobId" = $1', [job.id]);
      return Buffer.from(await platform.services.store.get(row.objectKey));
    };
    const tuned = await generate();
    expect(tuned.equals(await generate(c1.resultingVersionId))).toBe(true);
    const untrained = await createModel(platform, a.key, { kind: 'PRIVATE', name: 'plain', baseModelId });
    expect(tuned.equals(await generate(undefined, untrained))).toBe(false);

    // The model's LoRA has rank 2: another rank is refused at submission, none inherits it.
    const otherRank = await gql(url, START, { input: { ...input, rank: 8, category: 'cat', instanceImageIds: [await stage(a.key, 10)] } }, a.key);
    expect(errorCode(otherRank)).toBe('BAD_USER_INPUT');
    expect(otherRank.errors![0].message).toBe("rank: this model's LoRA has rank 2; leave rank out to continue it");

    // A second concept of another category replays the first one's photos in its prior images.
    const more = [await stage(a.key, 7), await stage(a.key, 8)];
    const second = (await ok(gql(url, START, { input: { ...input, rank: undefined, category: 'cat', token: 'brc', steps: 4, instanceImageIds: more } }, a.key))).startFineTune.job;
    expect(second.fineTune.rank).toBe(2);
    expect((await follow(url, a.key, second.id)).at(-1)).toMatchObject({ status: 'SUCCEEDED', error: null });
    const c2 = await contributionOf(second.id, a.key);
    expect(c2.priorSplit).toEqual({
      parts: [
        { source: 'class', category: 'cat', images: 2 },
        { source: 'class', category: 'dog', images: 1 },
        { source: 'instance', conceptId: c1.conceptId, token: concept.token, category: 'dog', images: 1 },
      ],
      warnings: [],
    });
    const versions = (await ok(gql(url, 'query($m: ID!) { modelVersions(modelId: $m) { nodes { id number parentVersionId } } }', { m: modelId }, a.key))).modelVersions.nodes;
    expect(versions).toEqual([
      { id: c2.resultingVersionId, number: 2, parentVersionId: c1.resultingVersionId },
      { id: c1.resultingVersionId, number: 1, parentVersionId: null },
    ]);
    const tokens = (await ok(gql(url, 'query($m: ID!) { concepts(modelId: $m) { token } }', { m: modelId }, a.key))).concepts.map((c: { token: string }) => c.token);
    expect(tokens).toEqual([concept.token, 'brc']);
    // A taken identifier is refused on the same model.
    const again = await gql(url, START, { input: { ...input, token: 'brc', instanceImageIds: [await stage(a.key, 9)] } }, a.key);
    expect(errorCode(again)).toBe('CONFLICT');
    // The owner reverts on their own metamodel: the weights from before, the concept withdrawn.
    const reverted = (await ok(gql(url, 'mutation($id: ID!) { revertContribution(id: $id) { status concept { token } } }', { id: c2.id }, a.key))).revertContribution;
    expect(reverted).toEqual({ status: 'REVERTED', concept: { token: 'brc' } });
    const [third] = await platform.services.db.query('SELECT number, "weightsKey", "parentVersionId" FROM model_version WHERE "modelId" = $1 ORDER BY number DESC LIMIT 1', [modelId]);
    const [v1] = await platform.services.db.query('SELECT "weightsKey" FROM model_version WHERE id = $1', [c1.resultingVersionId]);
    expect(third).toEqual({ number: 3, weightsKey: v1.weightsKey, parentVersionId: c2.resultingVersionId });
    const offered = (await ok(gql(url, 'query($m: ID!) { concepts(modelId: $m) { token } }', { m: modelId }, a.key))).concepts;
    expect(offered).toEqual([{ token: concept.token }]);
    // A model keeps one method: a full UNet cannot be trained over its LoRA versions.
    const mixed = await gql(url, START, { input: { ...input, method: 'FULL', rank: null, instanceImageIds: [await stage(a.key, 13)] } }, a.key);
    expect(errorCode(mixed)).toBe('BAD_USER_INPUT');
    expect(mixed.errors![0].message).toMatch(/fine-tuned with LORA/);
  }, 300_000);

  it('makes PRIVATE models with plain DreamBooth (LoRA and full), continues full metamodels from their UNet, and takes public contributions', async () => {
    const job = (await ok(gql(url, START, { input: {
      target: 'PRIVATE', baseModelId, name: 'my mug', category: 'mug', kind: 'OBJECT', instanceImageIds: [await stage(b.key, 10)], steps: 2, learningRate: 1e-4, method: 'LORA',
    } }, b.key))).startFineTune.job;
    expect((await follow(url, b.key, job.id)).at(-1)).toMatchObject({ status: 'SUCCEEDED' });
    const contribution = await contributionOf(job.id, b.key);
    expect(contribution.priorSplit.parts).toEqual([{ source: 'class', category: 'mug', images: 2 }]);
    const models = (await ok(gql(url, '{ models(kind: PRIVATE) { nodes { name headVersion { number } } } }', {}, b.key))).models.nodes;
    expect(models).toEqual([{ name: 'my mug', headVersion: { number: 1 } }]);

    // Full fine-tuning: the whole UNet is stored, and generation loads it in place of the base's.
    const full = (await ok(gql(url, START, { input: {
      target: 'PRIVATE', baseModelId, name: 'full', category: 'mug', kind: 'OBJECT', instanceImageIds: [await stage(b.key, 12)], steps: 1, learningRate: 1e-2, method: 'FULL',
    } }, b.key))).startFineTune.job;
    expect((await follow(url, b.key, full.id)).at(-1)).toMatchObject({ status: 'SUCCEEDED', error: null });
    const fullModelId = full.fineTune.modelId;
    expect((await ok(gql(url, 'query($m: ID!) { modelVersions(modelId: $m) { nodes { method } } }', { m: fullModelId }, b.key))).modelVersions.nodes).toEqual([{ method: 'FULL' }]);
    // The class images of "mug" were generated once, by the first job, and shared since.
    expect(await platform.services.store.exists(classImageKey(baseModelId, 'mug', 1))).toBe(true);
    expect(await platform.services.store.exists(classImageKey(baseModelId, 'mug', 2))).toBe(false);
    const generated = (await ok(gql(url, 'mutation($input: GenerateImagesInput!) { generateImages(input: $input) { id } }', {
      input: { modelId: fullModelId, prompt: 'a mug', steps: 2, seed: 3, scheduler: 'DDIM' },
    }, b.key))).generateImages;
    expect((await follow(url, b.key, generated.id)).at(-1)).toMatchObject({ status: 'SUCCEEDED' });

    // A full fine-tune of a metamodel continues from the UNet of its head.
    const fullMeta = { target: 'PRIVATE_META', category: 'mug', kind: 'OBJECT', steps: 1, learningRate: 1e-2, method: 'FULL' };
    const firstFull = (await ok(gql(url, START, { input: { ...fullMeta, baseModelId, instanceImageIds: [await stage(b.key, 14)] } }, b.key))).startFineTune.job;
    expect((await follow(url, b.key, firstFull.id)).at(-1)).toMatchObject({ status: 'SUCCEEDED' });
    const onTop = (await ok(gql(url, START, { input: { ...fullMeta, category: 'cup', modelId: firstFull.fineTune.modelId, instanceImageIds: [await stage(b.key, 15)] } }, b.key))).startFineTune.job;
    expect((await follow(url, b.key, onTop.id)).at(-1)).toMatchObject({ status: 'SUCCEEDED', error: null });
    const chain = (await ok(gql(url, 'query($m: ID!) { modelVersions(modelId: $m) { nodes { number method parentVersionId id } } }', { m: firstFull.fineTune.modelId }, b.key))).modelVersions.nodes;
    expect(chain.map((v: { number: number; method: string }) => [v.number, v.method])).toEqual([[2, 'FULL'], [1, 'FULL']]);
    expect(chain[0].parentVersionId).toBe(chain[1].id);

    const meta = (await ok(gql(url, START, { input: {
      target: 'META', modelId: metaModelId, category: 'dog', kind: 'OBJECT', instanceImageIds: [await stage(b.key, 11)], steps: 2, learningRate: 1e-4, method: 'LORA',
    } }, b.key))).startFineTune.job;
    expect((await follow(url, b.key, meta.id)).at(-1)).toMatchObject({ status: 'SUCCEEDED' });
    // Every signed-in user sees the public metamodel's contributions.
    const seen = (await ok(gql(url, 'query($m: ID!) { contributions(modelId: $m) { nodes { userId status } } }', { m: metaModelId }, a.key))).contributions.nodes;
    expect(seen).toEqual([{ userId: b.userId, status: 'MERGED' }]);
  }, 300_000);

  it('trains the same weights from the same seed, photos and settings, and other weights from another seed', async () => {
    const weightsOf = async (seed: number) => {
      const job = (await ok(gql(url, START, { input: {
        target: 'PRIVATE', baseModelId, category: 'mug', kind: 'OBJECT', instanceImageIds: [await stage(b.key, 21)], steps: 2, learningRate: 1e-3, method: 'LORA', seed,
      } }, b.key))).startFineTune.job;
      expect(job.fineTune.seed).toBe(seed);
      expect((await follow(url, b.key, job.id)).at(-1)).toMatchObject({ status: 'SUCCEEDED' });
      const [version] = await platform.services.db.query('SELECT "weightsKey" FROM model_version WHERE "modelId" = $1', [job.fineTune.modelId]);
      return Buffer.from(await platform.services.store.get(version.weightsKey));
    };
    const first = await weightsOf(2 ** 32 - 1);
    expect(first.equals(await weightsOf(2 ** 32 - 1))).toBe(true);
    expect(first.equals(await weightsOf(5))).toBe(false);
  }, 120_000);
});
