import { createHash } from 'node:crypto';
import { closeSync, openSync, writeSync } from 'node:fs';
import { basename } from 'node:path';
// onnx-proto is CommonJS: Node's ESM loader (tsx) only exposes its default export.
import onnxProto, { type onnx as Onnx } from 'onnx-proto';
import { ONNX_DTYPE, toBytes, type DType, type TensorArray } from './dtype';
import { type Attr, type Graph, GraphError, type Node, type Tensor } from './graph';

const { onnx } = onnxProto;

/** The opset every graph is built for; operator semantics in `ops/` follow it. */
const OPSET = 18;
/** onnxruntime's contrib operators (MultiHeadAttention, GroupNorm) are all at version 1 of their domain. */
const CONTRIB_DOMAIN = 'com.microsoft';
const IR_VERSION = 8;

export interface SerializeOptions {
  /** Weights fed as graph inputs (trainable parameters) instead of stored as initializers. */
  weightsAsInputs?: ReadonlySet<string>;
}

const ATTRIBUTE_TYPE = { float: 1, int: 2, string: 3, floats: 6, ints: 7 } as const;

function attributeProto(name: string, a: Attr): Onnx.IAttributeProto {
  const type = ATTRIBUTE_TYPE[a.kind];
  switch (a.kind) {
    case 'int': return { name, type, i: a.value };
    case 'ints': return { name, type, ints: a.value };
    case 'float': return { name, type, f: a.value };
    case 'floats': return { name, type, floats: a.value };
    case 'string': return { name, type, s: new TextEncoder().encode(a.value) };
  }
}

function valueInfo(t: Tensor): Onnx.IValueInfoProto {
  return {
    name: t.name,
    type: { tensorType: { elemType: ONNX_DTYPE[t.dtype], shape: { dim: t.shape.map((d) => ({ dimValue: d })) } } },
  };
}

/** Nodes that contribute to the outputs, in their original (topological) order. */
function liveNodes(graph: Graph): Node[] {
  const needed = new Set<Tensor>(graph.outputs);
  const live: Node[] = [];
  for (let i = graph.nodes.length - 1; i >= 0; i--) {
    const node = graph.nodes[i];
    if (!node.outputs.some((o) => needed.has(o))) continue;
    live.push(node);
    for (const input of node.inputs) if (input) needed.add(input);
  }
  return live.reverse();
}

interface Initializer {
  name: string;
  dtype: DType;
  shape: readonly number[];
  data: TensorArray;
}

/** Splits the graph into its ONNX parts: nodes, inputs and initializers that the outputs need. */
function collect(graph: Graph, options: SerializeOptions) {
  const nodes = liveNodes(graph);
  const used = new Set<Tensor>(graph.outputs);
  for (const node of nodes) for (const input of node.inputs) if (input) used.add(input);
  const asInputs = options.weightsAsInputs ?? new Set<string>();
  for (const name of asInputs) {
    if (!graph.weights.has(name)) throw new GraphError(`weightsAsInputs names ${name}, which is not a weight of ${graph.name}`);
  }
  const inputs = [...graph.inputs];
  const initializers: Initializer[] = [];
  for (const [name, { tensor, data }] of graph.weights) {
    if (!used.has(tensor)) continue;
    if (asInputs.has(name)) inputs.push(tensor);
    else if (!data) throw new GraphError(`weight ${name} ${tensor.dtype}[${tensor.shape}] has no data`);
    else initializers.push({ name, dtype: tensor.dtype, shape: tensor.shape, data });
  }
  for (const [tensor, { dtype, shape, data }] of graph.constants) {
    if (used.has(tensor)) initializers.push({ name: tensor.name, dtype, shape, data });
  }
  return { nodes, inputs, initializers };
}

function modelProto(graph: Graph, nodes: Node[], inputs: Tensor[], initializers: Onnx.ITensorProto[]): Onnx.ModelProto {
  return onnx.ModelProto.create({
    irVersion: IR_VERSION,
    producerName: 'bigdiffusion-engine',
    opsetImport: [{ domain: '', version: OPSET }, ...(nodes.some((n) => n.domain === CONTRIB_DOMAIN) ? [{ domain: CONTRIB_DOMAIN, version: 1 }] : [])],
    graph: {
      name: graph.name,
      node: nodes.map((node) => ({
        opType: node.op,
        domain: node.domain,
        name: node.outputs[0].name,
        input: trimTrailingEmpty(node.inputs.map((i) => i?.name ?? '')),
        output: node.outputs.map((o) => o.name),
        attribute: Object.entries(node.attrs).map(([name, a]) => attributeProto(name, a)),
      })),
      input: inputs.map(valueInfo),
      output: graph.outputs.map(valueInfo),
      initializer: initializers,
    },
  });
}

function trimTrailingEmpty(names: string[]): string[] {
  let end = names.length;
  while (end > 0 && names[end - 1] === '') end--;
  return names.slice(0, end);
}

/** ONNX ModelProto bytes with every initializer inline. Deterministic: same graph, same bytes. */
export function serialize(graph: Graph, options: SerializeOptions = {}): Uint8Array {
  const { nodes, inputs, initializers } = collect(graph, options);
  const tensors = initializers.map(({ name, dtype, shape, data }) => ({
    name, dataType: ONNX_DTYPE[dtype], dims: [...shape], rawData: toBytes(dtype, data),
  }));
  return onnx.ModelProto.encode(modelProto(graph, nodes, inputs, tensors)).finish();
}

/** Alignment of tensors in external data files, so onnxruntime can map them from disk. */
const EXTERNAL_ALIGNMENT = 4096;

/**
 * Writes `path` (the graph and its constants) and `path.data` (every weight's bytes), the ONNX external-data layout
 * that models over the 2 GB protobuf limit need. Returns the sha256 of both, the model's content hash.
 */
export function saveWithExternalData(graph: Graph, path: string, options: SerializeOptions = {}): string {
  const { nodes, inputs, initializers } = collect(graph, options);
  const dataPath = `${path}.data`;
  const hash = createHash('sha256');
  const fd = openSync(dataPath, 'w');
  const tensors: Onnx.ITensorProto[] = [];
  let offset = 0;
  try {
    for (const { name, dtype, shape, data } of initializers) {
      const bytes = toBytes(dtype, data);
      // Constants (shapes, axes, masks) stay inline: onnxruntime's shape inference reads them from the model itself.
      if (!graph.weights.has(name)) {
        tensors.push({ name, dataType: ONNX_DTYPE[dtype], dims: [...shape], rawData: bytes });
        continue;
      }
      const padding = (EXTERNAL_ALIGNMENT - (offset % EXTERNAL_ALIGNMENT)) % EXTERNAL_ALIGNMENT;
      if (padding) writeSync(fd, new Uint8Array(padding));
      offset += padding;
      for (let written = 0; written < bytes.byteLength; ) written += writeSync(fd, bytes, written);
      hash.update(bytes);
      tensors.push({
        name, dataType: ONNX_DTYPE[dtype], dims: [...shape], dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
        externalData: [
          { key: 'location', value: basename(dataPath) },
          { key: 'offset', value: String(offset) },
          { key: 'length', value: String(bytes.byteLength) },
        ],
      });
      offset += bytes.byteLength;
    }
  } finally {
    closeSync(fd);
  }
  const model = onnx.ModelProto.encode(modelProto(graph, nodes, inputs, tensors)).finish();
  const modelFd = openSync(path, 'w');
  try {
    writeSync(modelFd, model);
  } finally {
    closeSync(modelFd);
  }
  return hash.update(model).digest('hex');
}

export function contentHash(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}
