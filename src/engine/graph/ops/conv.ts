import { type DType } from '../dtype';
import { type Attrs, attr, attrValue, check, defineOp, type Graph, type Tensor } from '../graph';
import { sizeOf } from '../shape';
import { int64s } from './constants';
import { matmul } from './matmul';
import { reduceSum } from './reduce';
import { gather, reshape, slice, transpose } from './shape-ops';

export interface ConvOptions {
  strides?: number[];
  /** ONNX order: all begins, then all ends. */
  pads?: number[];
  dilations?: number[];
  group?: number;
}

function convAttrs(spatial: number, { strides, pads, dilations, group = 1 }: ConvOptions, extra = {}) {
  return {
    strides: attr.ints(strides ?? Array(spatial).fill(1)),
    pads: attr.ints(pads ?? Array(spatial * 2).fill(0)),
    dilations: attr.ints(dilations ?? Array(spatial).fill(1)),
    group: attr.int(group),
    ...extra,
  };
}

/** Conv over N-D inputs [N, C, ...spatial] with weights [M, C/group, ...kernel]. */
const CONV = defineOp('Conv', ([x, w, b], attrs) => {
  const spatial = x!.rank - 2;
  check(spatial >= 1 && w!.rank === x!.rank, `input and weight ranks must match and be >= 3`);
  const group = attrValue(attrs, 'group', 1);
  const strides = attrValue<number[]>(attrs, 'strides', Array(spatial).fill(1));
  const pads = attrValue<number[]>(attrs, 'pads', Array(spatial * 2).fill(0));
  const dilations = attrValue<number[]>(attrs, 'dilations', Array(spatial).fill(1));
  check(x!.shape[1] === w!.shape[1] * group, `input has ${x!.shape[1]} channels, weight expects ${w!.shape[1]} x group ${group}`);
  check(w!.shape[0] % group === 0, `output channels ${w!.shape[0]} not divisible by group ${group}`);
  if (b) check(b.rank === 1 && b.shape[0] === w!.shape[0], `bias must be [${w!.shape[0]}]`);
  const out = [x!.shape[0], w!.shape[0]];
  for (let i = 0; i < spatial; i++) {
    const span = dilations[i] * (w!.shape[2 + i] - 1) + 1;
    const size = Math.floor((x!.shape[2 + i] + pads[i] + pads[spatial + i] - span) / strides[i]) + 1;
    check(size > 0, `spatial axis ${i} collapses to ${size}`);
    out.push(size);
  }
  return [{ dtype: x!.dtype, shape: out }];
});
export const conv = (x: Tensor, w: Tensor, b?: Tensor, options: ConvOptions = {}): Tensor =>
  x.graph.apply(CONV, [x, w, b], convAttrs(x.rank - 2, options))[0];

function readConvAttrs(attrs: Attrs, spatial: number): Required<ConvOptions> {
  return {
    strides: attrValue<number[]>(attrs, 'strides', Array(spatial).fill(1)),
    pads: attrValue<number[]>(attrs, 'pads', Array(spatial * 2).fill(0)),
    dilations: attrValue<number[]>(attrs, 'dilations', Array(spatial).fill(1)),
    group: attrValue(attrs, 'group', 1),
  };
}

/** Identity kernel [taps, 1, ...kernel] of `dtype`: a Conv with it lays out every kernel tap as a channel. */
function tapPicker(graph: Graph, dtype: DType, kernel: readonly number[]): Tensor {
  const taps = sizeOf(kernel);
  const one = dtype === 'float16' ? 0x3c00 : 1;
  const data = dtype === 'float64' ? new Float64Array(taps * taps) : dtype === 'float16' ? new Uint16Array(taps * taps) : new Float32Array(taps * taps);
  for (let k = 0; k < taps; k++) data[k * taps + k] = one;
  return graph.constant(dtype, [taps, 1, ...kernel], data);
}

/**
 * Weight gradient of y = Conv(x, w), ungrouped: dW[m, c, k] = sum over n, o of dY[n, m, o] *
 * xpad[n, c, o * stride + k * dilation]. The shifted views of x (im2col) come from one Conv with an
 * identity kernel per channel — exact, as it only multiplies by 1 and adds 0 — and are contracted
 * with dY in one batched MatMul: several times faster than a Conv whose kernel is the whole of dY.
 */
function im2colWeightGrad(x: Tensor, dy: Tensor, kernel: readonly number[], { strides, pads, dilations }: Required<ConvOptions>): Tensor {
  const [n, c, ...space] = x.shape;
  const [, m, ...outSpace] = dy.shape;
  const taps = sizeOf(kernel);
  const positions = sizeOf(outSpace);
  const views = conv(reshape(x, [n * c, 1, ...space]), tapPicker(x.graph, x.dtype, kernel), undefined, { strides, pads, dilations });
  const columns = reshape(views, [n, c * taps, positions]);
  const perSample = matmul(reshape(dy, [n, m, positions]), transpose(columns, [0, 2, 1]));
  return reshape(n === 1 ? perSample : reduceSum(perSample, [0], false), [m, c, ...kernel]);
}

/**
 * Weight gradient as a Conv with the batch as channels, where stride and dilation swap roles;
 * used for grouped convolutions, whose groups become that Conv's groups: x is arranged
 * [C/g, g*N, ...] and dY [g*M/g, N, ...]. The result can exceed the kernel by the rows the forward
 * stride skipped; those are sliced off.
 */
