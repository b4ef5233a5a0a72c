import { BytePairEncoder, byteEncode } from './byte-level-bpe';
import { cleanText } from './clean-text';

/** A tokenizer folder or its settings are unusable; nothing was built. */
export class TokenizerError extends Error {
  override readonly name = 'TokenizerError';
}

const START_OF_TEXT = '<|startoftext|>';
const END_OF_TEXT = '<|endoftext|>';

/**
 * CLIP's pre-tokenization pattern, case-insensitive as in transformers: the two special tokens, English
 * contractions, runs of letters, single digits, and runs of anything else that is not whitespace.
 */
const PIECES = /<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+/giu;

/**
 * What byte-pair encoding sees of a text: cleaned, split by CLIP's pattern, each piece's bytes as printable
 * characters (special tokens stay as they are). Training a vocabulary counts these words.
 */
export function clipWords(text: string): string[] {
  return Array.from(cleanText(text).matchAll(PIECES), ([piece]) => (piece === START_OF_TEXT || piece === END_OF_TEXT ? piece : byteEncode(piece)));
}

/** The parts of `tokenizer_config.json` that change encoding; transformers' defaults for CLIP otherwise. */
export interface ClipTokenizerSettings {
  bosToken: string;
  eosToken: string;
  padToken: string;
  unkToken: string;
  modelMaxLength: number;
  truncationSide: 'right' | 'left';
  /** `added_tokens_decoder` entries: tokens matched verbatim in the text, with their ids. */
  addedTokens: Array<{ content: string; id: number }>;
}

/** Special tokens in tokenizer_config.json are either a string or an AddedToken object `{content, ...}`. */
function tokenText(value: unknown, key: string, fallback: string): string {
  if (value === undefined || value === null) return fallback;
  if (typeof value === 'string') return value;
  if (typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string') {
    return (value as { content: string }).content;
  }
  throw new TokenizerError(`tokenizer_config.json: ${key} must be a string or {"content": string}`);
}

function parseTokenizerConfig(tokenizerConfigJson?: string): ClipTokenizerSettings {
  let config: Record<string, unknown> = {};
  if (tokenizerConfigJson !== undefined) {
    try {
      config = JSON.parse(tokenizerConfigJson);
    } catch (error) {
      throw new TokenizerError(`tokenizer_config.json is not valid JSON: ${(error as Error).message}`);
    }
  }
  const maxLength = config.model_max_length ?? 77;
  if (!Number.isInteger(maxLength) || (maxLength as number) < 2) {
    throw new TokenizerError(`tokenizer_config.json: model_max_length must be an integer >= 2, got ${String(maxLength)}`);
  }
  const side = config.truncation_side ?? 'right';
  if (side !== 'right' && side !== 'left') {
    throw new TokenizerError(`tokenizer_config.json: truncation_side must be "right" or "left", got ${String(side)}`);
  }
  return {
    bosToken: tokenText(config.bos_token, 'bos_token', START_OF_TEXT),
    eosToken: tokenText(config.eos_token, 'eos_token', END_OF_TEXT),
    padToken: tokenText(config.pad_token, 'pad_token', END_OF_TEXT),
    unkToken: tokenText(config.unk_token, 'unk_token', END_OF_TEXT),
    modelMaxLength: maxLength as number,
    truncationSide: side,
    addedTokens: Object.entries((config.added_tokens_decoder ?? {}) as Record<string, unknown>).map(([id, token]) => ({
      content: tokenText(token, `added_tokens_decoder.${id}`, ''),
      id: Number(id),
    })),
  };
}

function parseJson(text: string, file: string): any {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new TokenizerError(`${file} is not valid JSON: ${(error as Error).message}`);
  }
}

/**
 * transformers' CLIPTokenizer reads merges.txt after its `#version` header and keeps at most
 * 49152 - 256 - 2 merges (the size of the original CLIP vocabulary less bytes and specials).
 */
const MAX_MERGES = 49152 - 256 - 2;

