import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ClipTokenizer, TokenizerError } from './clip-tokenizer';

/**
 * Loads a pack's `tokenizer/` folder from disk: `vocab.json` + `merges.txt` when present (the files the
 * reference slow tokenizer reads), else `tokenizer.json`; `tokenizer_config.json` is optional.
 */
export async function loadClipTokenizer(dir: string): Promise<ClipTokenizer> {
  const read = (name: string) => readFile(join(dir, name), 'utf8');
  const tokenizerConfigJson = existsSync(join(dir, 'tokenizer_config.json')) ? await read('tokenizer_config.json') : undefined;
  if (existsSync(join(dir, 'vocab.json')) && existsSync(join(dir, 'merges.txt'))) {
    return ClipTokenizer.fromFiles({ vocabJson: await read('vocab.json'), mergesTxt: await read('merges.txt'), tokenizerConfigJson });
  }
  if (existsSync(join(dir, 'tokenizer.json'))) {
    return ClipTokenizer.fromTokenizerJson(await read('tokenizer.json'), tokenizerConfigJson);
  }
  throw new TokenizerError(`${dir} holds neither vocab.json + merges.txt nor tokenizer.json`);
}
