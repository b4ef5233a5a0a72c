export { clipTokenizerFiles, type ClipTokenizerFiles, tokenizerFilesFromMerges } from './clip-vocab';
export {
  BUNDLED_TINY_SD, createRandomPack, declaredPackWeights, initialWeights, type PackPreset, SD15_PNDM, stableDiffusionPackFiles, writePackToFolder,
} from './random-pack';
