import { FolderPackSource, type PackSource } from '../weights/pack';
import { ClipTokenizer, TokenizerError } from './clip-tokenizer';

/**
 * Loads a pack's tokenizer folder (default `tokenizer`) through its source, so a pack in object storage
 * loads as one on disk: `vocab.json` + `merges.txt` when present (the files the reference slow tokenizer
 * reads), else `tokenizer.json`; `tokenizer_config.json` is optional.
 */
export async function loadClipTokenizerFrom(source: PackSource, folder = 'tokenizer'): Promise<ClipTokenizer> {
  const path = (name: string) => (folder ? `${folder}/${name}` : name);
  const read = async (name: string) => new TextDecoder().decode(await source.read(path(name)));
  const has = (name: string) => source.exists(path(name));
  const tokenizerConfigJson = (await has('tokenizer_config.json')) ? await read('tokenizer_config.json') : undefined;
  if ((await has('vocab.json')) && (await has('merges.txt'))) {
    return ClipTokenizer.fromFiles({ vocabJson: await read('vocab.json'), mergesTxt: await read('merges.txt'), tokenizerConfigJson });
  }
  if (await has('tokenizer.json')) return ClipTokenizer.fromTokenizerJson(await read('tokenizer.json'), tokenizerConfigJson);
  throw new TokenizerError(`${folder || 'the pack'} holds neither vocab.json + merges.txt nor tokenizer.json`);
}

/** Loads a tokenizer folder on disk. */
export function loadClipTokenizer(dir: string): Promise<ClipTokenizer> {
  return loadClipTokenizerFrom(new FolderPackSource(dir), '');
}
