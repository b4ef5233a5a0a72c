import { attr, attrValue, check, defineOp, type Tensor } from '../graph';
import { broadcastShapes, formatShape } from '../shape';

/** Numpy matmul: batch dimensions broadcast, 1-D operands are promoted and the added axis dropped. */
export const MATMUL = defineOp('MatMul', ([a, b]) => {
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

/** Y = alpha * op(A) @ op(B) + beta * C, on 2-D operands. */
export const GEMM = defineOp('Gemm', ([a, b, c], attrs) => {
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
