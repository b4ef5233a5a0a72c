import { z } from 'zod';
import {
  add, cast, equal, gather, gelu, type Graph, matmul, mul, quickGelu, reduceMax, reshape, slice, sub, type Tensor, unsqueeze,
} from '../graph';
import { parseModelConfig } from './config';
import { layerNormLayer, linearLayer, scaledDotProductAttention } from './layers';
import { Params } from './params';
import { FLOAT32, type Precision } from './precision';

/** The fields of transformers' CLIPTextConfig (`text_encoder/config.json`) that shape the graph. */
const CLIP_TEXT_CONFIG = z.object({
  vocab_size: z.number().int().positive(),
  hidden_size: z.number().int().positive(),
  intermediate_size: z.number().int().positive(),
  num_hidden_layers: z.number().int().positive(),
  num_attention_heads: z.number().int().positive(),
  max_position_embeddings: z.number().int().positive(),
  layer_norm_eps: z.number().positive().default(1e-5),
  hidden_act: z.enum(['quick_gelu', 'gelu']).default('quick_gelu'),
  eos_token_id: z.number().int().nonnegative().default(2),
}).refine((c) => c.hidden_size % c.num_attention_heads === 0, {
  message: 'hidden_size must be a multiple of num_attention_heads',
});

export type ClipTextConfig = z.output<typeof CLIP_TEXT_CONFIG>;

export function parseClipTextConfig(json: unknown): ClipTextConfig {
  return parseModelConfig(CLIP_TEXT_CONFIG, json, 'text_encoder/config.json');
}

/**
 * CLIPTextModel keeps its layers under `text_model`; checkpoints saved by transformers 4 name keys
 * `text_model.embeddings...`, transformers 5 drops the prefix. The graph names weights as the file does.
 */
export function clipTextKeyPrefix(checkpointKeys: Iterable<string>): string {
  for (const key of checkpointKeys) if (key.startsWith('text_model.')) return 'text_model';
  return '';
}

/** transformers before 4.31 also saved the `embeddings.position_ids` buffer, which is not a parameter. */
export function dropClipTextBuffers<T>(stored: ReadonlyMap<string, T>): Map<string, T> {
  return new Map([...stored].filter(([key]) => !key.endsWith('embeddings.position_ids')));
}

export interface ClipTextOutputs {
  /** [batch, sequence, hidden]: the final layer norm's output, what Stable Diffusion conditions on. */
  lastHiddenState: Tensor;
  /** [batch, hidden]: the hidden state at each row's end-of-text token. */
  pooledOutput: Tensor;
}

/** The most negative float32, transformers' additive mask value: softmax gives it zero weight. */
const MASKED = -3.4028234663852886e38;

/** [sequence, sequence] additive mask letting position i attend to positions j <= i only. */
function causalMask(g: Graph, sequence: number): Tensor {
  const mask = new Float32Array(sequence * sequence);
  for (let i = 0; i < sequence; i++) mask.fill(MASKED, i * sequence + i + 1, (i + 1) * sequence);
  return g.constant('float32', [sequence, sequence], mask);
}

/**
 * CLIPAttention: multi-head causal self-attention, queries scaled by 1/sqrt(head_dim) before the product. Always
 * decomposed: 77 tokens cost little, and the float32 mask needs the float32 softmax.
 */
function selfAttention(p: Params, x: Tensor, config: ClipTextConfig, mask: Tensor): Tensor {
  const hidden = x.shape[2];
  const q = linearLayer(p.child('q_proj'), x, hidden, hidden);
  const k = linearLayer(p.child('k_proj'), x, hidden, hidden);
  const v = linearLayer(p.child('v_proj'), x, hidden, hidden);
  return linearLayer(p.child('out_proj'), scaledDotProductAttention(q, k, v, config.num_attention_heads, { mask }), hidden, hidden);
}