function groupedWeightGrad(x: Tensor, dy: Tensor, kernel: readonly number[], { strides, pads, dilations, group }: Required<ConvOptions>): Tensor {
  const [n, c, ...space] = x.shape;
  const [, m, ...outSpace] = dy.shape;
  const input = reshape(transpose(reshape(x, [n, group, c / group, ...space]), [2, 1, 0, ...space.map((_, i) => 3 + i)]),
    [c / group, group * n, ...space]);
  const filters = reshape(transpose(reshape(dy, [n, group, m / group, ...outSpace]), [1, 2, 0, ...outSpace.map((_, i) => 3 + i)]),
    [m, n, ...outSpace]);
  let grad = conv(input, filters, undefined, { strides: dilations, pads, dilations: strides, group });
  if (grad.shape.slice(2).some((d, i) => d !== kernel[i])) {
    grad = slice(grad, space.map(() => 0), [...kernel], space.map((_, i) => 2 + i));
  }
  return transpose(grad, [1, 0, ...space.map((_, i) => 2 + i)]);
}

const convWeightGrad = (x: Tensor, dy: Tensor, kernel: readonly number[], options: Required<ConvOptions>): Tensor =>
  options.group === 1 ? im2colWeightGrad(x, dy, kernel, options) : groupedWeightGrad(x, dy, kernel, options);

/**
 * Input gradient of y = Conv(x, w): the adjoint ConvTranspose of dY, with output_padding restoring
 * the rows a stride dropped at the end. With stride 1 it is an ordinary Conv of dY with the kernel
 * flipped and its channel axes swapped (per group), which onnxruntime runs several times faster.
 */
function convInputGrad(x: Tensor, w: Tensor, dy: Tensor, options: Required<ConvOptions>): Tensor {
  const { strides, pads, dilations, group } = options;
  const kernel = w.shape.slice(2);
  const spatial = kernel.length;
  const reach = kernel.map((k, i) => dilations[i] * (k - 1));
  const flippedPads = [...reach.map((r, i) => r - pads[i]), ...reach.map((r, i) => r - pads[spatial + i])];
  if (strides.every((st) => st === 1) && flippedPads.every((p) => p >= 0)) {
    const [m, cg] = w.shape;
    let flipped = w;
    kernel.forEach((k, i) => {
      flipped = gather(flipped, int64s(w.graph, [...Array(k).keys()].reverse()), 2 + i);
    });
    const perGroup = transpose(reshape(flipped, [group, m / group, cg, ...kernel]), [0, 2, 1, ...kernel.map((_, i) => 3 + i)]);
    return conv(dy, reshape(perGroup, [group * cg, m / group, ...kernel]), undefined, { strides, pads: flippedPads, dilations, group });
  }
  const outputPadding = kernel.map((_, i) =>
    x.shape[2 + i] - (strides[i] * (dy.shape[2 + i] - 1) + reach[i] + 1 - pads[i] - pads[spatial + i]));
  return convTranspose(dy, w, undefined, { ...options, outputPadding });
}

/** Sums a conv output gradient over batch and space: the bias gradient. */
const biasGrad = (dy: Tensor): Tensor => reduceSum(dy, [0, ...dy.shape.slice(2).map((_, i) => 2 + i)], false);

CONV.grad = ({ inputs: [x, w, b], attrs }, [dy], [wx, ww, wb]) => {
  const options = readConvAttrs(attrs, x!.rank - 2);
  return [
    wx ? convInputGrad(x!, w!, dy!, options) : undefined,
    ww ? convWeightGrad(x!, dy!, w!.shape.slice(2), options) : undefined,
    wb && b ? biasGrad(dy!) : undefined,
  ];
};

/** The adjoint of Conv: input [N, C, ...], weight [C, M/group, ...kernel]. */
const CONV_TRANSPOSE = defineOp('ConvTranspose', ([x, w, b], attrs) => {
  const spatial = x!.rank - 2;
  const group = attrValue(attrs, 'group', 1);
  const strides = attrValue<number[]>(attrs, 'strides', Array(spatial).fill(1));
  const pads = attrValue<number[]>(attrs, 'pads', Array(spatial * 2).fill(0));
  const dilations = attrValue<number[]>(attrs, 'dilations', Array(spatial).fill(1));
  const outputPadding = attrValue<number[]>(attrs, 'output_padding', Array(spatial).fill(0));
  check(x!.shape[1] === w!.shape[0], `input has ${x!.shape[1]} channels, weight expects ${w!.shape[0]}`);
  const channels = w!.shape[1] * group;
  if (b) check(b.rank === 1 && b.shape[0] === channels, `bias must be [${channels}]`);
  const out = [x!.shape[0], channels];
  for (let i = 0; i < spatial; i++) {
    out.push(strides[i] * (x!.shape[2 + i] - 1) + outputPadding[i] + dilations[i] * (w!.shape[2 + i] - 1) + 1 - pads[i] - pads[spatial + i]);
  }
  return [{ dtype: x!.dtype, shape: out }];
});
export const convTranspose = (x: Tensor, w: Tensor, b?: Tensor, options: ConvOptions & { outputPadding?: number[] } = {}): Tensor =>
  x.graph.apply(CONV_TRANSPOSE, [x, w, b],
    convAttrs(x.rank - 2, options, { output_padding: attr.ints(options.outputPadding ?? Array(x.rank - 2).fill(0)) }))[0];
// ConvTranspose is the input gradient of a Conv of its output: its input gradient is that Conv,
// and its weight gradient that Conv's weight gradient with dY as input and x as output gradient.
CONV_TRANSPOSE.grad = ({ inputs: [x, w, b], attrs }, [dy], [wx, ww, wb]) => {
  const options = readConvAttrs(attrs, x!.rank - 2);
  return [
    wx ? conv(dy!, w!, undefined, options) : undefined,
    ww ? convWeightGrad(dy!, x!, w!.shape.slice(2), options) : undefined,
    wb && b ? biasGrad(dy!) : undefined,
  ];
};
