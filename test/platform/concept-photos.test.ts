import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EngineWorker } from '../../src/engine/runtime';
import { ModelVersion } from '../../src/entities';
import { FineTuneHandler } from '../../src/worker/handlers/finetune';
import { JobRunner } from '../../src/worker/job-runner';
import { hasFixtures } from '../helpers/fixtures';
import { errorCode, gql, gqlUpload, ok, startTestPlatform, type TestPlatform, type TestUser } from './helpers';
import { createModel, publicMetamodelWithUsers } from './setup';

const START = 'mutation($input: StartFineTuneInput!) { startFineTune(input: $input) { job { id } concept { id } contribution { id } model { id } } }';
const WITHDRAW = 'mutation($id: ID!) { withdrawConcept(id: $id) { id status } }';
const PHOTOS = 'query($c: ID) { instanceImages(conceptId: $c) { nodes { id sha256 conceptId } } }';

/**
 * Photos as the BIG workflow uses them: taught again from a concept that has them, private to their uploader even
 * in the public metamodel (which replays them for everyone's training), and taken back out with their concept.
 */
describe.skipIf(!hasFixtures)('concept photos', () => {
  let platform: TestPlatform;
  let url: string;
  let admin: string;
  let a: TestUser;
  let b: TestUser;
  let baseModelId: string;
  let metaModelId: string;
  let engine: EngineWorker;
  let runner: JobRunner;
  let shade = 0;

  const upload = async (key: string) => {
    const png = await sharp({ create: { width: 40, height: 36, channels: 3, background: { r: 30 * ++shade, g: 90, b: 160 } } }).png().toBuffer();
    return (await ok(gqlUpload(url, 'mutation($file: Upload!) { uploadInstanceImage(file: $file) { id } }', {}, { bytes: png, name: 'p.png', type: 'image/png' }, key))).uploadInstanceImage.id as string;
  };
  const small = { steps: 2, learningRate: 1e-4, method: 'LORA', batchSize: 1, gradientAccumulation: 2, flip: true };
  const start = async (key: string, input: Record<string, unknown>) => (await ok(gql(url, START, { input: { kind: 'OBJECT', ...small, ...input } }, key))).startFineTune;
  const contribute = async (key: string, category: string) => {
    const started = await start(key, { target: 'META', modelId: metaModelId, category, instanceImageIds: [await upload(key)] });
    await runner.run(started.job.id);
    return started;
  };
  const status = async (contributionId: string) =>
    (await ok(gql(url, 'query($id: ID!) { contribution(id: $id) { status priorSplit } }', { id: contributionId }, a.key))).contribution;
  const offered = async () =>
    (await ok(gql(url, 'query($m: ID!) { concepts(modelId: $m) { id } }', { m: metaModelId }, b.key))).concepts.map((c: { id: string }) => c.id);
  const versions = () => platform.services.db.getRepository(ModelVersion).find({ where: { modelId: metaModelId }, order: { number: 'ASC' } });
  const objectKeys = async (conceptId: string): Promise<string[]> =>
    (await platform.services.db.query('SELECT "objectKey" FROM instance_image WHERE "conceptId" = $1', [conceptId])).map((r: { objectKey: string }) => r.objectKey);

  beforeAll(async () => {
    platform = await startTestPlatform({ ROLE: 'api' });
    url = platform.url;
    ({ admin, baseModelId, metaModelId, a, b } = await publicMetamodelWithUsers(platform));
    engine = new EngineWorker({ device: 'cpu' });
    runner = new JobRunner(platform.services, new FineTuneHandler(platform.services, engine));
  }, 120_000);
  afterAll(async () => {
    await runner?.stop();
    await engine?.close();
    await platform?.stop();
  });

  it('teaches a private model\'s concept to the metamodel from its photos, copied, without uploading them again', async () => {
    const photos = [await upload(a.key), await upload(a.key)];
    const fitted = await start(a.key, { target: 'PRIVATE', baseModelId, category: 'vase', instanceImageIds: photos });
    await runner.run(fitted.job.id);
    const own = (await ok(gql(url, PHOTOS, { c: fitted.concept.id }, a.key))).instanceImages.nodes;
    expect(own.map((p: { id: string }) => p.id).sort()).toEqual([...photos].sort());

    // Others may not take someone else's photos, of a private model or of the public one.
    expect(errorCode(await gql(url, START, { input: { kind: 'OBJECT', ...small, target: 'META', modelId: metaModelId, category: 'vase', fromConceptId: fitted.concept.id } }, b.key)))
      .toBe('NOT_FOUND');
    expect(errorCode(await gql(url, START, { input: { kind: 'OBJECT', ...small, target: 'META', modelId: metaModelId, category: 'vase' } }, a.key)))
      .toBe('BAD_USER_INPUT');

    const taught = await start(a.key, { target: 'META', modelId: metaModelId, category: 'vase', fromConceptId: fitted.concept.id });
    const copies = (await ok(gql(url, PHOTOS, { c: taught.concept.id }, a.key))).instanceImages.nodes;
    expect(copies.map((p: { sha256: string }) => p.sha256).sort()).toEqual(own.map((p: { sha256: string }) => p.sha256).sort());
    expect(copies.some((p: { id: string }) => photos.includes(p.id))).toBe(false);
    // Each concept owns its objects: deleting the private concept's photos leaves the metamodel's training whole.
    for (const id of photos) await ok(gql(url, 'mutation($id: ID!) { deleteInstanceImage(id: $id) }', { id }, a.key));
    await runner.run(taught.job.id);
    expect((await status(taught.contribution.id)).status).toBe('MERGED');
    expect(errorCode(await gql(url, START, { input: { kind: 'OBJECT', ...small, target: 'META', modelId: metaModelId, category: 'vase', fromConceptId: taught.concept.id } }, b.key)))
      .toBe('BAD_USER_INPUT');
  }, 300_000);

  it('shows a public metamodel\'s photos to their uploader and administrators only', async () => {
    const [concept] = await offered();
    const photos = (await ok(gql(url, PHOTOS, { c: concept }, a.key))).instanceImages.nodes;
    const [photo] = photos;
    expect(photo).toBeDefined();
    expect((await ok(gql(url, PHOTOS, { c: concept }, admin))).instanceImages.nodes).toEqual(photos);
    // Everyone sees the concept, no one else its photos: not listed, not by id, not deletable, none added to it.
    expect((await ok(gql(url, PHOTOS, { c: concept }, b.key))).instanceImages.nodes).toEqual([]);
    expect((await ok(gql(url, PHOTOS, { c: null }, b.key))).instanceImages.nodes).toEqual([]);
    expect(errorCode(await gql(url, 'query($id: ID!) { instanceImage(id: $id) { id } }', { id: photo.id }, b.key))).toBe('NOT_FOUND');
    expect(errorCode(await gql(url, 'mutation($id: ID!) { deleteInstanceImage(id: $id) }', { id: photo.id }, b.key))).toBe('NOT_FOUND');
    const png = await sharp({ create: { width: 40, height: 40, channels: 3, background: '#123' } }).png().toBuffer();
    expect(errorCode(await gqlUpload(url, 'mutation($c: ID, $file: Upload!) { uploadInstanceImage(conceptId: $c, file: $file) { id } }', { c: concept },
      { bytes: png, name: 'p.png', type: 'image/png' }, b.key))).toBe('FORBIDDEN');
    // There is no download of a training photo for anyone: the image route serves generated images.
    const response = await fetch(`${url.replace(/\/graphql$/, '')}/images/${photo.id}`, { headers: { authorization: `Bearer ${b.key}` } });
    expect(response.status).toBe(404);
    expect((await ok(gql(url, PHOTOS, { c: concept }, a.key))).instanceImages.nodes).toEqual(photos);
  });

  it('deletes a deleted concept\'s photos from storage too', async () => {
    const modelId = await createModel(platform, a.key, { kind: 'PRIVATE_META', name: 'mine', baseModelId });
    const conceptId = (await ok(gql(url, 'mutation($m: ID!) { createConcept(input: { modelId: $m, category: "lamp", kind: OBJECT }) { id } }', { m: modelId }, a.key))).createConcept.id;
    const png = await sharp({ create: { width: 40, height: 40, channels: 3, background: '#456' } }).png().toBuffer();
    await ok(gqlUpload(url, 'mutation($c: ID, $file: Upload!) { uploadInstanceImage(conceptId: $c, file: $file) { id } }', { c: conceptId },
      { bytes: png, name: 'p.png', type: 'image/png' }, a.key));
    const [key] = await objectKeys(conceptId);
    expect(await platform.services.store.exists(key)).toBe(true);
    expect((await ok(gql(url, 'mutation($id: ID!) { deleteConcept(id: $id) }', { id: conceptId }, a.key))).deleteConcept).toBe(conceptId);
    expect(await objectKeys(conceptId)).toEqual([]);
    expect(await platform.services.store.exists(key)).toBe(false);
  });

  it('lets a contributor withdraw a concept: a new version without it, no longer offered, its photos gone from later replays', async () => {
    const cat = await contribute(a.key, 'cat');
    const dog = await contribute(b.key, 'dog');
    expect((await status(dog.contribution.id)).priorSplit.parts).toContainEqual(expect.objectContaining({ source: 'instance', conceptId: cat.concept.id }));
    const catKeys = await objectKeys(cat.concept.id);
    expect(catKeys).toHaveLength(1);

    // Only its contributor (or an admin); an unknown id is not found, a private model's concept goes with its model.
    expect(errorCode(await gql(url, WITHDRAW, { id: cat.concept.id }, b.key))).toBe('FORBIDDEN');
    expect(errorCode(await gql(url, WITHDRAW, { id: '00000000-0000-4000-8000-000000000000' }, a.key))).toBe('NOT_FOUND');
    const mine = await start(b.key, { target: 'PRIVATE', baseModelId, category: 'cup', instanceImageIds: [await upload(b.key)] });
    expect(errorCode(await gql(url, WITHDRAW, { id: mine.concept.id }, a.key))).toBe('NOT_FOUND');
    expect(errorCode(await gql(url, WITHDRAW, { id: mine.concept.id }, b.key))).toBe('BAD_USER_INPUT');

    // The cat is not the latest: later contributions keep their weights, the head's.
    const head = (await versions()).at(-1)!;
    expect((await ok(gql(url, WITHDRAW, { id: cat.concept.id }, a.key))).withdrawConcept).toEqual({ id: cat.contribution.id, status: 'WITHDRAWN' });
    const afterCat = (await versions()).at(-1)!;
    expect([afterCat.number, afterCat.parentVersionId, afterCat.weightsKey]).toEqual([head.number + 1, head.id, head.weightsKey]);
    expect(await offered()).not.toContain(cat.concept.id);
    expect(await objectKeys(cat.concept.id)).toEqual([]);
    expect(await platform.services.store.exists(catKeys[0])).toBe(false);
    expect(errorCode(await gql(url, WITHDRAW, { id: cat.concept.id }, a.key))).toBe('CONFLICT');

    // The dog made the head's weights: the new version has those from before it.
    const dogVersion = (await versions()).find((v) => v.contributionId === dog.contribution.id)!;
    const beforeDog = (await versions()).find((v) => v.id === dogVersion.parentVersionId)!;
    await ok(gql(url, WITHDRAW, { id: dog.concept.id }, admin));
    expect((await versions()).at(-1)!.weightsKey).toBe(beforeDog.weightsKey);
    expect(await offered()).not.toContain(dog.concept.id);

    // The next contribution replays neither.
    const fish = await contribute(b.key, 'fish');
    const parts = (await status(fish.contribution.id)).priorSplit.parts as { conceptId?: string }[];
    expect(parts.map((p) => p.conceptId)).not.toContain(cat.concept.id);
    expect(parts.map((p) => p.conceptId)).not.toContain(dog.concept.id);
  }, 600_000);
});
