/**
 * CLIP's text clean-up as transformers' slow `CLIPTokenizer` does it when `ftfy` is absent (the setup that
 * produced the reference token ids): BERT's BasicTokenizer with `strip_accents=False, do_split_on_punc=False`.
 * The result is the words of the text, lower-cased, joined by single spaces.
 */

const CONTROL = /^\p{C}$/u;
const SPACE_SEPARATOR = /^\p{Zs}$/u;

/** BasicTokenizer's `_clean_text`: drops NUL, U+FFFD and every "C*" category character except \t \n \r. */
function dropControlsAndUnifySpaces(text: string): string {
  let out = '';
  for (const char of text) {
    if (char === '\t' || char === '\n' || char === '\r' || char === ' ' || SPACE_SEPARATOR.test(char)) {
      out += ' ';
    } else if (char === '\u0000' || char === '\ufffd' || CONTROL.test(char)) {
      continue;
    } else {
      out += char;
    }
  }
  return out;
}

/** The CJK ideograph blocks BasicTokenizer surrounds with spaces, so each ideograph becomes its own word. */
function isCjkIdeograph(cp: number): boolean {
  return (
    (cp >= 0x4e00 && cp <= 0x9fff) ||
    (cp >= 0x3400 && cp <= 0x4dbf) ||
    (cp >= 0x20000 && cp <= 0x2a6df) ||
    (cp >= 0x2a700 && cp <= 0x2b73f) ||
    (cp >= 0x2b740 && cp <= 0x2b81f) ||
    (cp >= 0x2b820 && cp <= 0x2ceaf) ||
    (cp >= 0xf900 && cp <= 0xfaff) ||
    (cp >= 0x2f800 && cp <= 0x2fa1f)
  );
}

function spaceOutCjk(text: string): string {
  let out = '';
  for (const char of text) out += isCjkIdeograph(char.codePointAt(0)!) ? ` ${char} ` : char;
  return out;
}

export function cleanText(text: string): string {
  const normalized = spaceOutCjk(dropControlsAndUnifySpaces(text)).normalize('NFC');
  return normalized
    .split(/\s+/u)
    .filter((word) => word.length > 0)
    .map((word) => word.toLowerCase())
    .join(' ');
}
