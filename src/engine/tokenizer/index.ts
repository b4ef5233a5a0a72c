export { ClipTokenizer, TokenizerError, parseTokenizerConfig, type ClipTokenizerSettings } from './clip-tokenizer';
export { loadClipTokenizer, loadClipTokenizerFrom } from './load';
