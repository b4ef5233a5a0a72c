import { type Tensor } from '../graph/graph';
import { add, cast, div, less, mul, pow, scalar, sqrt, sub, where } from '../graph/ops/elementwise';
import { reduceSum } from '../graph/ops/reduce';

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

/**
 * The L2 norm of all gradients together (packed into `grad`), as clip_grad_norm_ computes it. torch takes the
 * norm of the per-tensor norms; over the packed vector that is one sum of squares, equal up to rounding.
 */
export function globalNorm(grad: Tensor): Tensor {
  return sqrt(reduceSum(mul(grad, grad), [...grad.shape.keys()], false));
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
