import { tokenizerFilesFromMerges, type ClipTokenizerFiles } from '../../src/engine/packs';
import { Rng } from '../../src/engine/random';
import { clipWords } from '../../src/engine/tokenizer/clip-tokenizer';
import { trainClipBpe } from '../../src/engine/tokenizer';
import { hasMeaning } from '../../src/services/identifiers';

/** Identifiers preferred first: the names DreamBooth's paper and the BIG docs use. */
const PREFERRED = ['sks', 'lnl'];

/**
 * `count` rare identifiers for the vocabulary: three consonants, none with a meaning the platform knows (a word,
 * an offensive word, a well-known abbreviation: services/identifiers.ts), none a word of the captions, in a seeded order with the preferred ones last (the platform hands out the highest token id
 * first, and reserved tokens are appended in this order).
 */
export function reservedIdentifiers(captions: readonly string[], count: number, seed: number): string[] {
  const used = new Set(captions.flatMap((caption) => caption.split(/[^a-z]+/)));
  const consonants = [...'bcdfghjklmnpqrstvwxz'];
  const candidates = consonants.flatMap((a) => consonants.flatMap((b) => consonants.map((c) => a + b + c)))
    .filter((word) => !hasMeaning(word) && !used.has(word) && !PREFERRED.includes(word));
  const rng = new Rng(seed);
  for (let i = candidates.length - 1; i > 0; i--) {
    const j = Math.floor(rng.nextUniform() * (i + 1));
    [candidates[i], candidates[j]] = [candidates[j], candidates[i]];
  }
  return [...candidates.slice(0, count - PREFERRED.length), ...[...PREFERRED].reverse()];
}

/**
 * The base model's tokenizer: byte-level BPE learned on the captions (every word of them ends as one token, as
 * merges run until no pair repeats) plus the reserved identifiers, in CLIP's file format.
 */
export function trainVocabulary(captions: readonly string[], seed: number): { files: ClipTokenizerFiles; reserved: string[] } {
  const reserved = reservedIdentifiers(captions, 256, seed);
  const merges = trainClipBpe(captions, { merges: 8000, reserved });
  return { files: tokenizerFilesFromMerges(merges), reserved };
}

/** How many BPE words the captions hold (a check that the vocabulary covers them). */
export const wordCount = (captions: readonly string[]) => new Set(captions.flatMap((caption) => clipWords(caption))).size;
