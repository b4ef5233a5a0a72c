import { type Graph, type Shape, type Tensor } from '../graph';

/**
 * Names parameters the way checkpoints do: `new Params(g, 'down_blocks.0').child('resnets.1').weight('conv1.weight', ...)`
 * creates the graph weight `down_blocks.0.resnets.1.conv1.weight`, so weights bind by name with no translation table.
 */
export class Params {
  constructor(readonly graph: Graph, readonly prefix = '') {}

  child(name: string | number): Params {
    return new Params(this.graph, this.path(String(name)));
  }

  path(name: string): string {
    return this.prefix ? `${this.prefix}.${name}` : name;
  }

  weight(name: string, shape: Shape): Tensor {
    return this.graph.weight(this.path(name), shape);
  }
}

/** Every weight a graph declares, by name, with its shape: what a checkpoint must provide. */
export function expectedWeights(graph: Graph): Map<string, readonly number[]> {
  return new Map([...graph.weights].map(([name, { tensor }]) => [name, tensor.shape]));
}
