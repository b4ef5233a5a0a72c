/**
 * Byte-level BPE as CLIP uses it: every UTF-8 byte of a word is mapped to a printable character
 * (GPT-2's `bytes_to_unicode`), the last symbol carries the end-of-word marker `</w>`, and adjacent
 * symbols are merged, lowest merge rank first, until no ranked pair is left.
 */

export const END_OF_WORD = '</w>';

/** The printable bytes keep their own character; the other 68 are shifted to U+0100.. in byte order. */
function byteToUnicodeTable(): string[] {
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const table: string[] = [];
  let shifted = 0;
  for (let b = 0; b < 256; b++) table.push(String.fromCodePoint(printable(b) ? b : 256 + shifted++));
  return table;
}

const BYTE_TO_UNICODE = byteToUnicodeTable();
const utf8 = new TextEncoder();

export function byteEncode(word: string): string {
  let out = '';
  for (const byte of utf8.encode(word)) out += BYTE_TO_UNICODE[byte];
  return out;
}

/** A byte-encoded word's first symbols: its characters, the last one marked as ending the word. */
export function wordSymbols(word: string): string[] {
  const chars = Array.from(word);
  return [...chars.slice(0, -1), chars[chars.length - 1] + END_OF_WORD];
}

/** `symbols` with every adjacent `left right` joined, left to right. */
export function mergePair(symbols: readonly string[], left: string, right: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < symbols.length; i++) {
    if (symbols[i] === left && symbols[i + 1] === right) {
      out.push(left + right);
      i++;
    } else {
      out.push(symbols[i]);
    }
  }
  return out;
}

export class BytePairEncoder {
  /** Merge rank by pair, keyed `${left} ${right}` (symbols never contain a space). */
  private readonly ranks = new Map<string, number>();
  private readonly cache = new Map<string, string[]>();

  constructor(merges: ReadonlyArray<readonly [string, string]>) {
    merges.forEach(([left, right], rank) => {
      const key = `${left} ${right}`;
      if (!this.ranks.has(key)) this.ranks.set(key, rank);
    });
  }

  /** Splits one byte-encoded word into its BPE symbols; the last one ends with `</w>`. */
  encodeWord(word: string): string[] {
    const cached = this.cache.get(word);
    if (cached) return cached;
    let symbols = wordSymbols(word);
    while (symbols.length > 1) {
      let best = Infinity;
      let left = '';
      let right = '';
      for (let i = 0; i + 1 < symbols.length; i++) {
        const rank = this.ranks.get(`${symbols[i]} ${symbols[i + 1]}`);
        if (rank !== undefined && rank < best) [best, left, right] = [rank, symbols[i], symbols[i + 1]];
      }
      if (best === Infinity) break;
      symbols = mergePair(symbols, left, right);
    }
    this.cache.set(word, symbols);
    return symbols;
  }
}
