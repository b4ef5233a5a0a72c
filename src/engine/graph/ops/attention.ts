import { attr, check, defineOp, type Tensor } from '../graph';
import { formatShape } from '../shape';

/**
 * onnxruntime's com.microsoft MultiHeadAttention on unsplit projections: query [B, S, heads * d], key [B, L, heads * d],
 * value [B, L, heads * dv] -> [B, S, heads * dv], softmax(q k^T * scale) v per head. On CUDA it runs flash or
 * memory-efficient kernels that never hold the [B, heads, S, L] scores (about 6x the decomposed form in fp16);
 * onnxruntime's CPU has a float32 kernel. No gradient rule: training graphs use the decomposed form.
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
