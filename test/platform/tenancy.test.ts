import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Contribution, ContributionStatus, FineTuneMethod, Image, Job, JobType, ModelVersion, WebhookDelivery, WebhookDeliveryStatus } from '../../src/entities';
import { errorCode, gql, gqlUpload, ok, signUp, startTestPlatform, type GraphQLResponse, type TestPlatform, type TestUser } from './helpers';
import { createModel, defaultBaseModelId, newAdminKey } from './setup';

/** Everything user A owns, by kind; B (another user) must neither see nor change any of it. */
interface Owned {
  apiKeyId: string;
  privateModelId: string;
  privateMetaModelId: string;
  conceptId: string;
  metaConceptId: string;
  instanceImageId: string;
  contributionId: string;
  jobId: string;
  imageId: string;
  deliveryId: string;
}

type Call = (key: string | undefined) => Promise<GraphQLResponse>;

describe('tenancy', () => {
  let platform: TestPlatform;
  let url: string;
  let adminKey: string;
  let a: TestUser;
  let b: TestUser;
  let owned: Owned;
  let baseModelId: string;
  let publicModelId: string;
  let publicContributionId: string;
  let publicConceptId: string;
  let png: Uint8Array;

  beforeAll(async () => {
    platform = await startTestPlatform();
    url = platform.url;
    const { db } = platform.services;
    adminKey = await newAdminKey(platform);
    a = await signUp(url, 'a@example.org');
    b = await signUp(url, 'b@example.org');
    png = new Uint8Array(
      await sharp({ create: { width: 80, height: 64, channels: 3, background: '#c33' } }).png().toBuffer(),
    );

    // The bundled base model, registered at start.
    baseModelId = await defaultBaseModelId(platform, adminKey);
    publicModelId = await createModel(platform, adminKey, { kind: 'META', baseModelId });
    const privateModelId = await createModel(platform, a.key, { kind: 'PRIVATE', baseModelId });
    const privateMetaModelId = await createModel(platform, a.key, { kind: 'PRIVATE_META', baseModelId });
    const createConcept = (modelId: string, token: string, key: string) =>
      ok(
        gql(url, 'mutation($input: CreateConceptInput!) { createConcept(input: $input) { id } }', {
          input: { modelId, token, category: 'dog', kind: 'OBJECT' },
        }, key),
      ).then((d) => d.createConcept.id as string);
    const conceptId = await createConcept(privateModelId, 'sks', a.key);
    const metaConceptId = await createConcept(privateMetaModelId, 'brc', a.key);
    const instanceImageId = (
      await ok(
        gqlUpload(url, 'mutation($conceptId: ID!, $file: Upload!) { uploadInstanceImage(conceptId: $conceptId, file: $file) { id } }', { conceptId }, { bytes: png, name: 'dog.png', type: 'image/png' }, a.key),
      )
    ).uploadInstanceImage.id;
    const apiKeyId = (await ok(gql(url, '{ apiKeys { nodes { id } } }', {}, a.key))).apiKeys.nodes[0].id;

    // Jobs, images, versions and contributions are made by workers in later issues; rows stand in here.
    const versions = db.getRepository(ModelVersion);
    const first = await versions.save({ modelId: privateModelId, number: 1, weightsKey: 'weights/a/1', method: FineTuneMethod.LORA });
    const head = await versions.save({ modelId: privateModelId, number: 2, weightsKey: 'weights/a/2', method: FineTuneMethod.LORA, parentVersionId: first.id });
    await db.query('UPDATE model SET "headVersionId" = $1 WHERE id = $2', [head.id, privateModelId]);
    const contribution = await db.getRepository(Contribution).save({
      userId: a.userId, modelId: privateMetaModelId, conceptId: metaConceptId, status: ContributionStatus.PENDING,
    });
    const job = await db.getRepository(Job).save({ type: JobType.GENERATE, ownerId: a.userId, params: { prompt: 'a sks dog' } });
    await platform.services.store.put('images/a/1.png', png, 'image/png');
    const image = await db.getRepository(Image).save({ objectKey: 'images/a/1.png', seed: 4_000_000_000, prompt: 'a sks dog', width: 8, height: 6, jobId: job.id });
    const delivery = await db.getRepository(WebhookDelivery).save({
      ownerId: a.userId, jobId: job.id, type: 'job.completed', url: 'https://example.com/hook', body: '{}', status: WebhookDeliveryStatus.DELIVERED,
    });

    // A's contribution to the public metamodel: public like the model.
    const publicConcept = await db.query(
      `INSERT INTO concept (token, category, kind, "modelId", "contributorId") VALUES ('lnl', 'painting', 'STYLE', $1, $2) RETURNING id`,
      [publicModelId, a.userId],
    );
    publicConceptId = publicConcept[0].id;
    publicContributionId = (
      await db.getRepository(Contribution).save({ userId: a.userId, modelId: publicModelId, conceptId: publicConceptId })
    ).id;

    owned = {
      apiKeyId, privateModelId, privateMetaModelId, conceptId, metaConceptId, instanceImageId,
      contributionId: contribution.id, jobId: job.id, imageId: image.id, deliveryId: delivery.id,
    };
  });
  afterAll(() => platform?.stop());

  /** Every query and mutation that takes an id of something A owns, called with A's ids. */
  const callsOnOwned = (): Record<string, Call> => ({
    model: (key) => gql(url, 'query($id: ID!) { model(id: $id) { id name } }', { id: owned.privateModelId }, key),
    concepts: (key) => gql(url, 'query($id: ID!) { concepts(modelId: $id) { id } }', { id: owned.privateMetaModelId }, key),
    concept: (key) => gql(url, 'query($id: ID!) { concept(id: $id) { id } }', { id: owned.conceptId }, key),
    contributions: (key) => gql(url, 'query($id: ID) { contributions(modelId: $id) { nodes { id } } }', { id: owned.privateMetaModelId }, key),
    contribution: (key) => gql(url, 'query($id: ID!) { contribution(id: $id) { id } }', { id: owned.contributionId }, key),
    instanceImages: (key) => gql(url, 'query($id: ID!) { instanceImages(conceptId: $id) { nodes { id } } }', { id: owned.conceptId }, key),
    instanceImage: (key) => gql(url, 'query($id: ID!) { instanceImage(id: $id) { id } }', { id: owned.instanceImageId }, key),
    job: (key) => gql(url, 'query($id: ID!) { job(id: $id) { id } }', { id: owned.jobId }, key),
    image: (key) => gql(url, 'query($id: ID!) { image(id: $id) { id } }', { id: owned.imageId }, key),
    revokeApiKey: (key) => gql(url, 'mutation($id: ID!) { revokeApiKey(id: $id) { id } }', { id: owned.apiKeyId }, key),
    renameModel: (key) => gql(url, 'mutation($id: ID!) { renameModel(id: $id, name: "mine now") { id } }', { id: owned.privateModelId }, key),
    deleteModel: (key) => gql(url, 'mutation($id: ID!) { deleteModel(id: $id) }', { id: owned.privateMetaModelId }, key),
    createConcept: (key) =>
      gql(url, 'mutation($input: CreateConceptInput!) { createConcept(input: $input) { id } }', {
        input: { modelId: owned.privateModelId, token: 'intruder', category: 'cat', kind: 'OBJECT' },
      }, key),
    deleteConcept: (key) => gql(url, 'mutation($id: ID!) { deleteConcept(id: $id) }', { id: owned.conceptId }, key),
    uploadInstanceImage: (key) =>
      gqlUpload(url, 'mutation($id: ID!, $file: Upload!) { uploadInstanceImage(conceptId: $id, file: $file) { id } }', { id: owned.conceptId }, { bytes: png, name: 'x.png', type: 'image/png' }, key),
    deleteInstanceImage: (key) => gql(url, 'mutation($id: ID!) { deleteInstanceImage(id: $id) }', { id: owned.instanceImageId }, key),
    cancelJob: (key) => gql(url, 'mutation($id: ID!) { cancelJob(id: $id) { id } }', { id: owned.jobId }, key),
    deleteImage: (key) => gql(url, 'mutation($id: ID!) { deleteImage(id: $id) }', { id: owned.imageId }, key),
    generateImages: (key) =>
      gql(url, 'mutation($input: GenerateImagesInput!) { generateImages(input: $input) { id } }', {
        input: { modelId: owned.privateModelId, prompt: 'on your model' },
      }, key),
    modelVersions: (key) => gql(url, 'query($id: ID!) { modelVersions(modelId: $id) { nodes { id } } }', { id: owned.privateModelId }, key),
    jobs: (key) => gql(url, 'query($id: ID!) { jobs(modelId: $id) { nodes { id } } }', { id: owned.privateModelId }, key),
    webhookDeliveries: (key) => gql(url, 'query($id: ID!) { webhookDeliveries(jobId: $id) { nodes { id } } }', { id: owned.jobId }, key),
    setUserDisabled: (key) => gql(url, 'mutation($id: ID!) { setUserDisabled(id: $id, disabled: true) { id } }', { id: a.userId }, key),
    redeliverWebhook: (key) => gql(url, 'mutation($id: ID!) { redeliverWebhook(id: $id) { id } }', { id: owned.deliveryId }, key),
    revertContribution: (key) => gql(url, 'mutation($id: ID!) { revertContribution(id: $id) { id } }', { id: owned.contributionId }, key),
    startFineTune: (key) => gql(url, FINE_TUNE, { input: { ...fineTune(), target: 'PRIVATE_META', modelId: owned.privateMetaModelId } }, key),
    // Someone else's photo, on a new model of one's own: refused before the model is made.
    startFineTuneWithPhoto: (key) => gql(url, FINE_TUNE, { input: { ...fineTune(), target: 'PRIVATE', baseModelId } }, key),
    // Someone else's concept's photos, reused: the same.
    startFineTuneFromConcept: (key) =>
      gql(url, FINE_TUNE, { input: { ...fineTune(), instanceImageIds: null, fromConceptId: owned.conceptId, target: 'PRIVATE', baseModelId } }, key),
    withdrawConcept: (key) => gql(url, 'mutation($id: ID!) { withdrawConcept(id: $id) { id } }', { id: owned.metaConceptId }, key),
    exportWeights: (key) =>
      gql(url, 'mutation($input: ExportWeightsInput!) { exportWeights(input: $input) { url } }', { input: { modelId: owned.privateModelId, format: 'DIFFUSERS_LORA' } }, key),
    // A's concept of the public metamodel: everyone sees it, only A (or an admin) takes it out.
    withdrawPublicConcept: (key) => gql(url, 'mutation($id: ID!) { withdrawConcept(id: $id) { id } }', { id: publicConceptId }, key),
  });

  const FINE_TUNE = 'mutation($input: StartFineTuneInput!) { startFineTune(input: $input) { job { id } } }';
  const fineTune = () => ({ category: 'dog', kind: 'OBJECT', instanceImageIds: [owned.instanceImageId], steps: 2, learningRate: 1e-4, method: 'LORA' });

  /** Take ids, but of things every signed-in user may use: no tenant's private object. */
  const PUBLIC_ID_FIELDS = new Set(['baseModel', 'createModel', 'models', 'setDefaultBaseModel']);

  /** A's rows and objects, to prove nothing changed. */
  async function snapshot() {
    const { db, store } = platform.services;
    const rows: Record<string, unknown> = {};
    // Everything except the callers' own keys, whose lastUsedAt legitimately moves.
    rows.api_key = await db.query('SELECT * FROM api_key WHERE "userId" = $1', [a.userId]);
    for (const table of ['user', 'model', 'model_version', 'concept', 'contribution', 'instance_image', 'job', 'image', 'webhook_delivery']) {
      rows[table] = await db.query(`SELECT * FROM "${table}" ORDER BY id`);
    }
    const keys = [...(rows.instance_image as { objectKey: string }[]), ...(rows.image as { objectKey: string }[])].map((r) => r.objectKey);
    const objects = await Promise.all(keys.map(async (k) => Buffer.from(await store.get(k)).toString('base64')));
    return { rows, objects };
  }

  it('covers every query and mutation that takes an id', async () => {
    const introspection = await gql(url, `{ __schema {
      queryType { fields { name args { name type { ...T } } } }
      mutationType { fields { name args { name type { ...T } } } }
      types { name inputFields { name type { ...T } } } } }
      fragment T on __Type { kind name ofType { kind name ofType { kind name } } }`);
    const schema = introspection.data!.__schema;
    const named = (t: any): string => (t.ofType ? named(t.ofType) : t.name);
    const inputs = new Map<string, string[]>(
      schema.types.filter((t: any) => t.inputFields).map((t: any) => [t.name, t.inputFields.map((f: any) => named(f.type))]),
    );
    const takesId = (field: any) =>
      field.args.some((arg: any) => named(arg.type) === 'ID' || inputs.get(named(arg.type))?.includes('ID'));
    const idFields = [...schema.queryType.fields, ...schema.mutationType.fields].filter(takesId).map((f: any) => f.name);
    const covered = new Set([...Object.keys(callsOnOwned()), ...PUBLIC_ID_FIELDS]);
    expect(idFields.filter((name: string) => !covered.has(name))).toEqual([]);
    expect(idFields.length).toBeGreaterThan(15);
  });

  it('gives user B FORBIDDEN or NOT_FOUND on each of A’s objects, and changes nothing', async () => {
    const before = await snapshot();
    for (const [name, call] of Object.entries(callsOnOwned())) {
      const response = await call(b.key);
      expect.soft(response.data?.[name] ?? null, name).toBeNull();
      expect.soft(['FORBIDDEN', 'NOT_FOUND'], `${name}: ${JSON.stringify(response.errors)}`).toContain(errorCode(response));
    }
    expect(await snapshot()).toEqual(before);
  });

  it('gives anonymous callers UNAUTHENTICATED on the same calls, and changes nothing', async () => {
    const before = await snapshot();
    for (const [name, call] of Object.entries(callsOnOwned())) {
      expect.soft(errorCode(await call(undefined)), name).toBe('UNAUTHENTICATED');
    }
    expect(await snapshot()).toEqual(before);
  });

  it('lists none of A’s private objects to B', async () => {
    const lists = await ok(
      gql(url, '{ models { nodes { id } totalCount } jobs { nodes { id } totalCount } images { nodes { id } totalCount } contributions { nodes { id } totalCount } apiKeys { nodes { id } } }', {}, b.key),
    );
    expect(lists.models).toEqual({ nodes: [{ id: publicModelId }], totalCount: 1 });
    expect(lists.jobs).toEqual({ nodes: [], totalCount: 0 });
    expect(lists.images).toEqual({ nodes: [], totalCount: 0 });
    expect(lists.contributions).toEqual({ nodes: [], totalCount: 0 });
    expect(lists.apiKeys.nodes.map((k: { id: string }) => k.id)).not.toContain(owned.apiKeyId);
    const ownLists = await ok(gql(url, '{ models { nodes { id } } jobs { nodes { id } } images { nodes { id seed } } }', {}, a.key));
    expect(ownLists.models.nodes).toHaveLength(3);
    expect(ownLists.jobs.nodes.map((j: { id: string }) => j.id)).toEqual([owned.jobId]);
    expect(ownLists.images.nodes).toEqual([{ id: owned.imageId, seed: 4_000_000_000 }]);
  });

  it('shows every signed-in user the public metamodel and its contributions, but only admins change it', async () => {
    const seen = await ok(
      gql(url, 'query($id: ID!, $c: ID!) { model(id: $id) { kind concepts { token } } contributions(modelId: $id) { nodes { id } } contribution(id: $c) { userId } }', { id: publicModelId, c: publicContributionId }, b.key),
    );
    expect(seen.model).toEqual({ kind: 'META', concepts: [{ token: 'lnl' }] });
    expect(seen.contributions.nodes).toEqual([{ id: publicContributionId }]);
    expect(seen.contribution.userId).toBe(a.userId);
    const rename = 'mutation($id: ID!) { renameModel(id: $id, name: "hijacked") { name } }';
    expect(errorCode(await gql(url, rename, { id: publicModelId }, b.key))).toBe('FORBIDDEN');
    expect(errorCode(await gql(url, 'mutation($b: ID!) { createModel(input: { name: "x", kind: META, baseModelId: $b }) { id } }', { b: baseModelId }, b.key))).toBe('FORBIDDEN');
    expect((await ok(gql(url, rename, { id: publicModelId }, adminKey))).renameModel.name).toBe('hijacked');
  });

  it('lets only admins list users', async () => {
    expect(errorCode(await gql(url, '{ users { nodes { email } } }', {}, b.key))).toBe('FORBIDDEN');
    const users = await ok(gql(url, '{ users { nodes { email } } }', {}, adminKey));
    expect(users.users.nodes.map((u: { email: string }) => u.email).sort()).toEqual(['a@example.org', 'admin@example.org', 'b@example.org']);
  });

  it('lets the owner and an admin see and change A’s objects', async () => {
    const query = 'query($m: ID!, $i: ID!, $j: ID!) { model(id: $m) { headVersion { number } versions { nodes { number } } } instanceImage(id: $i) { width height sha256 } job(id: $j) { status images { prompt } } }';
    const vars = { m: owned.privateModelId, i: owned.instanceImageId, j: owned.jobId };
    for (const key of [a.key, adminKey]) {
      const seen = await ok(gql(url, query, vars, key));
      expect(seen.model.headVersion).toEqual({ number: 2 });
      expect(seen.model.versions.nodes).toEqual([{ number: 2 }, { number: 1 }]);
      expect(seen.instanceImage).toMatchObject({ width: 80, height: 64 });
      expect(seen.job.images).toEqual([{ prompt: 'a sks dog' }]);
    }
    const canceled = await ok(gql(url, 'mutation($id: ID!) { cancelJob(id: $id) { status finishedAt } }', { id: owned.jobId }, a.key));
    expect(canceled.cancelJob.status).toBe('CANCELED');
    expect(errorCode(await gql(url, 'mutation($id: ID!) { cancelJob(id: $id) { status } }', { id: owned.jobId }, a.key))).toBe('CONFLICT');
    expect(await ok(gql(url, 'mutation($id: ID!) { deleteImage(id: $id) }', { id: owned.imageId }, adminKey))).toEqual({ deleteImage: owned.imageId });
    await expect(platform.services.store.get('images/a/1.png')).rejects.toThrow();

    // Deleting a model takes its version chain, concepts and their photos with it.
    const [photo] = await platform.services.db.query('SELECT "objectKey" FROM instance_image WHERE id = $1', [owned.instanceImageId]);
    await platform.services.store.get(photo.objectKey);
    const deleted = await ok(gql(url, 'mutation($id: ID!) { deleteModel(id: $id) }', { id: owned.privateModelId }, a.key));
    expect(deleted.deleteModel).toBe(owned.privateModelId);
    const left = await platform.services.db.query('SELECT count(*)::int AS n FROM model_version WHERE "modelId" = $1', [owned.privateModelId]);
    expect(left[0].n).toBe(0);
    expect(errorCode(await gql(url, 'query($id: ID!) { instanceImage(id: $id) { id } }', { id: owned.instanceImageId }, a.key))).toBe('NOT_FOUND');
    await expect(platform.services.store.get(photo.objectKey)).rejects.toThrow();
  });
});
