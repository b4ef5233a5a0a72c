import { cast, type DType, type Graph, type Shape, type Tensor } from '../graph';

/**
 * Names parameters the way checkpoints do: `new Params(g, 'down_blocks.0').child('resnets.1').weight('conv1.weight', ...)`
 * creates the graph weight `down_blocks.0.resnets.1.conv1.weight`, so weights bind by name with no translation table.
 * `dtype` is the element type of the weights it creates (float16 in a float16 model), unless a layer names another;
 * with `storage` (float16 in a float32 train step's frozen UNet) those weights are stored so and cast to `dtype` at use.
 */
export class Params {
  constructor(readonly graph: Graph, readonly prefix = '', readonly dtype: DType = 'float32', readonly storage: DType = dtype) {}

  child(name: string | number): Params {
    return new Params(this.graph, this.path(String(name)), this.dtype, this.storage);
  }

  path(name: string): string {
    return this.prefix ? `${this.prefix}.${name}` : name;
  }

  weight(name: string, shape: Shape, dtype?: DType): Tensor {
    if (dtype) return this.graph.weight(this.path(name), shape, undefined, dtype);
    return cast(this.graph.weight(this.path(name), shape, undefined, this.storage), this.dtype);
  }
}

/** Every weight a graph declares, by name, with its shape: what a checkpoint must provide. */
export function expectedWeights(graph: Graph): Map<string, readonly number[]> {
  return new Map([...graph.weights].map(([name, { tensor }]) => [name, tensor.shape]));
}