function parseMergesTxt(mergesTxt: string): Array<[string, string]> {
  const lines = mergesTxt.trim().split('\n').slice(1, MAX_MERGES + 1);
  return lines.map((line, i) => {
    const parts = line.trim().split(/\s+/);
    if (parts.length !== 2) throw new TokenizerError(`merges.txt line ${i + 2} is not "left right": ${JSON.stringify(line)}`);
    return [parts[0], parts[1]];
  });
}

/** Byte-level BPE tokenizer of CLIP's text encoder, matching transformers' slow `CLIPTokenizer` id for id. */
export class ClipTokenizer {
  readonly bosId: number;
  readonly eosId: number;
  readonly padId: number;
  readonly maxLength: number;
  private readonly unkId: number;
  private readonly bpe: BytePairEncoder;
  private readonly vocab: Map<string, number>;
  /** Matches added tokens (the special tokens among them), longest first; they bypass clean-up and BPE. */
  private readonly addedTokenPattern: RegExp;

  private constructor(
    vocab: Map<string, number>,
    merges: ReadonlyArray<readonly [string, string]>,
    private readonly settings: ClipTokenizerSettings,
    addedTokens: ReadonlyArray<{ content: string; id: number }> = [],
  ) {
    this.vocab = new Map(vocab);
    const added = [...addedTokens, ...settings.addedTokens];
    for (const { content, id } of added) {
      if (!Number.isInteger(id) || id < 0) throw new TokenizerError(`added token ${JSON.stringify(content)} has no valid id`);
      this.vocab.set(content, id);
    }
    const specials = [settings.bosToken, settings.eosToken, settings.padToken, settings.unkToken];
    const verbatim = [...new Set([...specials, ...added.map((token) => token.content)])].filter((token) => token.length > 0);
    const escape = (token: string) => token.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    this.addedTokenPattern = new RegExp(verbatim.sort((a, b) => b.length - a.length).map(escape).join('|'), 'g');
    this.bpe = new BytePairEncoder(merges);
    this.bosId = this.specialId(settings.bosToken, 'bos_token');
    this.eosId = this.specialId(settings.eosToken, 'eos_token');
    this.padId = this.specialId(settings.padToken, 'pad_token');
    this.unkId = this.specialId(settings.unkToken, 'unk_token');
    this.maxLength = settings.modelMaxLength;
  }

  /** The classic pair `vocab.json` + `merges.txt`, with the folder's optional `tokenizer_config.json`. */
  static fromFiles(files: { vocabJson: string; mergesTxt: string; tokenizerConfigJson?: string }): ClipTokenizer {
    const vocab = parseJson(files.vocabJson, 'vocab.json');
    if (typeof vocab !== 'object' || vocab === null || Array.isArray(vocab)) {
      throw new TokenizerError('vocab.json must map tokens to ids');
    }
    return new ClipTokenizer(
      toVocabMap(Object.entries(vocab), 'vocab.json'),
      parseMergesTxt(files.mergesTxt),
      parseTokenizerConfig(files.tokenizerConfigJson),
    );
  }

  /** The HF tokenizers format: `model.vocab`, `model.merges` ("a b" strings or pairs) and `added_tokens`. */
  static fromTokenizerJson(tokenizerJson: string, tokenizerConfigJson?: string): ClipTokenizer {
    const parsed = parseJson(tokenizerJson, 'tokenizer.json');
    const model = parsed?.model;
    if (model?.type !== 'BPE' || typeof model.vocab !== 'object' || !Array.isArray(model.merges)) {
      throw new TokenizerError('tokenizer.json: expected a BPE model with vocab and merges');
    }
    if ((model.end_of_word_suffix ?? '') !== '</w>') {
      throw new TokenizerError(`tokenizer.json: CLIP BPE needs end_of_word_suffix "</w>", got ${JSON.stringify(model.end_of_word_suffix)}`);
    }
    const merges = (model.merges as unknown[]).map((merge, i): [string, string] => {
      const pair = typeof merge === 'string' ? merge.split(' ') : merge;
      if (!Array.isArray(pair) || pair.length !== 2 || !pair.every((s) => typeof s === 'string')) {
        throw new TokenizerError(`tokenizer.json: merge ${i} is not a pair of symbols`);
      }
      return [pair[0], pair[1]];
    });
    const added = (parsed.added_tokens ?? []) as Array<{ content: string; id: number }>;
    return new ClipTokenizer(
      toVocabMap(Object.entries(model.vocab), 'tokenizer.json'),
      merges,
      parseTokenizerConfig(tokenizerConfigJson),
      added.map(({ content, id }) => ({ content, id })),
    );
  }

