import { BytePairEncoder, mergePair, wordSymbols } from './byte-level-bpe';
import { clipWords } from './clip-tokenizer';

export type Merge = [left: string, right: string];

export interface BpeTrainingOptions {
  /** How many merges to learn at most; learning also stops when no pair occurs twice. */
  merges: number;
  /**
   * Words that must each be one token although no training text contains them: the rare identifiers
   * DreamBooth names concepts by (`sks`). Their merges come after every learned one, so they never change how
   * a training text is split, and their embeddings are left as initialized by pretraining.
   */
  reserved?: readonly string[];
}

/**
 * Byte-level BPE learned as CLIP's vocabulary was: the texts split into CLIP's words, each word's bytes the
 * first symbols (the last marked `</w>`), then the most frequent adjacent pair merged, over and over. Ties go
 * to the pair that sorts first, so the same texts always give the same merges.
 */
export function trainClipBpe(texts: Iterable<string>, { merges: count, reserved = [] }: BpeTrainingOptions): Merge[] {
  const words = new Map<string, { symbols: string[]; count: number }>();
  for (const text of texts) {
    for (const word of clipWords(text)) {
      const entry = words.get(word) ?? words.set(word, { symbols: wordSymbols(word), count: 0 }).get(word)!;
      entry.count++;
    }
  }
  const merges: Merge[] = [];
  while (merges.length < count) {
    const pairs = new Map<string, number>();
    for (const { symbols, count: n } of words.values()) {
      for (let i = 0; i + 1 < symbols.length; i++) {
        const key = `${symbols[i]} ${symbols[i + 1]}`;
        pairs.set(key, (pairs.get(key) ?? 0) + n);
      }
    }
    let best: string | undefined;
    let bestCount = 1;
    for (const [key, n] of pairs) {
      if (n > bestCount || (n === bestCount && best !== undefined && key < best)) [best, bestCount] = [key, n];
    }
    if (best === undefined) break;
    const [left, right] = best.split(' ') as Merge;
    merges.push([left, right]);
    for (const entry of words.values()) entry.symbols = mergePair(entry.symbols, left, right);
  }
  for (const word of reserved) appendWordMerges(merges, word);
  return merges;
}

/**
 * Appends merges until ` word` is one token. Encoding applies the earliest merges first, so each appended
 * merge joins the first two symbols of what the merges so far leave, until one symbol remains.
 */
function appendWordMerges(merges: Merge[], word: string): void {
  const [encoded] = clipWords(word);
  if (clipWords(word).length !== 1) throw new RangeError(`reserved identifier ${JSON.stringify(word)} must be one word`);
  for (;;) {
    const symbols = new BytePairEncoder(merges).encodeWord(encoded);
    if (symbols.length === 1) return;
    merges.push([symbols[0], symbols[1]]);
  }
}
