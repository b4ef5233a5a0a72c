/**
 * Stands in for sharp in the GPU bundle: the GPU machine has no sharp binaries, and the bench never
 * encodes images. Any use fails loudly.
 */
export default function sharp(): never {
  throw new Error('sharp is not available in the GPU bench bundle');
}
