import { type Tensor } from '../graph/graph';
import { add, cast, div, less, mul, pow, scalar, sqrt, sub, where } from '../graph/ops/elementwise';
import { reduceSum } from '../graph/ops/reduce';
import { pad, reshape } from '../graph/ops/shape-ops';

/** torch.optim.AdamW's settings, with its defaults. */
export interface AdamWOptions {
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
  /** Clip gradients to this global L2 norm first, as torch.nn.utils.clip_grad_norm_. */
  maxGradNorm?: number;
}

/** The optimizer's view of a train step: every trainable weight, its gradient and moments, each packed into one vector. */
export interface AdamWState {
  param: Tensor;
  grad: Tensor;
  m: Tensor;
  v: Tensor;
}

/** Squares of the packed gradient are summed in blocks of this many, then the block sums (see `globalNorm`). */
const NORM_BLOCK = 4096;

/**
 * The L2 norm of all gradients together (packed into the 1-D `grad`), as clip_grad_norm_ computes it. torch sums
 * squares per tensor, then the tensors' squared norms; here fixed blocks of the packed vector take the tensors'
 * place, so that float32 rounding stays that of short sums however many parameters train (one sum over
 * millions drifts by 1e-6 relative on the CPU). The tail block is padded with zeros.
 */
export function globalNorm(grad: Tensor): Tensor {
  const size = grad.shape[0];
  const block = Math.min(size, NORM_BLOCK);
  const blocks = Math.ceil(size / block);
  const squares = reshape(pad(mul(grad, grad), [0, blocks * block - size]), [blocks, block]);
  return sqrt(reduceSum(reduceSum(squares, [1], false), [0], false));
}

/**
 * clip_grad_norm_: the gradient times min(1, maxNorm / (norm + 1e-6)). torch multiplies even when
 * the coefficient clamps to 1, which is exact, so this does too.
 */
export function clipByGlobalNorm(grad: Tensor, norm: Tensor, maxNorm: number): Tensor {
  const coef = div(maxNorm, add(norm, 1e-6));
  return mul(grad, where(less(coef, 1), coef, 1));
}

/**
 * One torch.optim.AdamW step (single-tensor path, elementwise, so one packed vector updates as its tensors
 * would one by one) in the graph. The scalar factors (bias corrections, step size, decay) are computed in
 * float64 from `step` and `lr`, as torch computes them in Python floats, then applied in the parameters' dtype:
 *   p <- p * (1 - lr * wd);  m <- m + (g - m) * (1 - b1);  v <- v * b2 + (1 - b2) * g * g
 *   p <- p - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 */
export function adamwUpdate(
  { param, grad, m, v }: AdamWState, step: Tensor, lr: Tensor, { betas = [0.9, 0.999], eps = 1e-8, weightDecay = 1e-2 }: AdamWOptions,
): { param: Tensor; m: Tensor; v: Tensor } {
  const g = step.graph;
  const t = cast(step, 'float64');
  const lr64 = cast(lr, 'float64');
  const f64 = (value: number) => scalar(g, value, 'float64');
  const stepSize = cast(div(lr64, sub(1, pow(f64(betas[0]), t))), param.dtype);
  const correction2 = cast(sqrt(sub(1, pow(f64(betas[1]), t))), param.dtype);
  const decayed = weightDecay ? mul(param, cast(sub(1, mul(lr64, weightDecay)), param.dtype)) : param;
  const newM = add(m, mul(sub(grad, m), 1 - betas[0]));
  const newV = add(mul(v, betas[1]), mul(mul(grad, 1 - betas[1]), grad));
  const denom = add(div(sqrt(newV), correction2), eps);
  // addcdiv_(m, denom, value=-step_size) evaluates (step_size * m) / denom.
  return { param: sub(decayed, div(mul(newM, stepSize), denom)), m: newM, v: newV };
}
