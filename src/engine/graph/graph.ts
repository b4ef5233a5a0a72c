import { type DType, type TensorArray } from './dtype';
import { formatShape, type Shape } from './shape';

/** An ONNX attribute value, tagged with its wire kind (ONNX distinguishes int from float). */
export type Attr =
  | { kind: 'int'; value: number }
  | { kind: 'ints'; value: number[] }
  | { kind: 'float'; value: number }
  | { kind: 'floats'; value: number[] }
  | { kind: 'string'; value: string };
export type Attrs = Record<string, Attr>;

export const attr = {
  int: (value: number): Attr => ({ kind: 'int', value }),
  ints: (value: readonly number[]): Attr => ({ kind: 'ints', value: [...value] }),
  float: (value: number): Attr => ({ kind: 'float', value }),
  floats: (value: readonly number[]): Attr => ({ kind: 'floats', value: [...value] }),
  string: (value: string): Attr => ({ kind: 'string', value }),
};

/** Reads a numeric attribute, or `fallback` when the node does not carry it. */
export function attrValue<T extends Attr['value']>(attrs: Attrs, name: string, fallback: T): T {
  return (attrs[name]?.value as T) ?? fallback;
}

/** A value flowing through a graph: produced by a node, or a graph input, weight or constant. */
export class Tensor {
  constructor(
    readonly graph: Graph,
    readonly name: string,
    readonly dtype: DType,
    readonly shape: Shape,
    /** The node computing this tensor; undefined for inputs, weights and constants. */
    readonly producer?: Node,
  ) {}

  get rank(): number {
    return this.shape.length;
  }

  toString(): string {
    return `${this.name}: ${this.dtype}${formatShape(this.shape)}`;
  }
}

export interface Node {
  readonly op: string;
  /** The operator set `op` belongs to: '' for standard ONNX, `com.microsoft` for onnxruntime's contrib operators. */
  readonly domain: string;
  readonly inputs: readonly (Tensor | undefined)[];
  readonly outputs: readonly Tensor[];
  readonly attrs: Attrs;
}

/** Data a weight or constant holds: raw little-endian bytes of its dtype, or a typed array. */
export interface TensorData {
  dtype: DType;
  shape: Shape;
  data: TensorArray;
}

export type OutputSpec = { dtype: DType; shape: Shape };

/**
 * One operator: its ONNX type, shape inference (which also validates inputs and attributes),
 * and, once autodiff knows it, its gradient rule. Defined once in `ops/`, beside its gradient.
 */
export interface OpDef {
  readonly type: string;
  readonly domain: string;
  readonly infer: (inputs: readonly (Tensor | undefined)[], attrs: Attrs) => OutputSpec[];
  grad?: GradientRule;
}

/**
 * Reverse-mode rule: given the node and the gradients of its outputs (undefined where no gradient
 * flows), returns the gradient of each input (undefined where none is needed or defined).
 * `wanted[i]` says whether input i needs a gradient, so frozen paths cost nothing.
 */
export type GradientRule = (
  node: Node,
  outputGrads: readonly (Tensor | undefined)[],
  wanted: readonly boolean[],
) => (Tensor | undefined)[];

export class GraphError extends Error {
  override name = 'GraphError';
}

/**
 * A graph under construction. Operators append nodes as they are called; every tensor has a static
 * dtype and shape. Weights are named parameters whose data is bound at compile time, so the same
 * graph can become an inference model (weights as initializers) or a train step (weights as inputs).
 */
export class Graph {
  readonly nodes: Node[] = [];
  readonly inputs: Tensor[] = [];
  readonly outputs: Tensor[] = [];
  /** Named parameters, in creation order; `data` is optional until the graph is compiled. */
  readonly weights = new Map<string, { tensor: Tensor; data?: TensorArray }>();
  /** Small literal tensors (shapes, scalars, masks) emitted as initializers. */
  readonly constants = new Map<Tensor, TensorData>();
  /** Runs of consecutive nodes that a backward pass may recompute instead of keeping their outputs (see `recomputable`). */
  readonly segments: (readonly Node[])[] = [];
  private readonly names = new Set<string>();
  private counter = 0;
  private building = false;

