export { clipTokenizerFiles, type ClipTokenizerFiles } from './clip-vocab';
export { BUNDLED_TINY_SD, createRandomPack, declaredPackWeights, type PackPreset, writePackToFolder } from './random-pack';
