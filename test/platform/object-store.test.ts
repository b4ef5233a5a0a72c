import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEmbeddedS3, type RunningS3 } from '../../src/storage/embedded-s3';
import { MULTIPART_PART_BYTES, ObjectStore } from '../../src/storage/object-store';
import { tempDir } from './helpers';

describe('ObjectStore on the embedded s3rver', () => {
  let data: Awaited<ReturnType<typeof tempDir>>;
  let s3: RunningS3;
  let store: ObjectStore;

  beforeAll(async () => {
    data = await tempDir('bd-s3-');
    s3 = await startEmbeddedS3(path.join(data.dir, 's3'), 'roundtrip', pino({ level: 'silent' }));
    store = new ObjectStore(s3.config);
    await store.ensureBucket();
  });

  afterAll(async () => {
    store?.close();
    await s3?.stop();
    await data?.remove();
  });

  // Exact byte equality catches the SDK's aws-chunked framing being stored inside objects.
  it.each([
    ['small', 1234],
    ['empty', 0],
    ['multipart-sized (3 parts)', 2 * MULTIPART_PART_BYTES + 777],
  ])('round-trips %s objects byte for byte', async (_name, size) => {
    const bytes = new Uint8Array(randomBytes(size));
    const key = `roundtrip/${size}.bin`;
    await store.put(key, bytes);
    const back = await store.get(key);
    expect(back.byteLength).toBe(size);
    expect(Buffer.compare(Buffer.from(back), Buffer.from(bytes))).toBe(0);
  });

  it('reads a byte range and the whole size, short where the object ends', async () => {
    const bytes = new Uint8Array(randomBytes(1000));
    await store.put('range.bin', bytes);
    const middle = await store.getRange('range.bin', 100, 108);
    expect(Buffer.from(middle.bytes).equals(Buffer.from(bytes.subarray(100, 108)))).toBe(true);
    expect(middle.size).toBe(1000);
    expect((await store.getRange('range.bin', 990, 1010)).bytes.byteLength).toBe(10);
  });

  it('keeps the data on disk under its directory', async () => {
    await store.put('disk/check.bin', new Uint8Array([1, 2, 3]));
    const files = await fs.readdir(path.join(data.dir, 's3', 'roundtrip'), { recursive: true });
    expect(files.some((f) => String(f).includes('check.bin'))).toBe(true);
  });

  it('deletes objects', async () => {
    await store.put('gone.bin', new Uint8Array([9]));
    await store.delete('gone.bin');
    await expect(store.get('gone.bin')).rejects.toThrow();
  });
});
