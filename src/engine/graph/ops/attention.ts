import { attr, attrValue, check, defineOp, type Tensor } from '../graph';
import { formatShape } from '../shape';
import { mul, sub } from './elementwise';
import { matmul } from './matmul';
import { reduceSum, softmax } from './reduce';
import { reshape, transpose } from './shape-ops';

/**
 * onnxruntime's com.microsoft MultiHeadAttention on unsplit projections: query [B, S, heads * d], key [B, L, heads * d],
 * value [B, L, heads * dv] -> [B, S, heads * dv], softmax(q k^T * scale) v per head. On CUDA it runs flash or
 * memory-efficient kernels that never hold the [B, heads, S, L] scores (about 6x the decomposed form in fp16);
 * onnxruntime's CPU has a float32 kernel.
 */
const MULTI_HEAD_ATTENTION = defineOp('MultiHeadAttention', ([q, k, v], attrs) => {
  const heads = attrs.num_heads?.value as number;
  check(q!.rank === 3 && k!.rank === 3 && v!.rank === 3, 'query, key and value must be [batch, tokens, hidden]');
  check(q!.dtype === k!.dtype && k!.dtype === v!.dtype, `dtypes differ: ${q!.dtype}, ${k!.dtype}, ${v!.dtype}`);
  check(q!.shape[0] === k!.shape[0] && k!.shape[0] === v!.shape[0], 'batch sizes differ');
  check(k!.shape[1] === v!.shape[1], `key ${formatShape(k!.shape)} and value ${formatShape(v!.shape)} differ in length`);
  check(q!.shape[2] === k!.shape[2], `query ${formatShape(q!.shape)} and key ${formatShape(k!.shape)} differ in width`);
  check(q!.shape[2] % heads === 0 && v!.shape[2] % heads === 0, `widths do not split into ${heads} heads`);
  return [{ dtype: q!.dtype, shape: [q!.shape[0], q!.shape[1], v!.shape[2]] }];
}, 'com.microsoft');

export const multiHeadAttention = (q: Tensor, k: Tensor, v: Tensor, heads: number, scale: number): Tensor =>
  q.graph.apply(MULTI_HEAD_ATTENTION, [q, k, v], { num_heads: attr.int(heads), scale: attr.float(scale) })[0];

// The probabilities are recomputed here rather than kept from the forward pass, which holds only q, k, v and the
// output: one layer's [B, heads, S, L] maps live at a time during the backward, instead of every layer's from the
// forward on (train steps do not differentiate through it yet: see Precision.fusedAttention). With P = softmax(q k^T * scale) per head and O = P v: dv = P^T dO, dP = dO v^T, and the softmax
// gradient dS = P * (dP - rowsum(dO * O)) (rowsum(dP * P) = rowsum(dO * O), as FlashAttention's backward uses);
// dq = dS k * scale, dk = dS^T q * scale.
MULTI_HEAD_ATTENTION.grad = ({ inputs: [q, k, v], outputs: [o], attrs }, [dy], [wq, wk, wv]) => {
  const heads = attrValue(attrs, 'num_heads', 1);
  const scale = Math.fround(attrValue(attrs, 'scale', 0));
  const split = (t: Tensor) => transpose(reshape(t, [t.shape[0], t.shape[1], heads, t.shape[2] / heads]), [0, 2, 1, 3]);
  const merge = (t: Tensor) => reshape(transpose(t, [0, 2, 1, 3]), [t.shape[0], t.shape[2], -1]);
  const swapLast = (t: Tensor) => transpose(t, [0, 1, 3, 2]);
  const [qh, kh, vh, oh, dOh] = [q!, k!, v!, o, dy!].map(split);
  const p = softmax(mul(matmul(qh, swapLast(kh)), scale), -1);
  const dS = mul(p, sub(matmul(dOh, swapLast(vh)), reduceSum(mul(dOh, oh), [-1])));
  return [
    wq ? merge(mul(matmul(dS, kh), scale)) : undefined,
    wk ? merge(mul(matmul(swapLast(dS), qh), scale)) : undefined,
    wv ? merge(matmul(swapLast(p), dOh)) : undefined,
  ];
};