function mlp(p: Params, x: Tensor, config: ClipTextConfig): Tensor {
  const act = config.hidden_act === 'gelu' ? gelu : quickGelu;
  const h = act(linearLayer(p.child('fc1'), x, config.hidden_size, config.intermediate_size));
  return linearLayer(p.child('fc2'), h, config.intermediate_size, config.hidden_size);
}

/** CLIPEncoderLayer: pre-LayerNorm attention and MLP, each added back to the residual stream. */
function encoderLayer(p: Params, x: Tensor, config: ClipTextConfig, mask: Tensor): Tensor {
  const eps = config.layer_norm_eps;
  const attended = add(x, selfAttention(p.child('self_attn'), layerNormLayer(p.child('layer_norm1'), x, config.hidden_size, eps), config, mask));
  return add(attended, mlp(p.child('mlp'), layerNormLayer(p.child('layer_norm2'), attended, config.hidden_size, eps), config));
}

/**
 * One-hot [batch, 1, sequence] rows marking each row's first end-of-text token, as transformers picks it:
 * the first `eos_token_id`, or, for configs from before that id was set (eos_token_id 2), the first
 * occurrence of the row's largest id. A product with this row selects the pooled state exactly.
 */
function firstEosSelector(g: Graph, inputIds: Tensor, config: ClipTextConfig): Tensor {
  const sequence = inputIds.shape[1];
  const target = config.eos_token_id === 2 ? reduceMax(inputIds, [1]) : config.eos_token_id;
  const isEos = cast(equal(inputIds, target), 'float32');
  // later[j, i] = 1 for j < i: isEos @ later counts the end-of-text tokens before each position.
  const later = new Float32Array(sequence * sequence);
  for (let j = 0; j < sequence; j++) later.fill(1, j * sequence + j + 1, (j + 1) * sequence);
  const before = matmul(isEos, g.constant('float32', [sequence, sequence], later));
  const first = mul(isEos, cast(equal(before, 0), 'float32'));
  // argmax of an all-zero row is 0: a row without the token pools position 0.
  const startOnly = new Float32Array(sequence);
  startOnly[0] = 1;
  const none = sub(1, reduceMax(isEos, [1]));
  return unsqueeze(add(first, mul(none, g.constant('float32', [sequence], startOnly))), [1]);
}

/**
 * transformers' CLIPTextModel on int64 token ids [batch, sequence] (sequence <= max_position_embeddings).
 * Weights are named by checkpoint key under `prefix` (see `clipTextKeyPrefix`); outputs are float32 whatever
 * `precision` computes in (the text encoder has no attention worth fusing).
 */
export function buildClipTextEncoder(
  g: Graph, config: ClipTextConfig, inputIds: Tensor, { prefix = 'text_model', precision = FLOAT32 }: { prefix?: string; precision?: Precision } = {},
): ClipTextOutputs {
  const [batch, sequence] = inputIds.shape;
  if (inputIds.rank !== 2 || sequence > config.max_position_embeddings) {
    throw new RangeError(`input ids ${inputIds.toString()} must be [batch, <= ${config.max_position_embeddings}]`);
  }
  const p = new Params(g, prefix, precision.dtype);
  const hidden = config.hidden_size;
  const embeddings = p.child('embeddings');
  const tokens = gather(embeddings.weight('token_embedding.weight', [config.vocab_size, hidden]), inputIds);
  const positions = slice(embeddings.weight('position_embedding.weight', [config.max_position_embeddings, hidden]), [0], [sequence], [0]);
  let h = add(tokens, positions);
  const mask = causalMask(g, sequence);
  for (let i = 0; i < config.num_hidden_layers; i++) h = encoderLayer(p.child('encoder.layers').child(i), h, config, mask);
  const lastHiddenState = cast(layerNormLayer(p.child('final_layer_norm'), h, hidden, config.layer_norm_eps), 'float32');
  const pooledOutput = reshape(matmul(firstEosSelector(g, inputIds, config), lastHiddenState), [batch, hidden]);
  return { lastHiddenState, pooledOutput };
}
