import { createHash } from 'node:crypto';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorCode, gql, gqlUpload, startTestPlatform, type TestPlatform } from './helpers';
import { userWithModel } from './setup';

const UPLOAD = 'mutation($c: ID!, $file: Upload!) { uploadInstanceImage(conceptId: $c, file: $file) { id width height sha256 } }';

describe('instance image uploads', () => {
  let platform: TestPlatform;
  let url: string;
  let key: string;
  let conceptId: string;

  const count = async () => Number((await platform.services.db.query('SELECT count(*) FROM instance_image'))[0].count);

  beforeAll(async () => {
    platform = await startTestPlatform();
    url = platform.url;
    const owner = await userWithModel(platform, 'owner@example.org', { name: 'pets' });
    key = owner.key;
    const concept = await gql(url, 'mutation($m: ID!) { createConcept(input: { modelId: $m, token: "sks", category: "dog", kind: OBJECT }) { id } }', { m: owner.modelId }, key);
    conceptId = concept.data!.createConcept.id;
  });
  afterAll(() => platform?.stop());

  it('stores the bytes in S3 with their hash and size', async () => {
    const jpeg = new Uint8Array(await sharp({ create: { width: 80, height: 64, channels: 3, background: '#39c' } }).jpeg().toBuffer());
    const response = await gqlUpload(url, UPLOAD, { c: conceptId }, { bytes: jpeg, name: 'dog.jpg', type: 'image/jpeg' }, key);
    const image = response.data!.uploadInstanceImage;
    expect(image).toMatchObject({ width: 80, height: 64, sha256: createHash('sha256').update(jpeg).digest('hex') });
    const [row] = await platform.services.db.query('SELECT "objectKey" FROM instance_image WHERE id = $1', [image.id]);
    expect(Buffer.compare(Buffer.from(await platform.services.store.get(row.objectKey)), Buffer.from(jpeg))).toBe(0);

    const listed = await gql(url, 'query($c: ID!) { instanceImages(conceptId: $c) { nodes { id } } }', { c: conceptId }, key);
    expect(listed.data?.instanceImages.nodes).toEqual([{ id: image.id }]);
    expect((await gql(url, 'mutation($id: ID!) { deleteInstanceImage(id: $id) }', { id: image.id }, key)).data).toEqual({ deleteInstanceImage: image.id });
    await expect(platform.services.store.get(row.objectKey)).rejects.toThrow();
  });

  it('refuses a photo smaller than the model trains at, storing nothing', async () => {
    const before = await count();
    const small = new Uint8Array(await sharp({ create: { width: 64, height: 48, channels: 3, background: '#39c' } }).png().toBuffer());
    const response = await gqlUpload(url, UPLOAD, { c: conceptId }, { bytes: small, name: 'small.png', type: 'image/png' }, key);
    expect(errorCode(response)).toBe('BAD_USER_INPUT');
    expect(response.errors?.[0].message).toBe("file: the photo is smaller than 64x64, the model's training size");
    expect(await count()).toBe(before);
  });

  it('refuses a file that is not an image, storing nothing', async () => {
    const before = await count();
    const response = await gqlUpload(url, UPLOAD, { c: conceptId }, { bytes: new TextEncoder().encode('#!/bin/sh\necho hi'), name: 'x.png', type: 'image/png' }, key);
    expect(errorCode(response)).toBe('BAD_USER_INPUT');
    expect(await count()).toBe(before);
  });

  it('refuses a file over the upload limit', async () => {
    const before = await count();
    const response = await gqlUpload(url, UPLOAD, { c: conceptId }, { bytes: new Uint8Array(21 * 1024 * 1024), name: 'big.png', type: 'image/png' }, key);
    expect(errorCode(response)).toBe('BAD_USER_INPUT');
    expect(response.errors?.[0].message).toMatch(/size limit/);
    expect(await count()).toBe(before);
  });
});
