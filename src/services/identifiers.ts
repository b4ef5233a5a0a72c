import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import wordListPath from 'word-list';
import type { ClipTokenizer } from '../engine';
import { badInput, conflict } from './errors';

/**
 * Rare identifiers: the token a prompt names a learned concept by (`a sks dog`). DreamBooth needs a
 * token the base model has little meaning for, so that fine-tuning gives it one. The rule:
 *
 * 1. 2 to 12 lower-case ASCII letters (prompts carry it verbatim);
 * 2. exactly one token of the base model's tokenizer, so one embedding carries the concept;
 * 3. not an English word (the 274,000 of `word-list`, and the caption words below), not offensive (LDNOOBW's
 *    English list, from `naughty-words`, and the consonant spellings of obscenities and slurs below), not a
 *    well-known abbreviation, nor a word of the category;
 * 4. unique within the model (the database enforces it too).
 *
 * Identifiers handed out automatically are consonant-heavy strings (`y` counting as a vowel), taken rarest first:
 * a tokenizer lists merges in the order BPE learned them, from frequent to rare, so a higher token id means a
 * rarer token. Three consonants first, then four, then three letters with one vowel: no cap beyond the vocabulary.
 * In CLIP's vocabulary a consonant string is a whole-word token only because web captions used it, so most of the
 * rarest are still someone's abbreviation: the lists below keep out the offensive and the well-known ones. A
 * tokenizer with reserved identifiers (the bundled base model's) gives tokens no training text ever contained.
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
  now way use time year hmm brr shh psst pst tsk pfft grr zzz nth cwm crwth`
    .split(/\s+/)
    .filter((word) => word.length > 0),
);

/**
 * Obscenities, slurs, hate symbols, drugs and weapons in the consonant spellings LDNOOBW's word list leaves out,
 * and well-known abbreviations whose meaning would leak into a concept (agencies, brands, franchises, internet
 * slang, file formats).
 */
const BLOCKED = new Set(
  `fck fk fkn fuk fuq fcuk fux fkd fkr fcking sht shyt sh1t cnt cnts kunt dck dk dks dkhd fgt fgts fggt fag fags ngr
  ngga nga nggr kkk kys kms stfu gtfo fml ffs smh pos sob mf mfr mfs bj hj bdsm bbw milf dilf nsfw nsfl xxx xx prn
  pr0n pwn pwnd cck cbt cmshot cum jap jizz twt wnkr wnk thot hoe ho slt slut tit tits nip nips sx sxy sxx rape rpst
  lsd thc mdma dmt pcp gbh ghb ss sa nsdap nzi ww wwii isis pkk ira alf hts jfc mgs dbz gta cod wow pkmn nsync http
  https www ftp ssh sql xml html css php exe dll jpeg bmp tif svg doc xls ppt mpg mkv avi flv wmv wav ptsd adhd ocd
  hiv aids std stds lgbt lgbtq kgb nsa atf dea irs nhs nypd lapd usaf usmc nato un ufc wwe nascar fifa kfc ibm hp hbo
  mtv cnbc msnbc wsj nyt dnc gop bjp anc lmao lmfao rofl brb ttyl gtg lmk idk idc nvm pls plz thx ty np jk irl tbh
  imo imho afaik dm dms pms rt ff ftw ftl smd stfd dtf wyd hbd gn gm tmi yolo mmj smg grl bpd hpv`
    .split(/\s+/)
    .filter((word) => word.length > 0),
);

/** LDNOOBW's English list ("List of Dirty, Naughty, Obscene, and Otherwise Bad Words", CC-BY 4.0): its single words. */
const NAUGHTY_WORDS = new Set(
  (createRequire(import.meta.url)('naughty-words/en.json') as string[]).filter((entry) => PATTERN.test(entry)),
);

const ENGLISH_WORDS = new Set(readFileSync(wordListPath, 'utf8').split('\n'));

const isBlocked = (token: string): boolean => BLOCKED.has(token) || NAUGHTY_WORDS.has(token);
const isWord = (token: string): boolean => COMMON_WORDS.has(token) || ENGLISH_WORDS.has(token);

/** Whether `token` already means something (a word, an offensive word, a well-known abbreviation): no identifier. */
export const hasMeaning = (token: string): boolean => isWord(token) || isBlocked(token);

/** Why `token` cannot name a concept, or undefined when it can (uniqueness aside). */
export function identifierProblem(tokenizer: ClipTokenizer, token: string, category: string): string | undefined {
  if (!PATTERN.test(token)) return 'must be 2 to 12 lower-case letters a-z';
  if (isWord(token)) return `"${token}" is a common word; pick a rare token such as "sks"`;
  if (category.toLowerCase().split(/[^a-z]+/).includes(token)) return `"${token}" is a word of the category`;
  if (isBlocked(token)) return `"${token}" reads as an offensive word or a well-known abbreviation; pick another rare token`;
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
  () => words(4).filter((word) => vowelCount(word) === 0),
  () => words(3).filter((word) => vowelCount(word) === 1),
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
