import { float32ToFloat16Bits } from '../../weights/dtype';
import { type DType, isFloat } from '../dtype';
import { attr, check, defineOp, type Graph, type OpDef, Tensor } from '../graph';
import { broadcastShapes, formatShape } from '../shape';
import { unbroadcast } from './reduce';

/** A scalar constant of `dtype`, shape []. */
export function scalar(graph: Graph, value: number, dtype: DType = 'float32'): Tensor {
  switch (dtype) {
    case 'float32': return graph.constant(dtype, [], Float32Array.of(value));
    case 'float64': return graph.constant(dtype, [], Float64Array.of(value));
    case 'float16': return graph.constant(dtype, [], Uint16Array.of(float32ToFloat16Bits(value)));
    case 'int64': return graph.constant(dtype, [], BigInt64Array.of(BigInt(value)));
    case 'int32': return graph.constant(dtype, [], Int32Array.of(value));
    default: throw new Error(`scalar constants of ${dtype} are not supported`);
  }
}

type Operand = Tensor | number;

/** Turns a number operand into a scalar constant of the other operand's dtype. */
function operands(a: Operand, b: Operand): [Tensor, Tensor] {
  if (a instanceof Tensor) return [a, b instanceof Tensor ? b : scalar(a.graph, b, a.dtype)];
  check(b instanceof Tensor, 'at least one operand must be a tensor');
  return [scalar(b.graph, a, b.dtype), b];
}

function broadcasting(type: string, outputDType?: DType): OpDef {
  return defineOp(type, ([a, b]) => {
    check(a!.dtype === b!.dtype, `dtypes differ: ${a!.dtype} and ${b!.dtype}`);
    const shape = broadcastShapes(a!.shape, b!.shape);
    check(shape, `shapes ${formatShape(a!.shape)} and ${formatShape(b!.shape)} do not broadcast`);
    return [{ dtype: outputDType ?? a!.dtype, shape }];
  });
}

function unary(type: string, floatOnly = true): OpDef {
  return defineOp(type, ([x]) => {
    check(!floatOnly || isFloat(x!.dtype), `needs a floating-point input, got ${x!.dtype}`);
    return [{ dtype: x!.dtype, shape: x!.shape }];
  });
}

const ADD = broadcasting('Add');
const SUB = broadcasting('Sub');
const MUL = broadcasting('Mul');
const DIV = broadcasting('Div');
const POW = broadcasting('Pow');
const EQUAL = broadcasting('Equal', 'bool');
const LESS = broadcasting('Less', 'bool');

export const add = (a: Operand, b: Operand): Tensor => { const [x, y] = operands(a, b); return x.graph.apply(ADD, [x, y])[0]; };
export const sub = (a: Operand, b: Operand): Tensor => { const [x, y] = operands(a, b); return x.graph.apply(SUB, [x, y])[0]; };
export const mul = (a: Operand, b: Operand): Tensor => { const [x, y] = operands(a, b); return x.graph.apply(MUL, [x, y])[0]; };
export const div = (a: Operand, b: Operand): Tensor => { const [x, y] = operands(a, b); return x.graph.apply(DIV, [x, y])[0]; };
export const pow = (a: Operand, b: Operand): Tensor => { const [x, y] = operands(a, b); return x.graph.apply(POW, [x, y])[0]; };
export const equal = (a: Operand, b: Operand): Tensor => { const [x, y] = operands(a, b); return x.graph.apply(EQUAL, [x, y])[0]; };
export const less = (a: Operand, b: Operand): Tensor => { const [x, y] = operands(a, b); return x.graph.apply(LESS, [x, y])[0]; };

// Gradients of broadcasting ops are summed back to each operand's shape; formulas follow torch's
// derivatives.yaml so the parity test compares like with like.
ADD.grad = ({ inputs: [a, b] }, [dy], [wa, wb]) => [
  wa ? unbroadcast(dy!, a!.shape) : undefined,
  wb ? unbroadcast(dy!, b!.shape) : undefined,
];
SUB.grad = ({ inputs: [a, b] }, [dy], [wa, wb]) => [
  wa ? unbroadcast(dy!, a!.shape) : undefined,
  wb ? unbroadcast(neg(dy!), b!.shape) : undefined,
];
MUL.grad = ({ inputs: [a, b] }, [dy], [wa, wb]) => [
  wa ? unbroadcast(mul(dy!, b!), a!.shape) : undefined,
  wb ? unbroadcast(mul(dy!, a!), b!.shape) : undefined,
];
DIV.grad = ({ inputs: [a, b], outputs: [y] }, [dy], [wa, wb]) => [
  wa ? unbroadcast(div(dy!, b!), a!.shape) : undefined,
  wb ? unbroadcast(neg(div(mul(dy!, y), b!)), b!.shape) : undefined,
];
POW.grad = ({ inputs: [a, b], outputs: [y] }, [dy], [wa, wb]) => [
  wa ? unbroadcast(mul(dy!, mul(b!, pow(a!, sub(b!, 1)))), a!.shape) : undefined,
  // d(a^b)/db = a^b log a, taken as 0 where a = 0 (torch does the same).
  wb ? unbroadcast(mul(dy!, where(equal(a!, 0), 0, mul(y, log(a!)))), b!.shape) : undefined,
];

