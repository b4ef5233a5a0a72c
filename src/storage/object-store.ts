import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import type { Readable } from 'node:stream';
import type { S3Config } from '../config';

/** S3's minimum part size (except the last part); bigger objects go up in parts of this size. */
export const MULTIPART_PART_BYTES = 5 * 1024 * 1024;

/** Objects (weights, instance images, generated images) in one bucket, on any S3-compatible store. */
export class ObjectStore {
  private readonly client: S3Client;
  readonly bucket: string;

  constructor(config: S3Config) {
    this.bucket = config.bucket;
    this.client = new S3Client({
      endpoint: config.endpoint,
      region: config.region,
      credentials: { accessKeyId: config.accessKeyId, secretAccessKey: config.secretAccessKey },
      // Path-style works everywhere (s3rver, MinIO, AWS); virtual-host style needs DNS per bucket.
      forcePathStyle: true,
      // The SDK's default aws-chunked checksum framing is stored verbatim by stores that don't
      // understand it (s3rver), corrupting objects. Checksums only when the operation requires them.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    });
  }

  /** Creates the bucket unless it exists. */
  async ensureBucket(): Promise<void> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
    } catch {
      await this.client.send(new CreateBucketCommand({ Bucket: this.bucket }));
    }
  }

  async put(key: string, body: Uint8Array, contentType = 'application/octet-stream'): Promise<void> {
    if (body.byteLength <= MULTIPART_PART_BYTES) {
      await this.client.send(
        new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: body, ContentType: contentType }),
      );
      return;
    }
    await this.putMultipart(key, body, contentType);
  }

  async get(key: string): Promise<Uint8Array> {
    const out = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }));
    return out.Body ? await out.Body.transformToByteArray() : new Uint8Array();
  }

  /**
   * Bytes [start, end) of the object (fewer where it ends sooner) and the object's whole size: a
   * ranged GET, so a checkpoint's header is read without its gigabytes of data.
   */
  async getRange(key: string, start: number, end: number): Promise<{ bytes: Uint8Array; size: number }> {
    const out = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key, Range: `bytes=${start}-${end - 1}` }));
    const bytes = out.Body ? await out.Body.transformToByteArray() : new Uint8Array();
    // `Content-Range: bytes 0-7/4265146304`; a store that ignores Range sends the whole object instead.
    const size = out.ContentRange ? Number(out.ContentRange.split('/')[1]) : bytes.byteLength;
    return { bytes: out.ContentRange ? bytes : bytes.subarray(start, end), size };
  }

  /** The object as a stream, for answering a download without holding it in memory; null if absent. */
  async stream(key: string): Promise<{ body: Readable; contentType?: string; contentLength?: number } | null> {
    try {
      const out = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }));
      return { body: out.Body as Readable, contentType: out.ContentType, contentLength: out.ContentLength };
    } catch (error) {
      if (isMissing(error)) return null;
      throw error;
    }
  }

  async exists(key: string): Promise<boolean> {
    try {
      await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
      return true;
    } catch (error) {
      if (isMissing(error)) return false;
      throw error;
    }
  }

  /** Every key under `prefix`, in S3's (lexicographic) order. */
  async list(prefix: string): Promise<string[]> {
    const keys: string[] = [];
    let ContinuationToken: string | undefined;
    do {
      const page = await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, ContinuationToken }));
      keys.push(...(page.Contents ?? []).map((object) => object.Key!));
      ContinuationToken = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (ContinuationToken);
    return keys;
  }

  /** Resolves when the store answers for the bucket; rejects with why not (health checks, outage recovery). */
  async ping(): Promise<void> {
    await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
  }

  async delete(key: string): Promise<void> {
    await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }));
  }

  close(): void {
    this.client.destroy();
  }

  private async putMultipart(key: string, body: Uint8Array, contentType: string): Promise<void> {
    const { UploadId } = await this.client.send(
      new CreateMultipartUploadCommand({ Bucket: this.bucket, Key: key, ContentType: contentType }),
    );
    try {
      const parts = [];
      for (let offset = 0, partNumber = 1; offset < body.byteLength; offset += MULTIPART_PART_BYTES, partNumber++) {
        const chunk = body.subarray(offset, offset + MULTIPART_PART_BYTES);
        const { ETag } = await this.client.send(
          new UploadPartCommand({ Bucket: this.bucket, Key: key, UploadId, PartNumber: partNumber, Body: chunk }),
        );
        parts.push({ ETag, PartNumber: partNumber });
      }
      await this.client.send(
        new CompleteMultipartUploadCommand({
          Bucket: this.bucket,
          Key: key,
          UploadId,
          MultipartUpload: { Parts: parts },
        }),
      );
    } catch (error) {
      await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId }));
      throw error;
    }
  }
}

/** S3 names a missing object NoSuchKey on GET and NotFound on HEAD (which has no body to name it). */
export function isMissing(error: unknown): boolean {
  const name = (error as { name?: string } | null)?.name;
  return name === 'NoSuchKey' || name === 'NotFound';
}
