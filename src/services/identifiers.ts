import type { ClipTokenizer } from '../engine';
import { badInput, conflict } from './errors';

/**
 * Rare identifiers: the token a prompt names a learned concept by (`a sks dog`). DreamBooth needs a
 * token the base model has little meaning for, so that fine-tuning gives it one. The rule:
 *
 * 1. 2 to 12 lower-case ASCII letters (prompts carry it verbatim);
 * 2. exactly one token of the base model's tokenizer, so one embedding carries the concept;
 * 3. not a common English word or abbreviation (the compact list below), nor a word of the category;
 * 4. unique within the model (the database enforces it too).
 *
 * Identifiers handed out automatically are further restricted to "consonant-heavy" strings (no vowel,
 * `y` counting as one) and taken rarest first: CLIP's vocabulary lists merges in the order BPE learned
 * them, from frequent to rare, so a higher token id means a rarer token. Three letters first, then three
 * letters with one vowel, then four consonants: there is no cap beyond the tokenizer's vocabulary.
 */

const PATTERN = /^[a-z]{2,12}$/;
const VOWELS = /[aeiouy]/g;

/**
 * Words and abbreviations common enough in image captions that the base model already has a strong
 * meaning for them. Not a dictionary: identifiers are short, so short everyday words matter most.
 */
const COMMON_WORDS = new Set(
  `a an the and or but if of to in on at by for from with as is are was were be been am do does did has
  have had not no yes so up out off over under into onto than then too very all any some each few more
  most many much one two three four five six ten new old big small red blue green black white gray
  grey pink gold dark light good bad best top hot cold day night sun moon sky sea car bus cat dog cow
  pig fox owl bee ant bat rat man men boy girl kid kids baby mom dad art pen cup hat bag box toy bed
  tv usa uk us eu nyc la dc sf mr mrs ms dr st jr sr hd dvd cd pc bbc cnn nba nfl nhl mlb fbi cia nasa
  diy lol omg wtf btw fyi bmw vw gps rpg mvp ceo ai vr ar ok tbt ootd nft pdf jpg png gif mp mph km kg
  cm mm ft lb oz pm th nd rd xl xs xxl ps dj mc pr hr ny ca tx fl gb pt vs etc it its he she we you
  they me my our your his her their this that these those who what when where why how can will may
  might must shall should would could get got go went make made see saw look set put run let say said
  now way use time year`
    .split(/\s+/)
    .filter((word) => word.length > 0),
);

/** Why `token` cannot name a concept, or undefined when it can (uniqueness aside). */
export function identifierProblem(tokenizer: ClipTokenizer, token: string, category: string): string | undefined {
  if (!PATTERN.test(token)) return 'must be 2 to 12 lower-case letters a-z';
  if (COMMON_WORDS.has(token)) return `"${token}" is a common word; pick a rare token such as "sks"`;
  if (category.toLowerCase().split(/[^a-z]+/).includes(token)) return `"${token}" is a word of the category`;
  if (!tokenizer.isSingleToken(token)) return `"${token}" is not a single token of the base model's tokenizer`;
  return undefined;
}

/** Checks a user's choice of identifier; BAD_USER_INPUT or CONFLICT naming the field otherwise. */
export function checkIdentifier(tokenizer: ClipTokenizer, token: string, category: string, taken: ReadonlySet<string>): string {
  const problem = identifierProblem(tokenizer, token, category);
  if (problem) throw badInput(`token: ${problem}`);
  if (taken.has(token)) throw conflict(`token: the model already has a concept "${token}"`);
  return token;
}

/** The rarest free identifier for a new concept of `category` on a model whose tokens are `taken`. */
export function pickIdentifier(tokenizer: ClipTokenizer, category: string, taken: ReadonlySet<string>): string {
  for (const tier of candidateTiers(tokenizer)) {
    const free = tier.find((token) => !taken.has(token) && identifierProblem(tokenizer, token, category) === undefined);
    if (free) return free;
  }
  throw conflict('the base model has no rare identifier left for this model');
}

/** Candidate words by tier; each tier is filtered against a tokenizer only when reached. */
const TIERS: (() => string[])[] = [
  () => words(3).filter((word) => vowelCount(word) === 0),
  () => words(3).filter((word) => vowelCount(word) === 1),
  () => words(4).filter((word) => vowelCount(word) === 0),
];

const tiersByTokenizer = new WeakMap<ClipTokenizer, string[][]>();

/** Consonant-heavy single tokens by tier, rarest first in each; each tier computed once per tokenizer. */
function* candidateTiers(tokenizer: ClipTokenizer): Generator<string[]> {
  let cached = tiersByTokenizer.get(tokenizer);
  if (!cached) tiersByTokenizer.set(tokenizer, (cached = []));
  for (const [i, tier] of TIERS.entries()) {
    cached[i] ??= tier()
      .filter((word) => tokenizer.isSingleToken(word))
      .sort((a, b) => tokenizer.tokenId(`${b}</w>`) - tokenizer.tokenId(`${a}</w>`));
    yield cached[i];
  }
}

const vowelCount = (word: string) => word.match(VOWELS)?.length ?? 0;

/** Every lower-case string of `length` letters, in alphabetical order. */
function words(length: number): string[] {
  let out = [''];
  for (let i = 0; i < length; i++) out = out.flatMap((prefix) => [...'abcdefghijklmnopqrstuvwxyz'].map((c) => prefix + c));
  return out;
}
