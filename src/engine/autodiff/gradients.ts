import { isFloat } from '../graph/dtype';
import { check, type Graph, GraphError, type Node, OPS, type Tensor } from '../graph/graph';
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
 * Reverse-mode gradients of a scalar `loss` with respect to `wrt`, appended to `graph` as ordinary
 * nodes: one reverse sweep in topological order, each node's rule (its OpDef's `grad`) mapping
 * output gradients to input gradients, contributions summed with Add. A tensor of `wrt` that does
 * not reach the loss gets zeros.
 */
export function gradients(graph: Graph, loss: Tensor, wrt: readonly Tensor[]): Tensor[] {
  check(loss.graph === graph && isFloat(loss.dtype) && sizeOf(loss.shape) === 1,
    `gradients: the loss must be a floating-point scalar of this graph, got ${loss.toString()}`);
  for (const t of wrt) {
    check(t.graph === graph && isFloat(t.dtype), `gradients: ${t.toString()} is not a floating-point tensor of this graph`);
  }
  const { active, needed } = activePath(graph, loss, wrt);
  const grads = new Map<Tensor, Tensor>([[loss, expand(scalar(graph, 1, loss.dtype), loss.shape)]]);
  for (const node of active) {
    const outputGrads = node.outputs.map((output) => grads.get(output));
    if (outputGrads.every((g) => !g)) continue;
    const rule = OPS.get(node.op)?.grad;
    if (!rule) throw new GraphError(`gradients: ${node.op} (producing ${node.outputs[0].name}) has no gradient rule`);
    const wanted = node.inputs.map(needed);
    const inputGrads = rule(node, outputGrads, wanted);
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