  constructor(readonly name = 'graph') {}

  private claim(name: string): string {
    if (this.names.has(name)) throw new GraphError(`duplicate tensor name ${name}`);
    this.names.add(name);
    return name;
  }

  private fresh(prefix: string): string {
    let name: string;
    do name = `${prefix}_${this.counter++}`;
    while (this.names.has(name));
    return this.claim(name);
  }

  input(name: string, dtype: DType, shape: Shape): Tensor {
    const tensor = new Tensor(this, this.claim(name), dtype, [...shape]);
    this.inputs.push(tensor);
    return tensor;
  }

  /** A named parameter (checkpoint key); its data may be bound now or when compiling. */
  weight(name: string, shape: Shape, data?: TensorArray, dtype: DType = 'float32'): Tensor {
    const tensor = new Tensor(this, this.claim(name), dtype, [...shape]);
    this.weights.set(name, { tensor, data });
    return tensor;
  }

  constant(dtype: DType, shape: Shape, data: TensorArray): Tensor {
    const tensor = new Tensor(this, this.fresh('const'), dtype, [...shape]);
    this.constants.set(tensor, { dtype, shape: [...shape], data });
    return tensor;
  }

  /**
   * Builds a block (a UNet resnet or transformer) as one recomputable segment: `gradients` with `recompute` runs its
   * nodes again from the block's inputs when the backward pass reaches it, so that only block boundaries live from
   * the forward pass to the backward. A block built inside another belongs to the outer one.
   */
  recomputable<T>(build: () => T): T {
    if (this.building) return build();
    const first = this.nodes.length;
    this.building = true;
    try {
      return build();
    } finally {
      this.building = false;
      if (this.nodes.length > first) this.segments.push(this.nodes.slice(first));
    }
  }

  /** Marks tensors as graph outputs, renaming them through Identity when a name is given. */
  output(tensor: Tensor, name?: string): Tensor {
    const out = name && name !== tensor.name ? this.apply(IDENTITY, [tensor], {}, [name])[0] : tensor;
    this.outputs.push(out);
    return out;
  }

  /** Appends a node of `op`, inferring its outputs' dtypes and shapes; errors name the operator. */
  apply(op: OpDef, inputs: readonly (Tensor | undefined)[], attrs: Attrs = {}, outputNames?: string[]): Tensor[] {
    for (const input of inputs) {
      if (input && input.graph !== this) throw new GraphError(`${op.type}: input ${input.name} belongs to another graph`);
    }
    let specs: OutputSpec[];
    try {
      specs = op.infer(inputs, attrs);
    } catch (error) {
      const shapes = inputs.map((t) => (t ? `${t.dtype}${formatShape(t.shape)}` : '-')).join(', ');
      throw new GraphError(`${op.type}(${shapes}): ${(error as Error).message}`);
    }
    const node: { op: string; domain: string; inputs: (Tensor | undefined)[]; outputs: Tensor[]; attrs: Attrs } = {
      op: op.type, domain: op.domain, inputs: [...inputs], outputs: [], attrs,
    };
    node.outputs = specs.map((spec, i) =>
      new Tensor(this, outputNames?.[i] ? this.claim(outputNames[i]) : this.fresh(op.type), spec.dtype, [...spec.shape], node));
    this.nodes.push(node);
    return node.outputs;
  }
}

/** Registry of every operator, by ONNX type, so autodiff can find gradient rules. */
export const OPS = new Map<string, OpDef>();

export function defineOp(type: string, infer: OpDef['infer'], domain = ''): OpDef {
  if (OPS.has(type)) throw new Error(`operator ${type} defined twice`);
  const def: OpDef = { type, domain, infer };
  OPS.set(type, def);
  return def;
}

/** Throws with `message` unless `condition` holds; for shape inference. */
export function check(condition: unknown, message: string): asserts condition {
  if (!condition) throw new GraphError(message);
}

export const IDENTITY = defineOp('Identity', ([x]) => [{ dtype: x!.dtype, shape: x!.shape }]);
IDENTITY.grad = (_, [dy]) => [dy];
