import sharp from 'sharp';

const escapeXml = (text: string) => text.replace(/[<>&"]/g, (c) => `&#${c.charCodeAt(0)};`);

export interface GridRow {
  label: string;
  /** PNGs, one per column. */
  images: Buffer[];
}

/** A PNG grid: one labelled row per prompt, images enlarged to `cell` px with nearest-neighbour (pixels stay visible). */
export async function labeledGrid(rows: readonly GridRow[], { cell = 128, labelWidth = 360, title }: { cell?: number; labelWidth?: number; title?: string } = {}): Promise<Buffer> {
  const columns = Math.max(...rows.map((row) => row.images.length));
  const top = title ? 36 : 0;
  const width = labelWidth + columns * (cell + 4);
  const height = top + rows.length * (cell + 4);
  const text = [
    title ? `<text x="8" y="24" font-family="DejaVu Sans" font-size="18" font-weight="bold">${escapeXml(title)}</text>` : '',
    ...rows.map((row, i) => `<text x="8" y="${top + i * (cell + 4) + cell / 2 + 6}" font-family="DejaVu Sans" font-size="15">${escapeXml(row.label)}</text>`),
  ].join('');
  const tiles = await Promise.all(rows.flatMap((row, i) => row.images.map(async (png, j) => ({
    input: await sharp(png).resize(cell, cell, { kernel: 'nearest' }).png().toBuffer(),
    left: labelWidth + j * (cell + 4),
    top: top + i * (cell + 4),
  }))));
  const labels = Buffer.from(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}">${text}</svg>`);
  return sharp({ create: { width, height, channels: 3, background: '#ffffff' } })
    .composite([{ input: labels, left: 0, top: 0 }, ...tiles])
    .png()
    .toBuffer();
}

export interface Series {
  label: string;
  color: string;
  points: Array<[x: number, y: number]>;
}

/** A line chart as PNG: log-scale y (losses span decades) unless `linearY`, linear x, axes labelled with a few ticks. */
export async function lineChart(
  series: readonly Series[], { title, xLabel, yLabel, linearY = false }: { title: string; xLabel: string; yLabel: string; linearY?: boolean },
): Promise<Buffer> {
  const [width, height, left, right, top, bottom] = [720, 420, 70, 20, 40, 50];
  const all = series.flatMap((s) => s.points);
  const xMax = Math.max(...all.map(([x]) => x));
  // Ticks every quarter decade (log) or every 0.1 (linear); `scale` maps a value onto that axis.
  const scale = linearY ? (y: number) => y * 2.5 : Math.log10;
  const ys = all.map(([, y]) => scale(y));
  const [yMin, yMax] = [Math.floor(Math.min(...ys) * 4) / 4, Math.ceil(Math.max(...ys) * 4) / 4];
  const px = (x: number) => left + (x / xMax) * (width - left - right);
  const py = (y: number) => top + ((yMax - scale(y)) / (yMax - yMin || 1)) * (height - top - bottom);
  const yTicks = Array.from({ length: Math.round((yMax - yMin) * 4) + 1 }, (_, i) => (linearY ? (yMin + i / 4) / 2.5 : 10 ** (yMin + i / 4)));
  const xTicks = Array.from({ length: 6 }, (_, i) => Math.round((xMax * i) / 5));
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="DejaVu Sans" font-size="12">
    <rect width="100%" height="100%" fill="white"/>
    <text x="${left}" y="24" font-size="16" font-weight="bold">${escapeXml(title)}</text>
    ${yTicks.map((y) => `<line x1="${left}" x2="${width - right}" y1="${py(y)}" y2="${py(y)}" stroke="#ddd"/><text x="${left - 6}" y="${py(y) + 4}" text-anchor="end">${y.toPrecision(2)}</text>`).join('')}
    ${xTicks.map((x) => `<text x="${px(x)}" y="${height - bottom + 16}" text-anchor="middle">${x}</text>`).join('')}
    <line x1="${left}" x2="${left}" y1="${top}" y2="${height - bottom}" stroke="black"/>
    <line x1="${left}" x2="${width - right}" y1="${height - bottom}" y2="${height - bottom}" stroke="black"/>
    <text x="${(left + width - right) / 2}" y="${height - 12}" text-anchor="middle">${escapeXml(xLabel)}</text>
    <text x="16" y="${(top + height - bottom) / 2}" transform="rotate(-90 16 ${(top + height - bottom) / 2})" text-anchor="middle">${escapeXml(yLabel)}</text>
    ${series.map((s, i) => `<polyline fill="none" stroke="${s.color}" stroke-width="1.5" points="${s.points.map(([x, y]) => `${px(x).toFixed(1)},${py(y).toFixed(1)}`).join(' ')}"/>
      <text x="${width - right - 8}" y="${top + 16 + i * 16}" text-anchor="end" fill="${s.color}">${escapeXml(s.label)}</text>`).join('')}
  </svg>`;
  return sharp(Buffer.from(svg)).png().toBuffer();
}
