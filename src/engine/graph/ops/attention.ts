import { attr, attrValue, check, defineOp, type Tensor } from '../graph';
import { formatShape } from '../shape';
import { add, mul, sub } from './elementwise';
import { matmul } from './matmul';
import { reduceSum, softmax } from './reduce';
import { after } from './ordering';
import { concat, reshape, slice, transpose } from './shape-ops';

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

/** Elements of one [batch, heads, rows, keys] probability map the attention gradient holds at a time (256 MiB in float32). */
export const ATTENTION_MAP_ELEMENTS = 2 ** 26;

/**
 * The gradient of MultiHeadAttention, recomputing the probabilities rather than keeping them from the forward pass
 * (which holds only q, k, v and the output), a block of query rows at a time so that one [B, heads, rows, L] map of
 * at most `mapElements` lives at once: a 4096-token self-attention's maps are 1 GiB per batch of 2 x 8 heads.
 * Each block waits for the previous one's results (`after`), so they run one after another. Per head, with
 * P = softmax(q k^T * scale) and O = P v: dv = P^T dO, dP = dO v^T, and the softmax gradient
 * dS = P * (dP - rowsum(dO * O)) (rowsum(dP * P) = rowsum(dO * O), as FlashAttention's backward uses);
 * dq = dS k * scale, dk = dS^T q * scale. dk and dv are accumulated transposed ([d, L]), so no map is transposed.
 */
export function attentionGradient(
  [q, k, v, o, dy]: readonly Tensor[], heads: number, scale: number, [wq, wk, wv]: readonly boolean[], mapElements = ATTENTION_MAP_ELEMENTS,
): (Tensor | undefined)[] {
  const split = (t: Tensor) => transpose(reshape(t, [t.shape[0], t.shape[1], heads, t.shape[2] / heads]), [0, 2, 1, 3]);
  const merge = (t: Tensor) => reshape(transpose(t, [0, 2, 1, 3]), [t.shape[0], t.shape[2], -1]);
  const swapLast = (t: Tensor) => transpose(t, [0, 1, 3, 2]);
  const [qh, kh, vh, oh, dOh] = [q, k, v, o, dy].map(split);
  const [batch, , queries] = qh.shape;
  const keys = kh.shape[2];
  const rows = Math.max(1, Math.min(queries, Math.floor(mapElements / (batch * heads * keys))));
  const [kT, vT] = [swapLast(kh), swapLast(vh)];
  const dq: Tensor[] = [];
  let dkT: Tensor | undefined;
  let dvT: Tensor | undefined;
  for (let start = 0; start < queries; start += rows) {
    const end = Math.min(queries, start + rows);
    let [qc, oc, dOc] = [qh, oh, dOh].map((t) => (rows === queries ? t : slice(t, [start], [end], [2])));
    for (const previous of [dq[dq.length - 1], dkT, dvT]) if (previous) qc = after(qc, previous);
    const p = softmax(mul(matmul(qc, kT), scale), -1);
    const dS = mul(p, sub(matmul(dOc, vT), reduceSum(mul(dOc, oc), [-1])));
    if (wq) dq.push(mul(matmul(dS, kh), scale));
    if (wk) {
      const part = mul(matmul(swapLast(qc), dS), scale);
      dkT = dkT ? add(dkT, part) : part;
    }
    if (wv) {
      const part = matmul(swapLast(dOc), p);
      dvT = dvT ? add(dvT, part) : part;
    }
  }
  return [
    wq ? merge(concat(dq, 2)) : undefined,
    wk ? merge(swapLast(dkT!)) : undefined,
    wv ? merge(swapLast(dvT!)) : undefined,
  ];
}

// Train steps do not differentiate through it on CUDA yet: see Precision.fusedAttention.
MULTI_HEAD_ATTENTION.grad = ({ inputs: [q, k, v], outputs: [o], attrs }, [dy], wanted) =>
  attentionGradient([q!, k!, v!, o, dy!], attrValue(attrs, 'num_heads', 1), Math.fround(attrValue(attrs, 'scale', 0)), wanted);
