import { type DType } from '../graph/dtype';
import { type Tensor } from '../graph/graph';
import { add, cast, div, less, mul, pow, scalar, sqrt, sub, where } from '../graph/ops/elementwise';
import { reduceSum } from '../graph/ops/reduce';
import { concat, reshape } from '../graph/ops/shape-ops';

/** torch.optim.AdamW's settings, with its defaults. */
export interface AdamWOptions {
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
  /** Clip gradients to this global L2 norm first, as torch.nn.utils.clip_grad_norm_. */
  maxGradNorm?: number;
}

export interface AdamWState {
  param: Tensor;
  grad: Tensor;
  m: Tensor;
  v: Tensor;
}

/** The L2 norm of all gradients together, as clip_grad_norm_ computes it: the norm of the per-tensor norms. */
export function globalNorm(grads: readonly Tensor[]): Tensor {
  const norms = grads.map((g) => reshape(sqrt(reduceSum(mul(g, g), [...g.shape.keys()], false)), [1]));
  const stacked = concat(norms, 0);
  return sqrt(reduceSum(mul(stacked, stacked), [0], false));
}

/**
 * clip_grad_norm_: every gradient times min(1, maxNorm / (norm + 1e-6)). torch multiplies even when
 * the coefficient clamps to 1, which is exact, so this does too.
 */
export function clipByGlobalNorm(grads: readonly Tensor[], norm: Tensor, maxNorm: number): Tensor[] {
  const coef = div(maxNorm, add(norm, 1e-6));
  const clamped = where(less(coef, 1), coef, 1);
  return grads.map((g) => mul(g, clamped));
}

/**
 * One torch.optim.AdamW step (single-tensor path) in the graph. The scalar factors (bias
 * corrections, step size, decay) are computed in float64 from `step` and `lr`, as torch computes
 * them in Python floats, then applied in the parameters' dtype:
 *   p <- p * (1 - lr * wd);  m <- m + (g - m) * (1 - b1);  v <- v * b2 + (1 - b2) * g * g
 *   p <- p - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 */
export function adamwUpdate(
  states: readonly AdamWState[], step: Tensor, lr: Tensor, { betas = [0.9, 0.999], eps = 1e-8, weightDecay = 1e-2 }: AdamWOptions,
): { param: Tensor; m: Tensor; v: Tensor }[] {
  const g = step.graph;
  const t = cast(step, 'float64');
  const lr64 = cast(lr, 'float64');
  const f64 = (value: number) => scalar(g, value, 'float64');
  const biasCorrection1 = sub(1, pow(f64(betas[0]), t));
  const biasCorrection2Sqrt = sqrt(sub(1, pow(f64(betas[1]), t)));
  const stepSize = div(lr64, biasCorrection1);
  const decay = sub(1, mul(lr64, weightDecay));
  // The factors in each parameter dtype, cast once and shared by all parameters of that dtype.
  const factors = new Map<DType, { stepSize: Tensor; decay: Tensor; correction2: Tensor }>();
  const factorsIn = (dtype: DType) => {
    if (!factors.has(dtype)) {
      factors.set(dtype, { stepSize: cast(stepSize, dtype), decay: cast(decay, dtype), correction2: cast(biasCorrection2Sqrt, dtype) });
    }
    return factors.get(dtype)!;
  };
  return states.map(({ param, grad, m, v }) => {
    const f = factorsIn(param.dtype);
    const decayed = weightDecay ? mul(param, f.decay) : param;
    const newM = add(m, mul(sub(grad, m), 1 - betas[0]));
    const newV = add(mul(v, betas[1]), mul(mul(grad, 1 - betas[1]), grad));
    const denom = add(div(sqrt(newV), f.correction2), eps);
    // addcdiv_(m, denom, value=-step_size) evaluates (step_size * m) / denom.
    return { param: sub(decayed, div(mul(newM, f.stepSize), denom)), m: newM, v: newV };
  });
}
