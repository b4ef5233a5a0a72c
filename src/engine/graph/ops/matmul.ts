import { attr, attrValue, check, defineOp, type Tensor } from '../graph';
import { broadcastShapes, formatShape } from '../shape';
import { mul } from './elementwise';
import { unbroadcast } from './reduce';
import { reshape, transpose, unsqueeze } from './shape-ops';

/** Numpy matmul: batch dimensions broadcast, 1-D operands are promoted and the added axis dropped. */
const MATMUL = defineOp('MatMul', ([a, b]) => {
  check(a!.dtype === b!.dtype, `dtypes differ: ${a!.dtype} and ${b!.dtype}`);
  check(a!.rank >= 1 && b!.rank >= 1, 'operands must have rank >= 1');
  const left = a!.rank === 1 ? [1, a!.shape[0]] : a!.shape;
  const right = b!.rank === 1 ? [b!.shape[0], 1] : b!.shape;
  const k = left[left.length - 1];
  check(k === right[right.length - 2], `inner dimensions differ: ${formatShape(a!.shape)} x ${formatShape(b!.shape)}`);
  const batch = broadcastShapes(left.slice(0, -2), right.slice(0, -2));
  check(batch, `batch dimensions do not broadcast: ${formatShape(a!.shape)} x ${formatShape(b!.shape)}`);
  const shape = [...batch];
  if (a!.rank > 1) shape.push(left[left.length - 2]);
  if (b!.rank > 1) shape.push(right[right.length - 1]);
  return [{ dtype: a!.dtype, shape }];
});
export const matmul = (a: Tensor, b: Tensor): Tensor => a.graph.apply(MATMUL, [a, b])[0];

/** Swaps the last two axes. */
function transposeLast(x: Tensor): Tensor {
  const perm = [...x.shape.keys()];
  perm.splice(-2, 2, x.rank - 1, x.rank - 2);
  return transpose(x, perm);
}

// dA = dY B^T, dB = A^T dY, on operands promoted to rank >= 2, batch broadcasting summed back.
MATMUL.grad = ({ inputs: [a, b] }, [dy], [wa, wb]) => {
  const left = a!.rank === 1 ? unsqueeze(a!, [0]) : a!;
  const right = b!.rank === 1 ? unsqueeze(b!, [1]) : b!;
  let grad = dy!;
  if (a!.rank === 1) grad = unsqueeze(grad, [grad.rank - (b!.rank === 1 ? 0 : 1)]);
  if (b!.rank === 1) grad = unsqueeze(grad, [grad.rank]);
  const restore = (g: Tensor, t: Tensor) => (g.rank === t.rank ? g : reshape(g, t.shape));
  let da: Tensor | undefined;
  let db: Tensor | undefined;
  if (wa) da = restore(unbroadcast(matmul(grad, transposeLast(right)), left.shape), a!);
  if (wb) {
    // A weight shared across a batch (x @ W): fold the batch into rows, one GEMM instead of a batched one and a sum.
    const [k, n] = [left.shape[left.rank - 1], grad.shape[grad.rank - 1]];
    db = right.rank === 2 && left.rank > 2
      ? matmul(transpose(reshape(left, [-1, k]), [1, 0]), reshape(grad, [-1, n]))
      : unbroadcast(matmul(transposeLast(left), grad), right.shape);
    db = restore(db, b!);
  }
  return [da, db];
};

/** Y = alpha * op(A) @ op(B) + beta * C, on 2-D operands. */
const GEMM = defineOp('Gemm', ([a, b, c], attrs) => {
  check(a!.rank === 2 && b!.rank === 2, 'A and B must be 2-D');
  const [m, k] = attrValue(attrs, 'transA', 0) ? [a!.shape[1], a!.shape[0]] : a!.shape;
  const [k2, n] = attrValue(attrs, 'transB', 0) ? [b!.shape[1], b!.shape[0]] : b!.shape;
  check(k === k2, `inner dimensions differ: ${k} and ${k2}`);
  if (c) check(broadcastShapes(c.shape, [m, n])?.join() === [m, n].join(), `C ${formatShape(c.shape)} does not broadcast to [${m}, ${n}]`);
  return [{ dtype: a!.dtype, shape: [m, n] }];
});
export const gemm = (
  a: Tensor, b: Tensor, c?: Tensor,
  { transA = false, transB = false, alpha = 1, beta = 1 } = {},
): Tensor =>
  a.graph.apply(GEMM, [a, b, c], {
    transA: attr.int(transA ? 1 : 0), transB: attr.int(transB ? 1 : 0), alpha: attr.float(alpha), beta: attr.float(beta),
  })[0];
// Each case is one Gemm with transposes chosen so op(A) and op(B) are never materialized.
GEMM.grad = ({ inputs: [a, b, c], attrs }, [dy], [wa, wb, wc]) => {
  const transA = attrValue<number>(attrs, 'transA', 0) === 1;
  const transB = attrValue<number>(attrs, 'transB', 0) === 1;
  const alpha = attrValue(attrs, 'alpha', 1);
  const beta = attrValue(attrs, 'beta', 1);
  let da: Tensor | undefined;
  let db: Tensor | undefined;
  if (wa) {
    da = transA
      ? gemm(b!, dy!, undefined, { transA: transB, transB: true, alpha })
      : gemm(dy!, b!, undefined, { transB: !transB, alpha });
  }
  if (wb) {
    db = transB
      ? gemm(dy!, a!, undefined, { transA: true, transB: transA, alpha })
      : gemm(a!, dy!, undefined, { transA: !transA, alpha });
  }
  // alpha and beta are float attributes: the forward used their float32 values.
  const dc = wc ? unbroadcast(beta === 1 ? dy! : mul(dy!, Math.fround(beta)), c!.shape) : undefined;
  return [da, db, dc];
};
