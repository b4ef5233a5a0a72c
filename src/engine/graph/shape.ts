/** Static-shape arithmetic shared by the operators' shape inference. */
export type Shape = readonly number[];

export function sizeOf(shape: Shape): number {
  return shape.reduce((a, b) => a * b, 1);
}

export function sameShape(a: Shape, b: Shape): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

export function formatShape(shape: Shape): string {
  return `[${shape.join(', ')}]`;
}

/** Numpy broadcasting of any number of shapes; undefined where they do not broadcast. */
export function broadcastShapes(...shapes: Shape[]): number[] | undefined {
  const rank = Math.max(...shapes.map((s) => s.length));
  const out: number[] = [];
  for (let i = 0; i < rank; i++) {
    let dim = 1;
    for (const shape of shapes) {
      const d = shape[shape.length - rank + i] ?? 1;
      if (d === 1) continue;
      if (dim !== 1 && dim !== d) return undefined;
      dim = d;
    }
    out.push(dim);
  }
  return out;
}

/** Resolves a possibly negative axis against a rank, or undefined when out of range. */
export function normalizeAxis(axis: number, rank: number): number | undefined {
  const a = axis < 0 ? axis + rank : axis;
  return a >= 0 && a < rank ? a : undefined;
}