  /** Rows the text encoder's embedding needs: the vocabulary and the added tokens (transformers' `len(tokenizer)`). */
  get vocabSize(): number {
    return this.vocab.size;
  }

  /** The id of one vocabulary entry, e.g. `tokenId('sks</w>')` or `tokenId('<|endoftext|>')`. */
  tokenId(token: string): number {
    const id = this.vocab.get(token);
    if (id === undefined) throw new TokenizerError(`token ${JSON.stringify(token)} is not in the vocabulary`);
    return id;
  }

  /**
   * The tokens of a text, without BOS/EOS or truncation. As in transformers, added tokens (special ones
   * included, even a pad token such as `!`) are cut out verbatim first; the text between them is cleaned,
   * split by CLIP's pattern and byte-pair encoded.
   */
  tokenize(text: string): string[] {
    const tokens: string[] = [];
    let start = 0;
    for (const match of text.matchAll(this.addedTokenPattern)) {
      tokens.push(...this.tokenizePlain(text.slice(start, match.index)), match[0]);
      start = match.index + match[0].length;
    }
    tokens.push(...this.tokenizePlain(text.slice(start)));
    return tokens;
  }

  private tokenizePlain(text: string): string[] {
    return clipWords(text).flatMap((word) => (word === START_OF_TEXT || word === END_OF_TEXT ? [word] : this.bpe.encodeWord(word)));
  }

  /**
   * `[BOS, ...text, EOS]`, unpadded; the text is truncated so the whole fits `model_max_length` unless
   * `truncation` is false (what a pipeline uses to report the part of a prompt the encoder never sees).
   */
  encode(text: string, { truncation = true }: { truncation?: boolean } = {}): number[] {
    let ids = this.tokenize(text).map((token) => this.vocab.get(token) ?? this.unkId);
    const room = this.maxLength - 2;
    if (truncation && ids.length > room) ids = this.settings.truncationSide === 'right' ? ids.slice(0, room) : ids.slice(ids.length - room);
    return [this.bosId, ...ids, this.eosId];
  }

  /** `encode` padded with the pad token to exactly `model_max_length` ids: the text encoder's input. */
  encodePadded(text: string): number[] {
    const ids = this.encode(text);
    return [...ids, ...new Array<number>(this.maxLength - ids.length).fill(this.padId)];
  }

  /** Whether ` word` is one token of the vocabulary: the test for a rare identifier such as `sks`. */
  isSingleToken(word: string): boolean {
    const tokens = this.tokenize(` ${word}`);
    return tokens.length === 1 && this.vocab.has(tokens[0]);
  }

  private specialId(token: string, key: string): number {
    const id = this.vocab.get(token);
    if (id === undefined) throw new TokenizerError(`${key} ${JSON.stringify(token)} is not in the vocabulary`);
    return id;
  }
}

function toVocabMap(entries: Array<[string, unknown]>, file: string): Map<string, number> {
  const vocab = new Map<string, number>();
  for (const [token, id] of entries) {
    if (!Number.isInteger(id) || (id as number) < 0) throw new TokenizerError(`${file}: id of ${JSON.stringify(token)} is not a non-negative integer`);
    vocab.set(token, id as number);
  }
  return vocab;
}
