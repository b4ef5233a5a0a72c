import { isFloat } from '../graph/dtype';
import { check, type Graph, GraphError, type Node, OPS, type Tensor } from '../graph/graph';
import { after } from '../graph/ops/ordering';
import { add, scalar } from '../graph/ops/elementwise';
import { expand, zeros } from '../graph/ops/shape-ops';
import { formatShape, sameShape, sizeOf } from '../graph/shape';

/**
 * The nodes a gradient must pass through: those fed (through floating-point values) by a tensor of
 * `wrt` and feeding `loss`. Everything else — shape arithmetic, integer paths, frozen weights'
 * branches — is pruned, so a frozen weight costs no weight-gradient work.
 */
function activePath(graph: Graph, loss: Tensor, wrt: readonly Tensor[]) {
  const fromWrt = new Set<Tensor>(wrt);
  for (const node of graph.nodes) {
    if (!node.inputs.some((input) => input && fromWrt.has(input))) continue;
    for (const output of node.outputs) if (isFloat(output.dtype)) fromWrt.add(output);
  }
  const toLoss = new Set<Tensor>([loss]);
  const active: Node[] = [];
  for (let i = graph.nodes.length - 1; i >= 0; i--) {
    const node = graph.nodes[i];
    if (!node.outputs.some((output) => toLoss.has(output))) continue;
    const inputs = node.inputs.filter((input): input is Tensor => !!input && fromWrt.has(input));
    if (!inputs.length) continue;
    active.push(node);
    for (const input of inputs) toLoss.add(input);
  }
  return { active, needed: (t: Tensor | undefined) => !!t && fromWrt.has(t) && toLoss.has(t) };
}

/** The tensors of `wrt` that the loss does not depend on (their gradient is zero). */
export function unreachable(graph: Graph, loss: Tensor, wrt: readonly Tensor[]): Tensor[] {
  const { needed } = activePath(graph, loss, wrt);
  return wrt.filter((t) => t !== loss && !needed(t));
}

/**
 * The nodes of a recomputable segment built again, once the backward pass has `trigger` (a gradient of one of the
 * segment's outputs), from the segment's inputs. Every copy waits for `trigger`: activations made before the segment
 * go through `after`, and so does the first float input of a node that would otherwise read only weights, constants
 * or graph inputs (a weight's cast, a cross-attention's key): onnxruntime would merge such a copy with its original
 * as a common subexpression, keeping its output alive from the forward pass on. Returns each original node's copy,
 * whose gradient rule then reads the recomputed values, so the forward pass's values inside the segment die as soon
 * as the forward is done.
 */
function replay(graph: Graph, nodes: readonly Node[], trigger: Tensor): Map<Node, Node> {
  const values = new Map<Tensor, Tensor>();
  const waiting = new Set<Tensor>();
  const delayed = (t: Tensor) => {
    let value = values.get(t);
    if (!value) {
      values.set(t, value = after(t, trigger));
      waiting.add(value);
    }
    return value;
  };
  const copies = new Map<Node, Node>();
  for (const node of nodes) {
    let inputs = node.inputs.map((t) => t && (values.get(t) ?? (t.producer && isFloat(t.dtype) ? delayed(t) : t)));
    const first = inputs.findIndex((t) => t && isFloat(t.dtype));
    if (!inputs.some((t) => t && waiting.has(t)) && first >= 0) inputs = inputs.map((t, i) => (i === first ? delayed(t!) : t));
    const outputs = graph.apply(OPS.get(node.op)!, inputs, node.attrs);
    node.outputs.forEach((output, i) => {
      values.set(output, outputs[i]);
      waiting.add(outputs[i]);
    });
    copies.set(node, outputs[0].producer!);
  }
  return copies;
}

export interface GradientOptions {
  /**
   * Recompute each of the graph's recomputable segments (`Graph.recomputable`) when the backward pass reaches it
   * instead of keeping its activations from the forward pass (activation checkpointing): the activations then
   * held at once are the segments' boundaries plus one segment's insides, for one more forward pass of compute.
   */
  recompute?: boolean;
}

/**
 * Reverse-mode gradients of a scalar `loss` with respect to `wrt`, appended to `graph` as ordinary
 * nodes: one reverse sweep in topological order, each node's rule (its OpDef's `grad`) mapping
 * output gradients to input gradients, contributions summed with Add. A tensor of `wrt` that does
 * not reach the loss gets zeros.
 */
export function gradients(graph: Graph, loss: Tensor, wrt: readonly Tensor[], { recompute = false }: GradientOptions = {}): Tensor[] {
  check(loss.graph === graph && isFloat(loss.dtype) && sizeOf(loss.shape) === 1,
    `gradients: the loss must be a floating-point scalar of this graph, got ${loss.toString()}`);
  for (const t of wrt) {
    check(t.graph === graph && isFloat(t.dtype), `gradients: ${t.toString()} is not a floating-point tensor of this graph`);
  }
  const { active, needed } = activePath(graph, loss, wrt);
  const grads = new Map<Tensor, Tensor>([[loss, expand(scalar(graph, 1, loss.dtype), loss.shape)]]);
  // Segments are runs of consecutive nodes, so when the reverse sweep meets one's last active node, every gradient
  // flowing into the segment from later nodes is complete.
  const segmentOf = new Map<Node, readonly Node[]>();
  if (recompute) for (const segment of graph.segments) for (const node of segment) segmentOf.set(node, segment);
  const replayed = new Map<readonly Node[], Map<Node, Node>>();
  for (const node of active) {
    const outputGrads = node.outputs.map((output) => grads.get(output));
    if (outputGrads.every((g) => !g)) continue;
    const rule = OPS.get(node.op)?.grad;
    if (!rule) throw new GraphError(`gradients: ${node.op} (producing ${node.outputs[0].name}) has no gradient rule`);
    const wanted = node.inputs.map(needed);
    const segment = segmentOf.get(node);
    let copies = segment && replayed.get(segment);
    if (segment && !copies) replayed.set(segment, copies = replay(graph, segment, outputGrads.find((g) => g)!));
    const inputGrads = rule(copies?.get(node) ?? node, outputGrads, wanted);
    node.inputs.forEach((input, i) => {
      if (!wanted[i]) return;
      const g = inputGrads[i];
      if (!g) throw new GraphError(`gradients: the ${node.op} rule gave no gradient for input ${i} (${input!.name})`);
      check(sameShape(g.shape, input!.shape) && g.dtype === input!.dtype,
        `gradients: the ${node.op} rule gave ${g.dtype}${formatShape(g.shape)} for ${input!.toString()}`);
      const previous = grads.get(input!);
      grads.set(input!, previous ? add(previous, g) : g);
    });
  }
  return wrt.map((t) => grads.get(t) ?? zeros(t));
}
