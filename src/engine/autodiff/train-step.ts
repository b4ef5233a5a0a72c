import { type DType } from '../graph/dtype';
import { check, type Graph, type Tensor } from '../graph/graph';
import { contentHash, saveWithExternalData, serialize } from '../graph/serialize';
import { type AdamWOptions, adamwUpdate, clipByGlobalNorm, globalNorm } from './adamw';
import { packWeights } from './flat-params';
import { gradients, unreachable } from './gradients';

export interface TensorSpec {
  name: string;
  dtype: DType;
  shape: number[];
}

/** A graph ready to serialize, with the weights it takes as inputs (the rest stay initializers). */
export interface BuiltGraph {
  graph: Graph;
  weightsAsInputs: Set<string>;
  /** The forward graph's own inputs (the batch). */
  batch: TensorSpec[];
  /** A train step's trainable weights, packed in this order into its flat `params` (see `buildTrainStep`). */
  packed?: TensorSpec[];
}

/** What feeds a compiled graph. */
export interface GraphSignature {
  /** Content hash: compiled graphs are cached by it. */
  hash: string;
  /** Weights fed from outside, in order: each as an input of its name, or a train step's packed into its flat `params`. */
  params: TensorSpec[];
  /** The forward graph's own inputs (the batch). */
  batch: TensorSpec[];
}

/** A model serialized in memory (under 2 GB). */
export interface CompiledGraph extends GraphSignature {
  model: Uint8Array;
}

/** A model written to `path`, its initializers in `path.data` beside it (any size). */
export interface SavedGraph extends GraphSignature {
  path: string;
}

/** What `EngineWorker.createSession` opens for a compiled or saved graph. */
export function sessionModel(compiled: CompiledGraph | SavedGraph): Uint8Array | { path: string } {
  return 'model' in compiled ? compiled.model : { path: compiled.path };
}

const spec = (t: Tensor): TensorSpec => ({ name: t.name, dtype: t.dtype, shape: [...t.shape] });

function weightTensors(graph: Graph, names: readonly string[], role: string): Tensor[] {
  check(new Set(names).size === names.length, `${role} names a weight twice`);
  return names.map((name) => {
    const weight = graph.weights.get(name);
    check(weight, `${role} names ${name}, which is not a weight of ${graph.name}`);
    return weight.tensor;
  });
}

function replaceOutputs(graph: Graph, outputs: [Tensor, string][]): void {
  graph.outputs.splice(0);
  for (const [tensor, name] of outputs) graph.output(tensor, name);
}

export interface GradientGraphOptions {
  graph: Graph;
  loss: Tensor;
  /** Names of the weights to differentiate; each becomes an output `grad.<name>`. */
  wrt: string[];
  /** Feed the `wrt` weights as inputs instead of storing them in the model. Default true. */
  wrtAsInputs?: boolean;
  /** Recompute the graph's recomputable segments in the backward pass instead of keeping their activations (see `gradients`). */
  recompute?: boolean;
}

/**
 * Forward + gradients: the graph's outputs become `loss` and `grad.<name>` for each weight of
 * `wrt`. The graph is consumed (its outputs replaced); build a fresh one per compile.
 */
export function buildGradientGraph({ graph, loss, wrt, wrtAsInputs = true, recompute = false }: GradientGraphOptions): BuiltGraph {
  const batch = graph.inputs.map(spec);
  const params = weightTensors(graph, wrt, 'wrt');
  const grads = gradients(graph, loss, params, { recompute });
  replaceOutputs(graph, [[loss, 'loss'], ...grads.map((g, i): [Tensor, string] => [g, `grad.${wrt[i]}`])]);
  return { graph, weightsAsInputs: new Set(wrtAsInputs ? wrt : []), batch };
}

export interface TrainStepOptions {
  graph: Graph;
  /** The scalar to minimize. */
  loss: Tensor;
  /** Names of the trainable weights, all of one dtype; every other weight is frozen and stays an initializer. */
  trainable: string[];
  optimizer?: AdamWOptions;
  /** Recompute the graph's recomputable segments in the backward pass instead of keeping their activations (see `gradients`). */
  recompute?: boolean;
}

/**
 * The whole train step as one graph, its trainable weights packed into flat vectors (in `trainable` order, see
 * `FlatLayout`) so that the global norm, clipping and AdamW run as a few operators on whole vectors, and a step
 * moves three buffers however many weights it trains. Inputs: `params` [N] (every trainable weight, flattened
 * and concatenated), its AdamW moments `m` and `v` [N], `step` (int64 scalar, 1 for the first step), `lr`
 * (float32 scalar, so schedules need no recompilation) and the forward graph's inputs. Outputs: `new_params`,
 * `new_m`, `new_v`, `loss` and `grad_norm` (before clipping). The graph is consumed (its trainable weights
 * become slices of `params`, its outputs replaced); build a fresh one per compile.
 */
export function buildTrainStep({ graph, loss, trainable, optimizer = {}, recompute = false }: TrainStepOptions): BuiltGraph {
  check(trainable.length > 0, 'trainStep: no trainable weights');
  const batch = graph.inputs.map(spec);
  const weights = weightTensors(graph, trainable, 'trainable');
  // torch.optim.AdamW skips a parameter without a gradient; here that is almost surely a wrong name.
  const idle = unreachable(graph, loss, weights);
  check(!idle.length, `trainable weights ${idle.map((t) => t.name).join(', ')} do not affect the loss`);
  const packed = weights.map(spec);
  const param = packWeights(graph, weights, 'params');
  const [grad] = gradients(graph, loss, [param], { recompute });
  const norm = globalNorm(grad);
  const step = graph.input('step', 'int64', []);
  const lr = graph.input('lr', 'float32', []);
  const updated = adamwUpdate({
    param,
    grad: optimizer.maxGradNorm === undefined ? grad : clipByGlobalNorm(grad, norm, optimizer.maxGradNorm),
    m: graph.input('m', param.dtype, param.shape),
    v: graph.input('v', param.dtype, param.shape),
  }, step, lr, optimizer);
  replaceOutputs(graph, [
    [updated.param, 'new_params'], [updated.m, 'new_m'], [updated.v, 'new_v'], [loss, 'loss'], [norm, 'grad_norm'],
  ]);
  return { graph, weightsAsInputs: new Set(), batch, packed };
}

const paramSpecs = ({ graph, weightsAsInputs, packed }: BuiltGraph) =>
  packed ?? [...weightsAsInputs].map((name) => spec(graph.weights.get(name)!.tensor));

/** Serializes a built graph (weights not fed as inputs must have data bound). */
export function compile(built: BuiltGraph): CompiledGraph {
  const model = serialize(built.graph, { weightsAsInputs: built.weightsAsInputs });
  return { model, hash: contentHash(model), params: paramSpecs(built), batch: built.batch };
}

/** Writes a built graph with external data, for models over protobuf's 2 GB limit. */
export function saveBuilt(built: BuiltGraph, path: string): SavedGraph {
  const hash = saveWithExternalData(built.graph, path, { weightsAsInputs: built.weightsAsInputs });
  return { path, hash, params: paramSpecs(built), batch: built.batch };
}

export const compileTrainStep = (options: TrainStepOptions): CompiledGraph => compile(buildTrainStep(options));
export const compileGradients = (options: GradientGraphOptions): CompiledGraph => compile(buildGradientGraph(options));
