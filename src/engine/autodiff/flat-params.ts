import { check, type Graph, type Tensor } from '../graph/graph';
import { reshape, split } from '../graph/ops/shape-ops';
import { sameShape, sizeOf } from '../graph/shape';
import { type TensorSpec } from './train-step';

/**
 * Turns `weights` into slices of one new flat input `name` [their total size], in order: one Split, then a
 * Reshape per weight that is not already 1-D. Those nodes go before all others, every use of a weight is
 * rewired to its slice, and the weights leave `graph.weights`. The model around them is unchanged, so the
 * gradient with respect to the flat input is every weight's gradient, flattened and concatenated in order
 * (the Reshape and Split gradient rules), and an optimizer can update all weights as one vector.
 */
export function packWeights(graph: Graph, weights: readonly Tensor[], name: string): Tensor {
  const { dtype } = weights[0];
  check(weights.every((w) => w.dtype === dtype),
    `packed weights must share one dtype, got ${[...new Set(weights.map((w) => w.dtype))].join(' and ')}`);
  const flat = graph.input(name, dtype, [weights.reduce((n, w) => n + sizeOf(w.shape), 0)]);
  const first = graph.nodes.length;
  const parts = split(flat, weights.map((w) => sizeOf(w.shape)), 0);
  const slices = new Map(weights.map((w, i) => [w, sameShape(parts[i].shape, w.shape) ? parts[i] : reshape(parts[i], w.shape)]));
  graph.nodes.unshift(...graph.nodes.splice(first));
  // Graph surgery: nodes are immutable to the graph's builders, but here each weight's consumers get its slice.
  for (const node of graph.nodes) {
    const inputs = node.inputs as (Tensor | undefined)[];
    inputs.forEach((input, i) => {
      const slice = input && slices.get(input);
      if (slice) inputs[i] = slice;
    });
  }
  for (const w of weights) graph.weights.delete(w.name);
  return flat;
}

type FloatArray = Float32Array | Float64Array;

/** Where each weight lives in a train step's flat `params`, `m` and `v` vectors (see `buildTrainStep`). */
export class FlatLayout {
  readonly size: number;
  readonly dtype: 'float32' | 'float64';
  readonly #spans = new Map<string, { start: number; end: number }>();

  /** `specs`: the packed weights in order, as a compiled train step lists them in `params`. */
  constructor(readonly specs: readonly TensorSpec[]) {
    let start = 0;
    for (const { name, shape } of specs) {
      const end = start + sizeOf(shape);
      this.#spans.set(name, { start, end });
      start = end;
    }
    this.size = start;
    const dtype = specs[0]?.dtype;
    check(dtype === 'float32' || dtype === 'float64', `trainable weights must be float32 or float64, got ${dtype ?? 'none'}`);
    this.dtype = dtype;
  }

  has(name: string): boolean {
    return this.#spans.has(name);
  }

  /** A zero vector of the layout's size and dtype. */
  zeros(): FloatArray {
    return this.dtype === 'float32' ? new Float32Array(this.size) : new Float64Array(this.size);
  }

  /** Whether `values` holds a value of the layout's dtype and size for `name` (one of its weights). */
  fits(name: string, values: FloatArray | undefined): boolean {
    const { start, end } = this.#spans.get(name)!;
    return values?.length === end - start && (this.dtype === 'float32') === values instanceof Float32Array;
  }

  /** Every weight's values packed in order; each must fit (see `fits`). */
  pack(values: Readonly<Record<string, FloatArray>>): FloatArray {
    const flat = this.zeros();
    for (const [name, { start }] of this.#spans) flat.set(values[name], start);
    return flat;
  }

  /** A copy of one weight's values in a flat vector. */
  slice(flat: FloatArray, name: string): FloatArray {
    const { start, end } = this.#spans.get(name)!;
    return flat.slice(start, end);
  }

  /** Copies of every weight's values in a flat vector, by name. */
  unpack(flat: FloatArray): Record<string, FloatArray> {
    return Object.fromEntries(this.specs.map(({ name }) => [name, this.slice(flat, name)]));
  }
}
