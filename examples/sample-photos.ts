// The examples' training photos, drawn here so any checkout has them: a red toy ball with a yellow
// stripe, at a different place, size and on a different background in each photo.
import sharp from 'sharp';

const BACKGROUNDS = ['#cfe8ff', '#f4e1c1', '#d9f2d0', '#e6e0f5'];

/** `count` PNGs of `size` pixels a side (use the base model's resolution: smaller photos are refused). */
export function samplePhotos(size: number, count = 4): Promise<Uint8Array[]> {
  return Promise.all(
    Array.from({ length: count }, async (_, i) => {
      const r = size * (0.22 + 0.04 * i);
      const [cx, cy] = [size * (0.35 + 0.1 * i), size * (0.6 - 0.05 * i)];
      const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${size}" height="${size}">
        <rect width="100%" height="100%" fill="${BACKGROUNDS[i % BACKGROUNDS.length]}"/>
        <circle cx="${cx}" cy="${cy}" r="${r}" fill="#d62828"/>
        <rect x="${cx - r}" y="${cy - r / 6}" width="${2 * r}" height="${r / 3}" fill="#fcbf49"/>
      </svg>`;
      return new Uint8Array(await sharp(Buffer.from(svg)).png().toBuffer());
    }),
  );
}
