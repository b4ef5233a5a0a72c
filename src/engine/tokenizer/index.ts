export { ClipTokenizer, TokenizerError, type ClipTokenizerSettings } from './clip-tokenizer';
export { loadClipTokenizer, loadClipTokenizerFrom } from './load';
