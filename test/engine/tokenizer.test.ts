import { mkdtemp, readFile, rm, writeFile, copyFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClipTokenizer, TokenizerError, loadClipTokenizer } from '../../src/engine/tokenizer';
import { TINY_SD15, hasFixtures, loadReference } from '../helpers/fixtures';

const TOKENIZER_DIR = join(TINY_SD15, 'pack/tokenizer');
const read = (name: string) => readFile(join(TOKENIZER_DIR, name), 'utf8');

describe.skipIf(!hasFixtures)('CLIP tokenizer against transformers', () => {
  let reference: { prompts: string[]; input_ids: number[][]; unpadded: number[][] };
  const formats: Record<string, ClipTokenizer> = {};

  beforeAll(async () => {
    const { json } = await loadReference();
    reference = { prompts: json.tokenizer.prompts, input_ids: json.tokenizer.input_ids, unpadded: json.tokenizer_unpadded };
    const tokenizerConfigJson = await read('tokenizer_config.json');
    formats['vocab.json + merges.txt'] = ClipTokenizer.fromFiles({
      vocabJson: await read('vocab.json'),
      mergesTxt: await read('merges.txt'),
      tokenizerConfigJson,
    });
    formats['tokenizer.json'] = ClipTokenizer.fromTokenizerJson(await read('tokenizer.json'), tokenizerConfigJson);
  });

  for (const format of ['vocab.json + merges.txt', 'tokenizer.json']) {
    it(`encodes every reference prompt exactly from ${format}`, () => {
      const tokenizer = formats[format];
      expect(reference.prompts.length).toBeGreaterThan(0);
      reference.prompts.forEach((prompt, i) => {
        expect(tokenizer.encodePadded(prompt), JSON.stringify(prompt)).toEqual(reference.input_ids[i]);
        expect(tokenizer.encode(prompt, { truncation: false }), JSON.stringify(prompt)).toEqual(reference.unpadded[i]);
      });
    });
  }

  it('truncates like transformers: the first 75 text ids, then EOS', () => {
    const tokenizer = formats['tokenizer.json'];
    const long = reference.prompts.findIndex((_, i) => reference.unpadded[i].length > 77);
    expect(long).toBeGreaterThanOrEqual(0);
    const full = reference.unpadded[long];
    expect(tokenizer.encode(reference.prompts[long])).toEqual([...full.slice(0, 76), tokenizer.eosId]);
  });

  it('loads a pack folder and answers vocabulary questions', async () => {
    const tokenizer = await loadClipTokenizer(TOKENIZER_DIR);
    const vocab = JSON.parse(await read('vocab.json')) as Record<string, number>;
    expect(tokenizer.vocabSize).toBe(Object.keys(vocab).length);
    expect(tokenizer.tokenId('sks</w>')).toBe(vocab['sks</w>']);
    expect(tokenizer.isSingleToken('sks')).toBe(true);
    expect(tokenizer.isSingleToken('qzqxjv')).toBe(false);
    expect(() => tokenizer.tokenId('no such token')).toThrow(TokenizerError);
  });

  it('cleans text as BERT BasicTokenizer does: controls dropped, spaces unified, NFC, lower case, CJK split', async () => {
    const tokenizer = await loadClipTokenizer(TOKENIZER_DIR);
    const same = (a: string, b: string) => expect(tokenizer.encode(a), JSON.stringify(a)).toEqual(tokenizer.encode(b));
    same('A\u0000 PHOTO\u200b\tof\u00a0a\r\nDog\ufffd', 'a photo of a dog');
    same('cafe\u0301', 'caf\u00e9');
    same('\u72d7\u72d7', '\u72d7 \u72d7');
    same("it's <|endoftext|>x", "it 's <|endoftext|> x");
    expect(tokenizer.encode('<|endoftext|>')).toEqual([tokenizer.bosId, tokenizer.eosId, tokenizer.eosId]);
  });

  it('loads tokenizer.json when the folder has no vocab.json + merges.txt, and names what is missing', async () => {
    const only = await mkdtemp(join(tmpdir(), 'clip-tokenizer-json-'));
    try {
      await expect(loadClipTokenizer(only)).rejects.toThrow(TokenizerError);
      await copyFile(join(TOKENIZER_DIR, 'tokenizer.json'), join(only, 'tokenizer.json'));
      const tokenizer = await loadClipTokenizer(only);
      reference.prompts.forEach((prompt, i) => expect(tokenizer.encodePadded(prompt)).toEqual(reference.input_ids[i]));
    } finally {
      await rm(only, { recursive: true, force: true });
    }
  });

  it('matches added tokens of tokenizer.json or tokenizer_config.json verbatim (e.g. a textual-inversion token)', async () => {
    const json = JSON.parse(await read('tokenizer.json'));
    const id = Object.keys(json.model.vocab).length;
    json.added_tokens.push({ id, content: '<sks-dog>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: false });
    const tokenizer = ClipTokenizer.fromTokenizerJson(JSON.stringify(json), await read('tokenizer_config.json'));
    const plain = formats['tokenizer.json'];
    expect(tokenizer.vocabSize).toBe(plain.vocabSize + 1);
    expect(tokenizer.encode('a photo of <sks-dog>in snow')).toEqual([
      ...plain.encode('a photo of').slice(0, -1),
      id,
      ...plain.encode('in snow').slice(1),
    ]);
    expect(tokenizer.isSingleToken('<sks-dog>')).toBe(true);

    const config = { ...JSON.parse(await read('tokenizer_config.json')), added_tokens_decoder: { [id]: { content: '<cat>', special: false } } };
    const fromConfig = ClipTokenizer.fromFiles({ vocabJson: await read('vocab.json'), mergesTxt: await read('merges.txt'), tokenizerConfigJson: JSON.stringify(config) });
    expect(fromConfig.encode('<cat> toy')).toEqual([plain.bosId, id, ...plain.encode('toy').slice(1)]);
  });

  describe('a pack whose tokenizer_config.json pads with "!"', () => {
    let dir: string;
    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), 'clip-tokenizer-'));
      await copyFile(join(TOKENIZER_DIR, 'vocab.json'), join(dir, 'vocab.json'));
      await copyFile(join(TOKENIZER_DIR, 'merges.txt'), join(dir, 'merges.txt'));
      const config = JSON.parse(await read('tokenizer_config.json'));
      await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify({ ...config, pad_token: '!' }));
    });
    afterAll(() => rm(dir, { recursive: true, force: true }));

    it('pads with the id of "!" after the EOS', async () => {
      const tokenizer = await loadClipTokenizer(dir);
      const vocab = JSON.parse(await readFile(join(dir, 'vocab.json'), 'utf8')) as Record<string, number>;
      const unpadded = tokenizer.encode('a photo of a sks dog');
      const padded = tokenizer.encodePadded('a photo of a sks dog');
      expect(padded).toHaveLength(77);
      expect(padded.slice(0, unpadded.length)).toEqual(unpadded);
      expect(new Set(padded.slice(unpadded.length))).toEqual(new Set([vocab['!']]));
      expect(vocab['!']).not.toBe(tokenizer.eosId);
    });

    it('treats "!" as the special token it has become, as transformers does: matched verbatim, never merged', async () => {
      const tokenizer = await loadClipTokenizer(dir);
      const vocab = JSON.parse(await readFile(join(dir, 'vocab.json'), 'utf8')) as Record<string, number>;
      expect(tokenizer.encode('wow!!')).toEqual([tokenizer.bosId, vocab['wow</w>'], vocab['!'], vocab['!'], tokenizer.eosId]);
      expect(formats['vocab.json + merges.txt'].encode('wow!!')).toEqual([tokenizer.bosId, vocab['wow</w>'], vocab['!!</w>'], tokenizer.eosId]);
    });
  });
});

describe('tokenizer input errors', () => {
  it('rejects malformed files with a TokenizerError', () => {
    expect(() => ClipTokenizer.fromTokenizerJson('{not json')).toThrow(TokenizerError);
    expect(() => ClipTokenizer.fromFiles({ vocabJson: '{"a</w>": 0}', mergesTxt: '#version: 0.2\n' })).toThrow(/bos_token/);
    expect(() =>
      ClipTokenizer.fromFiles({ vocabJson: '{}', mergesTxt: '', tokenizerConfigJson: '{"model_max_length": "long"}' }),
    ).toThrow(/model_max_length/);
  });
});
