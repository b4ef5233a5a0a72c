import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EngineWorker } from '../../src/engine/runtime';
import { ModelVersion } from '../../src/entities';
import { FineTuneHandler } from '../../src/worker/handlers/finetune';
import { JobRunner } from '../../src/worker/job-runner';
import { lockVersions } from '../../src/services/versions';
import { hasFixtures } from '../helpers/fixtures';
import { errorCode, gql, gqlUpload, ok, startTestPlatform, type TestPlatform, type TestUser } from './helpers';
import { publicMetamodelWithUsers } from './setup';

const START = 'mutation($input: StartFineTuneInput!) { startFineTune(input: $input) { job { id } concept { id } contribution { id } } }';
const REVERT = 'mutation($id: ID!) { revertContribution(id: $id) { id status } }';

/**
 * Contributions to the public metamodel with the worker's job runners driven by the test: an API-only
 * platform queues the jobs, and two runners (as two worker processes would) run them at once.
 */
describe.skipIf(!hasFixtures)('contributions to the public metamodel', () => {
  let platform: TestPlatform;
  let url: string;
  let admin: string;
  let a: TestUser;
  let b: TestUser;
  let metaModelId: string;
  let engines: EngineWorker[];
  let runners: JobRunner[];
  let seed = 0;

  const contribute = async (key: string, category: string, steps = 3) => {
    const png = await sharp({ create: { width: 36, height: 36, channels: 3, background: { r: 40 * ++seed, g: 120, b: 60 } } }).png().toBuffer();
    const photo = (await ok(gqlUpload(url, 'mutation($file: Upload!) { uploadInstanceImage(file: $file) { id } }', {}, { bytes: png, name: 'p.png', type: 'image/png' }, key))).uploadInstanceImage.id;
    const started = (await ok(gql(url, START, { input: {
      target: 'META', modelId: metaModelId, category, kind: 'OBJECT', instanceImageIds: [photo], steps, learningRate: 1e-4, method: 'LORA',
    } }, key))).startFineTune;
    return { jobId: started.job.id as string, contributionId: started.contribution.id as string, conceptId: started.concept.id as string, photo };
  };
  const contribution = async (id: string) =>
    (await ok(gql(url, 'query($id: ID!) { contribution(id: $id) { status resultingVersionId priorSplit } }', { id }, a.key))).contribution;
  const versions = () => platform.services.db.getRepository(ModelVersion).find({ where: { modelId: metaModelId }, order: { number: 'ASC' } });
  const offered = async () =>
    (await ok(gql(url, 'query($m: ID!) { concepts(modelId: $m) { id } }', { m: metaModelId }, a.key))).concepts.map((c: { id: string }) => c.id);

  beforeAll(async () => {
    platform = await startTestPlatform({ ROLE: 'api' });
    url = platform.url;
    ({ admin, metaModelId, a, b } = await publicMetamodelWithUsers(platform));
    engines = [new EngineWorker({ device: 'cpu' }), new EngineWorker({ device: 'cpu' })];
    runners = engines.map((engine) => new JobRunner(platform.services, new FineTuneHandler(platform.services, engine)));
  }, 120_000);
  afterAll(async () => {
    for (const runner of runners ?? []) await runner.stop();
    for (const engine of engines ?? []) await engine.close();
    await platform?.stop();
  });

  it('serializes concurrent contributions: two versions chained, the later one trained on the earlier', async () => {
    const fromA = await contribute(a.key, 'cat');
    const fromB = await contribute(b.key, 'dog');
    await Promise.all([runners[0].run(fromA.jobId), runners[1].run(fromB.jobId)]);

    const [first, second] = await versions();
    expect(second.parentVersionId).toBe(first.id);
    expect(first.parentVersionId).toBeNull();
    const ca = await contribution(fromA.contributionId);
    const cb = await contribution(fromB.contributionId);
    expect([ca.status, cb.status]).toEqual(['MERGED', 'MERGED']);
    expect([ca.resultingVersionId, cb.resultingVersionId].sort()).toEqual([first.id, second.id].sort());
    // Whichever ran second saw the first merged and replayed its photo: no lost update.
    const [earlier, later] = ca.resultingVersionId === first.id ? [fromA, cb] : [fromB, ca];
    expect(later.priorSplit.parts).toContainEqual(expect.objectContaining({ source: 'instance', conceptId: earlier.conceptId, images: 1 }));
    const head = (await ok(gql(url, 'query($m: ID!) { model(id: $m) { headVersion { id number } } }', { m: metaModelId }, b.key))).model.headVersion;
    expect(head).toEqual({ id: second.id, number: 2 });
  }, 300_000);

  it('marks a failed training FAILED and leaves the head where it was', async () => {
    const before = (await versions()).length;
    const failing = await contribute(a.key, 'bird');
    const [photo] = await platform.services.db.query('SELECT "objectKey" FROM instance_image WHERE id = $1', [failing.photo]);
    await platform.services.store.delete(photo.objectKey);
    await runners[0].run(failing.jobId);
    const job = (await ok(gql(url, 'query($id: ID!) { job(id: $id) { status error } }', { id: failing.jobId }, a.key))).job;
    expect(job).toEqual({ status: 'FAILED', error: 'Fine-tuning failed' });
    expect((await contribution(failing.contributionId)).status).toBe('FAILED');
    expect(await versions()).toHaveLength(before);
    expect(await offered()).not.toContain(failing.conceptId);
    // The photo is staged again, for another try.
    expect((await ok(gql(url, '{ instanceImages { nodes { id conceptId } } }', {}, a.key))).instanceImages.nodes).toEqual([{ id: failing.photo, conceptId: null }]);
    await ok(gql(url, 'mutation($id: ID!) { deleteInstanceImage(id: $id) }', { id: failing.photo }, a.key));
  }, 120_000);

  it('withdraws the contribution of a canceled fine-tune', async () => {
    const before = (await versions()).length;
    const canceled = await contribute(b.key, 'fish');
    expect((await ok(gql(url, 'mutation($id: ID!) { cancelJob(id: $id) { status } }', { id: canceled.jobId }, b.key))).cancelJob.status).toBe('CANCELED');
    await runners[0].run(canceled.jobId); // a late delivery does nothing
    expect((await contribution(canceled.contributionId)).status).toBe('FAILED');
    expect(await offered()).not.toContain(canceled.conceptId);
    expect((await ok(gql(url, '{ instanceImages { nodes { id } } }', {}, b.key))).instanceImages.nodes).toEqual([{ id: canceled.photo }]);
    expect(await versions()).toHaveLength(before);
  }, 120_000);

  it('lets only admins revert, appending a version with the weights from before', async () => {
    const [first, second] = await versions();
    const latest = (await ok(gql(url, 'query($m: ID!) { contributions(modelId: $m) { nodes { id status resultingVersionId conceptId } } }', { m: metaModelId }, a.key)))
      .contributions.nodes.filter((c: { status: string }) => c.status === 'MERGED');
    const top = latest.find((c: { resultingVersionId: string }) => c.resultingVersionId === second.id);
    const bottom = latest.find((c: { resultingVersionId: string }) => c.resultingVersionId === first.id);

    expect(errorCode(await gql(url, REVERT, { id: top.id }, a.key))).toBe('FORBIDDEN');
    // While a contribution trains (holds the model's lock), a revert is refused rather than racing it.
    const unlock = await lockVersions(platform.services.db, metaModelId, new AbortController().signal);
    expect(errorCode(await gql(url, REVERT, { id: top.id }, admin))).toBe('CONFLICT');
    await unlock();

    expect((await ok(gql(url, REVERT, { id: top.id }, admin))).revertContribution).toEqual({ id: top.id, status: 'REVERTED' });
    const third = (await versions())[2];
    expect(third).toMatchObject({ number: 3, parentVersionId: second.id, weightsKey: first.weightsKey, contributionId: null, method: 'LORA' });
    expect(first.weightsKey).not.toBe(second.weightsKey);
    expect((await contribution(bottom.id)).status).toBe('MERGED');
    expect(await offered()).toEqual([bottom.conceptId]);
    expect(errorCode(await gql(url, REVERT, { id: top.id }, admin))).toBe('CONFLICT');

    // Reverting the first contribution goes back to the base model's own weights.
    await ok(gql(url, REVERT, { id: bottom.id }, admin));
    const fourth = (await versions())[3];
    expect(fourth).toMatchObject({ number: 4, parentVersionId: third.id, weightsKey: null });
    expect(await offered()).toEqual([]);
    const history = (await ok(gql(url, 'query($m: ID!) { modelVersions(modelId: $m) { nodes { number } } }', { m: metaModelId }, b.key))).modelVersions.nodes;
    expect(history.map((v: { number: number }) => v.number)).toEqual([4, 3, 2, 1]);

    // The next contribution trains from the base weights again and chains after the reverts.
    const next = await contribute(b.key, 'cow');
    await runners[1].run(next.jobId);
    const c = await contribution(next.contributionId);
    expect(c.status).toBe('MERGED');
    expect(c.priorSplit.parts).toEqual([{ source: 'class', category: 'cow', images: 3 }]);
    expect((await versions())[4]).toMatchObject({ number: 5, parentVersionId: fourth.id });

    // Photos stay their owner's: deleting those of a learned concept leaves later trainings working.
    await ok(gql(url, 'mutation($id: ID!) { deleteInstanceImage(id: $id) }', { id: next.photo }, b.key));
    const after = await contribute(a.key, 'owl');
    await runners[0].run(after.jobId);
    const owl = await contribution(after.contributionId);
    expect(owl.status).toBe('MERGED');
    expect(owl.priorSplit.parts).toEqual([{ source: 'class', category: 'owl', images: 2 }, { source: 'class', category: 'cow', images: 1 }]);
    expect(owl.priorSplit.warnings).toEqual([expect.stringMatching(/cow" has no stored photos left to replay/)]);

    // One user's photo never breaks another's contribution: a photo too small to train on is refused
    // when added to a concept, and a stored one that cannot be used (an older version let it in) is
    // skipped from replay with a warning.
    const tiny = await sharp({ create: { width: 16, height: 16, channels: 3, background: '#fff' } }).png().toBuffer();
    const added = await gqlUpload(url, 'mutation($file: Upload!, $c: ID!) { uploadInstanceImage(file: $file, conceptId: $c) { id } }', { c: after.conceptId }, { bytes: tiny, name: 't.png', type: 'image/png' }, a.key);
    expect(errorCode(added)).toBe('BAD_USER_INPUT');
    expect(added.errors![0].message).toBe("file: the photo is smaller than 32x32, the model's training size");
    const [owlPhoto] = await platform.services.db.query('SELECT "objectKey" FROM instance_image WHERE id = $1', [after.photo]);
    await platform.services.store.put(owlPhoto.objectKey, tiny, 'image/png');
    const pig = await contribute(b.key, 'pig', 8); // enough prior images for every part, the owl's photo among them
    await runners[1].run(pig.jobId);
    const merged = await contribution(pig.contributionId);
    expect(merged.status).toBe('MERGED');
    expect(merged.priorSplit.warnings).toEqual([
      expect.stringMatching(/cow" has no stored photos left to replay/),
      expect.stringMatching(/^A stored photo of "a \w+ owl" cannot be replayed and was skipped \(the image is 16x16/),
      expect.stringMatching(/owl" has no usable photo left to replay; its 1 prior images are left out/),
    ]);
    const job = (await ok(gql(url, 'query($id: ID!) { job(id: $id) { warnings } }', { id: pig.jobId }, b.key))).job;
    expect(job.warnings).toEqual(merged.priorSplit.warnings);
  }, 300_000);

  it('leaves nothing behind when the queue refuses a job', async () => {
    const rows = () => platform.services.db.query(
      `SELECT (SELECT count(*) FROM model)::int AS models, (SELECT count(*) FROM concept)::int AS concepts,
              (SELECT count(*) FROM contribution)::int AS contributions, (SELECT count(*) FROM job)::int AS jobs`,
    );
    const png = await sharp({ create: { width: 36, height: 36, channels: 3, background: '#0a0' } }).png().toBuffer();
    const photo = (await ok(gqlUpload(url, 'mutation($file: Upload!) { uploadInstanceImage(file: $file) { id } }', {}, { bytes: png, name: 'p.png', type: 'image/png' }, a.key))).uploadInstanceImage.id;
    const before = await rows();
    await platform.services.queue.stop(); // the last test: pg-boss refuses new jobs from here on
    const refused = await gql(url, START, { input: {
      target: 'PRIVATE', baseModelId: (await ok(gql(url, '{ baseModels { id name } }', {}, a.key))).baseModels.find((m: { name: string }) => m.name === 'tiny-sd15').id,
      category: 'frog', kind: 'OBJECT', instanceImageIds: [photo], steps: 2, learningRate: 1e-4, method: 'LORA',
    } }, a.key);
    expect(errorCode(refused)).toBe('INTERNAL_SERVER_ERROR');
    expect(await rows()).toEqual(before);
    expect((await ok(gql(url, '{ instanceImages { nodes { id conceptId } } }', {}, a.key))).instanceImages.nodes).toEqual([{ id: photo, conceptId: null }]);
  });
});
