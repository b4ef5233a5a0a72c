export { ClipTokenizer, TokenizerError, type ClipTokenizerSettings } from './clip-tokenizer';
export { loadClipTokenizer, loadClipTokenizerFrom } from './load';
export { type BpeTrainingOptions, type Merge, trainClipBpe } from './train-bpe';