const NEG = unary('Neg', false);
const SQRT = unary('Sqrt');
const EXP = unary('Exp');
const LOG = unary('Log');
const SIGMOID = unary('Sigmoid');
const TANH = unary('Tanh');
const ERF = unary('Erf');
const SIN = unary('Sin');
const COS = unary('Cos');
const ABS = unary('Abs', false);
const RECIPROCAL = unary('Reciprocal');

export const neg = (x: Tensor): Tensor => x.graph.apply(NEG, [x])[0];
export const sqrt = (x: Tensor): Tensor => x.graph.apply(SQRT, [x])[0];
export const exp = (x: Tensor): Tensor => x.graph.apply(EXP, [x])[0];
export const log = (x: Tensor): Tensor => x.graph.apply(LOG, [x])[0];
export const sigmoid = (x: Tensor): Tensor => x.graph.apply(SIGMOID, [x])[0];
export const tanh = (x: Tensor): Tensor => x.graph.apply(TANH, [x])[0];
export const erf = (x: Tensor): Tensor => x.graph.apply(ERF, [x])[0];
export const sin = (x: Tensor): Tensor => x.graph.apply(SIN, [x])[0];
export const cos = (x: Tensor): Tensor => x.graph.apply(COS, [x])[0];
export const abs = (x: Tensor): Tensor => x.graph.apply(ABS, [x])[0];
export const reciprocal = (x: Tensor): Tensor => x.graph.apply(RECIPROCAL, [x])[0];

NEG.grad = (_, [dy]) => [neg(dy!)];
SQRT.grad = ({ outputs: [y] }, [dy]) => [div(dy!, mul(y, 2))];
EXP.grad = ({ outputs: [y] }, [dy]) => [mul(dy!, y)];
LOG.grad = ({ inputs: [x] }, [dy]) => [div(dy!, x!)];
SIGMOID.grad = ({ outputs: [y] }, [dy]) => [mul(mul(dy!, sub(1, y)), y)];
TANH.grad = ({ outputs: [y] }, [dy]) => [mul(dy!, sub(1, mul(y, y)))];
ERF.grad = ({ inputs: [x] }, [dy]) => [mul(dy!, mul(exp(neg(mul(x!, x!))), 2 / Math.sqrt(Math.PI)))];
SIN.grad = ({ inputs: [x] }, [dy]) => [mul(dy!, cos(x!))];
COS.grad = ({ inputs: [x] }, [dy]) => [mul(dy!, neg(sin(x!)))];
// sign(x) as (x > 0) - (x < 0), so the gradient at 0 is 0 as in torch.
ABS.grad = ({ inputs: [x] }, [dy]) => [mul(dy!, sub(cast(less(0, x!), x!.dtype), cast(less(x!, 0), x!.dtype)))];
RECIPROCAL.grad = ({ outputs: [y] }, [dy]) => [neg(mul(dy!, mul(y, y)))];

const ONNX_CAST_TARGET: Record<DType, number> = { float32: 1, uint8: 2, int32: 6, int64: 7, bool: 9, float16: 10, float64: 11 };

const CAST = defineOp('Cast', ([x], attrs) => {
  const to = Object.entries(ONNX_CAST_TARGET).find(([, code]) => code === attrs.to?.value)?.[0] as DType | undefined;
  check(to, `unknown target type ${attrs.to?.value}`);
  return [{ dtype: to, shape: x!.shape }];
});
export const cast = (x: Tensor, to: DType): Tensor =>
  x.dtype === to ? x : x.graph.apply(CAST, [x], { to: attr.int(ONNX_CAST_TARGET[to]) })[0];
// Only float-to-float casts carry a gradient; autodiff prunes the others by dtype.
CAST.grad = ({ inputs: [x] }, [dy]) => [cast(dy!, x!.dtype)];

const WHERE = defineOp('Where', ([condition, a, b]) => {
  check(condition!.dtype === 'bool', `condition must be bool, got ${condition!.dtype}`);
  check(a!.dtype === b!.dtype, `branches differ in dtype: ${a!.dtype} and ${b!.dtype}`);
  const shape = broadcastShapes(condition!.shape, a!.shape, b!.shape);
  check(shape, 'condition and branches do not broadcast');
  return [{ dtype: a!.dtype, shape }];
});
export const where = (condition: Tensor, a: Operand, b: Operand): Tensor => {
  const [x, y] = operands(a, b);
  return condition.graph.apply(WHERE, [condition, x, y])[0];
};
WHERE.grad = ({ inputs: [condition, a, b] }, [dy], [, wa, wb]) => [
  undefined,
  wa ? unbroadcast(where(condition!, dy!, 0), a!.shape) : undefined,
  wb ? unbroadcast(where(condition!, 0, dy!), b!.shape) : undefined,
];
