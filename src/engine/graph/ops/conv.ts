import { attr, attrValue, check, defineOp, type Tensor } from '../graph';

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
export const CONV = defineOp('Conv', ([x, w, b], attrs) => {
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

/** The adjoint of Conv: input [N, C, ...], weight [C, M/group, ...kernel]. */
export const CONV_TRANSPOSE = defineOp('ConvTranspose', ([x, w, b], attrs) => {
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
