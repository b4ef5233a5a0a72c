import { tokenizerFilesFromMerges, type ClipTokenizerFiles } from '../../src/engine/packs';
import { Rng } from '../../src/engine/random';
import { clipWords } from '../../src/engine/tokenizer/clip-tokenizer';
import { trainClipBpe } from '../../src/engine/tokenizer';

/**
 * Three consonants (no vowel, no y) that read as something: abbreviations, brands, slang, slurs and obscenities
 * with their vowels dropped. None may become an identifier a user sees in `a sks dog`.
 */
const MEANINGFUL = new Set(`
  bbc bbq bdsm bff bgm bjp blm bmw brb bsd btc btw cbd cbs cck cdc cdn cft cgi chn clt cmd cms cnc cnn cnt crp css csv
  ctl dck dfs dhl dkn dmc dmv dnd dns dvd fbi fcc fck fcp fdp fgs fgt frk ftp ftw fwd gbp gdp gmt gnt gps grl gtg hbo
  hdd hrs htm jfk jpg kfc kgb kkk kms kys lbs lds lgb lmk lmp lsd ltd mcd mgm mlb mlk mms mph mrs msg msn mtv nbc nfl
  ngr nhl npc nrc nsf nvm nzs pcp pdf php pkk png pnp ppl prn psd pst pwn qvc rct rgb rnc rpm scr sds sfw shs sht slt smh
  sms sng spq sql sss std stf sth stv svg tbh tbs tdk thc thx tkm tlc tmr tnt trb tsk ttl ttp txt vfw vhs vlc vnc vpn
  wcw wft whr wkd wmd wnt wpm wrt wsj wtf wth www xbx xdd xkcd xml xtc xxl xxx zzz`.split(/\s+/).filter(Boolean));

/** Identifiers preferred first: the names DreamBooth's paper and the BIG docs use. */
const PREFERRED = ['sks', 'lnl'];

/**
 * `count` rare identifiers for the vocabulary: three consonants, none a known abbreviation or slur, none a word
 * of the captions, in a seeded order with the preferred ones last (the platform hands out the highest token id
 * first, and reserved tokens are appended in this order).
 */
export function reservedIdentifiers(captions: readonly string[], count: number, seed: number): string[] {
  const used = new Set(captions.flatMap((caption) => caption.split(/[^a-z]+/)));
  const consonants = [...'bcdfghjklmnpqrstvwxz'];
  const candidates = consonants.flatMap((a) => consonants.flatMap((b) => consonants.map((c) => a + b + c)))
    .filter((word) => !MEANINGFUL.has(word) && !used.has(word) && !PREFERRED.includes(word));
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
