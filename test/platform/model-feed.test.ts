import { createClient, type Client } from 'graphql-ws';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { errorCode, gql, gqlUpload, ok, signUp, startTestPlatform, type TestPlatform, wsGql } from './helpers';
import { createModel, newAdminKey } from './setup';

const FEED = 'subscription($id: ID!) { modelUpdated(modelId: $id) { modelId type contributionId versionId jobId at } }';

interface ModelUpdate {
  modelId: string;
  type: string;
  contributionId: string | null;
  versionId: string | null;
  jobId: string | null;
  at: string;
}


/** A live subscription to a model's events, collecting them until closed. */
class Feed {
  readonly events: ModelUpdate[] = [];
  readonly #client: Client;
  readonly ready: Promise<void>;

  constructor(url: string, key: string, modelId: string) {
    this.#client = createClient({ url: url.replace(/^http/, 'ws'), webSocketImpl: WebSocket, connectionParams: { authorization: `Bearer ${key}` }, retryAttempts: 0 });
    let opened!: () => void;
    this.ready = new Promise((resolve) => (opened = resolve));
    this.#client.on('connected', () => setTimeout(opened, 300)); // the subscribe message goes out with the connection
    this.#client.subscribe<{ modelUpdated: ModelUpdate }>(
      { query: FEED, variables: { id: modelId } },
      { next: ({ data }) => data && this.events.push(data.modelUpdated), error: () => {}, complete: () => {} },
    );
  }

  async until(count: number, timeoutMs = 120_000): Promise<ModelUpdate[]> {
    const deadline = Date.now() + timeoutMs;
    while (this.events.length < count) {
      if (Date.now() > deadline) throw new Error(`feed timed out with ${JSON.stringify(this.events.map((e) => e.type))}`);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    return this.events;
  }

  close(): Promise<void> {
    return this.#client.dispose() as Promise<void>;
  }
}

/** `modelUpdated`: the public metamodel's contributions, training, versions and reverts as they happen, to whoever sees the model. */
describe('modelUpdated', () => {
  let platform: TestPlatform;
  let admin: string;
  let user: { key: string; userId: string };
  let stranger: { key: string; userId: string };
  let metaModelId: string;
  const feeds: Feed[] = [];

  const contribute = async (key: string, modelId: string, target: string) => {
    const png = await sharp({ create: { width: 64, height: 64, channels: 3, background: '#46a' } }).png().toBuffer();
    const photo = (await ok(gqlUpload(platform.url, 'mutation($file: Upload!) { uploadInstanceImage(file: $file) { id } }', {}, { bytes: png, name: 'p.png', type: 'image/png' }, key))).uploadInstanceImage.id;
    return (await ok(gql(platform.url, 'mutation($input: StartFineTuneInput!) { startFineTune(input: $input) { job { id } contribution { id } model { id } } }', {
      input: { target, modelId, category: 'kite', kind: 'OBJECT', method: 'LORA', steps: 1, instanceImageIds: [photo] },
    }, key))).startFineTune;
  };

  beforeAll(async () => {
    platform = await startTestPlatform();
    admin = await newAdminKey(platform, 'root@example.org');
    user = await signUp(platform.url, 'feed@example.org');
    stranger = await signUp(platform.url, 'stranger@example.org');
    metaModelId = await createModel(platform, admin, { kind: 'META', name: 'public' });
  }, 120_000);
  afterAll(async () => {
    for (const feed of feeds) await feed.close();
    await platform?.stop();
  });

  it('tells every subscriber of the public metamodel of a contribution queued, training and merged, then of its revert', async () => {
    const watching = [new Feed(platform.url, stranger.key, metaModelId), new Feed(platform.url, admin, metaModelId)];
    feeds.push(...watching);
    await Promise.all(watching.map((feed) => feed.ready));
    const started = await contribute(user.key, metaModelId, 'META');
    for (const feed of watching) await feed.until(3);
    const version = (await ok(gql(platform.url, 'query($id: ID!) { contribution(id: $id) { status resultingVersionId } }', { id: started.contribution.id }, user.key))).contribution;
    expect(version.status).toBe('MERGED');
    const expected = [
      { type: 'CONTRIBUTION_QUEUED', contributionId: started.contribution.id, versionId: null, jobId: started.job.id },
      { type: 'TRAINING', contributionId: started.contribution.id, versionId: null, jobId: started.job.id },
      { type: 'VERSION_APPENDED', contributionId: started.contribution.id, versionId: version.resultingVersionId, jobId: started.job.id },
    ].map((event) => ({ ...event, modelId: metaModelId, at: expect.any(String) }));
    for (const feed of watching) expect(feed.events).toEqual(expected);

    await ok(gql(platform.url, 'mutation($id: ID!) { revertContribution(id: $id) { status } }', { id: started.contribution.id }, admin));
    for (const feed of watching) await feed.until(4);
    const head = (await ok(gql(platform.url, 'query($id: ID!) { modelVersions(modelId: $id, first: 1) { nodes { id } } }', { id: metaModelId }, user.key))).modelVersions.nodes[0].id;
    for (const feed of watching) expect(feed.events[3]).toMatchObject({ type: 'REVERTED', contributionId: started.contribution.id, versionId: head, jobId: null });
  }, 180_000);

  it('tells the owner of their private model; others cannot subscribe to it', async () => {
    const own = await createModel(platform, user.key, { kind: 'PRIVATE_META', name: 'mine' });
    expect(errorCode(await wsGql(platform.url, FEED, { id: own }, stranger.key))).toBe('NOT_FOUND');
    expect(errorCode(await wsGql(platform.url, FEED, { id: own }))).toBe('UNAUTHENTICATED');
    const feed = new Feed(platform.url, user.key, own);
    const other = new Feed(platform.url, user.key, metaModelId);
    feeds.push(feed, other);
    await Promise.all([feed.ready, other.ready]);
    const started = await contribute(user.key, own, 'PRIVATE_META');
    const events = await feed.until(3);
    expect(events.map((e) => [e.type, e.modelId, e.jobId])).toEqual([['CONTRIBUTION_QUEUED', own, started.job.id], ['TRAINING', own, started.job.id], ['VERSION_APPENDED', own, started.job.id]]);
    expect(other.events).toEqual([]); // another model's feed hears nothing of it

    const canceled = await contribute(user.key, own, 'PRIVATE_META');
    await ok(gql(platform.url, 'mutation($id: ID!) { cancelJob(id: $id) { status } }', { id: canceled.job.id }, user.key));
    for (const deadline = Date.now() + 60_000; !feed.events.some((e) => e.type === 'CONTRIBUTION_FAILED');) {
      if (Date.now() > deadline) throw new Error(`no CONTRIBUTION_FAILED in ${JSON.stringify(feed.events.map((e) => e.type))}`);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    // A worker may have taken it before the cancel (TRAINING); it never merges.
    const told = feed.events.slice(3).filter((e) => e.type !== 'TRAINING');
    expect(told.map((e) => [e.type, e.contributionId, e.jobId])).toEqual([
      ['CONTRIBUTION_QUEUED', canceled.contribution.id, canceled.job.id], ['CONTRIBUTION_FAILED', canceled.contribution.id, canceled.job.id],
    ]);
  }, 180_000);
});
