export { clipTokenizerFiles, type ClipTokenizerFiles, tokenizerFilesFromMerges } from './clip-vocab';
export {
  BUNDLED_TINY_SD, createRandomPack, declaredPackWeights, initialWeights, type PackPreset, stableDiffusionPackFiles, writePackToFolder,
} from './random-pack';
