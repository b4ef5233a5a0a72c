import { posix } from 'node:path';
import { PackError, type RangedPackSource } from '../engine';
import { isMissing, type ObjectStore } from './object-store';

/** A diffusers pack uploaded to object storage: its files are the objects under one key prefix. */
export class S3PackSource implements RangedPackSource {
  readonly prefix: string;

  constructor(
    readonly store: ObjectStore,
    prefix: string,
  ) {
    this.prefix = prefix.replace(/\/+$/, '');
  }

  async read(relPath: string): Promise<Uint8Array> {
    try {
      return await this.store.get(this.#key(relPath));
    } catch (error) {
      if (isMissing(error)) throw new PackError('MISSING_FILE', `pack has no ${relPath}`);
      throw error;
    }
  }

  /** Bytes [start, end) of a pack file and the file's size, without reading the rest. */
  async readRange(relPath: string, start: number, end: number): Promise<{ bytes: Uint8Array; size: number }> {
    try {
      return await this.store.getRange(this.#key(relPath), start, end);
    } catch (error) {
      if (isMissing(error)) throw new PackError('MISSING_FILE', `pack has no ${relPath}`);
      throw error;
    }
  }

  exists(relPath: string): Promise<boolean> {
    return this.store.exists(this.#key(relPath));
  }

  /** Keys stay under the prefix: a pack's own files (a shard index) must not name other objects. */
  #key(relPath: string): string {
    const normalized = posix.normalize(relPath);
    if (posix.isAbsolute(normalized) || normalized === '..' || normalized.startsWith('../')) {
      throw new PackError('INVALID_PATH', `pack path ${relPath} leaves the pack`);
    }
    return `${this.prefix}/${normalized}`;
  }
}
