/**
 * Model configuration: the Hugging Face `config.json` validated with zod and normalised into one
 * shape that both model families (GPT-2, Llama) use.
 * @module
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';

/** Decoder families that share the decoder skeleton in `src/model/`. */
export type ModelFamily = 'gpt2' | 'llama';

/** `model_type` values accepted in `config.json`, with the family that runs them. */
export const SUPPORTED_MODEL_TYPES: Readonly<Record<string, ModelFamily>> = {
  gpt2: 'gpt2',
  llama: 'llama',
  mistral: 'llama',
  qwen2: 'llama',
};

/** Rotary scaling as Hugging Face configs spell it (`rope_scaling`). */
export type RopeScaling =
  | { readonly type: 'linear'; readonly factor: number }
  | {
      readonly type: 'llama3';
      readonly factor: number;
      readonly lowFreqFactor: number;
      readonly highFreqFactor: number;
      readonly originalMaxPositions: number;
    };

/** Normalised model configuration. Dimensions use the names of the method's notation in comments. */
export interface ModelConfig {
  readonly family: ModelFamily;
  /** `model_type` exactly as `config.json` gives it. */
  readonly modelType: string;
  readonly vocabSize: number;
  /** Model width D. */
  readonly hiddenSize: number;
  /** Number of decoder blocks L. */
  readonly numLayers: number;
  /** Query heads H. */
  readonly numHeads: number;
  /** Key/value heads (H for GPT-2; fewer under grouped-query attention). */
  readonly numKeyValueHeads: number;
  /** Head size d. */
  readonly headDim: number;
  /** Width of the MLP's hidden layer. */
  readonly intermediateSize: number;
  /** Maximum sequence length (prompt plus generated tokens) the model supports. */
  readonly maxPositions: number;
  /** Epsilon of LayerNorm (GPT-2) or RMSNorm (Llama). */
  readonly normEps: number;
  /** Llama only: RoPE base frequency. */
  readonly ropeTheta: number;
  readonly ropeScaling: RopeScaling | null;
  /** Whether the LM head reuses the token embedding matrix. */
  readonly tieWordEmbeddings: boolean;
  /** q/k/v projections carry biases (GPT-2 always; Llama with `attention_bias`; Qwen2 always). */
  readonly attentionBias: boolean;
  /** The attention output projection carries a bias (GPT-2 always; Llama with `attention_bias`; never Qwen2). */
  readonly outputProjectionBias: boolean;
  /** Llama family: MLP projections carry biases. */
  readonly mlpBias: boolean;
  readonly bosTokenId: number | null;
  /** Token ids that end generation. */
  readonly eosTokenIds: readonly number[];
}

const tokenIds = z.union([z.number().int().nonnegative(), z.array(z.number().int().nonnegative())]).nullish();

const gpt2Schema = z.looseObject({
  model_type: z.literal('gpt2'),
  vocab_size: z.number().int().positive(),
  n_embd: z.number().int().positive(),
  n_layer: z.number().int().positive(),
  n_head: z.number().int().positive(),
  n_positions: z.number().int().positive(),
  n_inner: z.number().int().positive().nullish(),
  layer_norm_epsilon: z.number().positive().default(1e-5),
  activation_function: z.enum(['gelu_new', 'gelu_pytorch_tanh']).default('gelu_new'),
  scale_attn_weights: z.literal(true).default(true),
  scale_attn_by_inverse_layer_idx: z.literal(false).default(false),
  reorder_and_upcast_attn: z.boolean().default(false),
  tie_word_embeddings: z.boolean().default(true),
  bos_token_id: z.number().int().nonnegative().nullish(),
  eos_token_id: tokenIds,
});

const ropeScalingSchema = z
  .looseObject({
    rope_type: z.string().optional(),
    type: z.string().optional(),
    factor: z.number().positive().optional(),
    low_freq_factor: z.number().positive().optional(),
    high_freq_factor: z.number().positive().optional(),
    original_max_position_embeddings: z.number().int().positive().optional(),
  })
  .nullish();

const llamaSchema = z.looseObject({
  model_type: z.enum(['llama', 'mistral', 'qwen2']),
  vocab_size: z.number().int().positive(),
  hidden_size: z.number().int().positive(),
  intermediate_size: z.number().int().positive(),
  num_hidden_layers: z.number().int().positive(),
  num_attention_heads: z.number().int().positive(),
  num_key_value_heads: z.number().int().positive().nullish(),
  head_dim: z.number().int().positive().nullish(),
  max_position_embeddings: z.number().int().positive(),
  rms_norm_eps: z.number().positive().default(1e-6),
  rope_theta: z.number().positive().default(10000),
  rope_scaling: ropeScalingSchema,
  hidden_act: z.literal('silu').default('silu'),
  tie_word_embeddings: z.boolean().default(false),
  attention_bias: z.boolean().optional(),
  mlp_bias: z.boolean().default(false),
  bos_token_id: z.number().int().nonnegative().nullish(),
  eos_token_id: tokenIds,
});

/** Error for a config.json that cannot be used; the message names the field and the fix. */
export class ModelConfigError extends Error {
  override readonly name = 'ModelConfigError';
}

function idList(value: number | number[] | null | undefined): number[] {
  if (value === null || value === undefined) return [];
  return Array.isArray(value) ? value : [value];
}

function formatIssues(error: z.ZodError): string {
  return error.issues.map((issue) => `${issue.path.join('.') || '(root)'}: ${issue.message}`).join('; ');
}

function parseRopeScaling(raw: z.infer<typeof ropeScalingSchema>): RopeScaling | null {
  if (!raw) return null;
  const kind = raw.rope_type ?? raw.type;
  if (kind === undefined || kind === 'default') return null;
  if (kind === 'linear' && raw.factor !== undefined) return { type: 'linear', factor: raw.factor };
  if (kind === 'llama3' && raw.factor !== undefined) {
    return {
      type: 'llama3',
      factor: raw.factor,
      lowFreqFactor: raw.low_freq_factor ?? 1,
      highFreqFactor: raw.high_freq_factor ?? 4,
      originalMaxPositions: raw.original_max_position_embeddings ?? 8192,
    };
  }
  throw new ModelConfigError(
    `config.json: rope_scaling type "${kind}" is not supported; supported types are "linear" and "llama3"`,
  );
}

/** Validates a parsed `config.json` object and normalises it. Throws {@link ModelConfigError}. */
export function parseModelConfig(raw: unknown, source = 'config.json'): ModelConfig {
  const modelType = (raw as { model_type?: unknown } | null)?.model_type;
  if (typeof modelType !== 'string') {
    throw new ModelConfigError(`${source}: missing string field "model_type"`);
  }
  const family = SUPPORTED_MODEL_TYPES[modelType];
  if (family === undefined) {
    throw new ModelConfigError(
      `${source}: unknown model_type "${modelType}"; supported types are ${Object.keys(SUPPORTED_MODEL_TYPES).join(', ')}`,
    );
  }
  if (family === 'gpt2') {
    const parsed = gpt2Schema.safeParse(raw);
    if (!parsed.success) throw new ModelConfigError(`${source}: invalid GPT-2 config: ${formatIssues(parsed.error)}`);
    const c = parsed.data;
    if (c.n_embd % c.n_head !== 0) {
      throw new ModelConfigError(`${source}: n_embd ${c.n_embd} is not divisible by n_head ${c.n_head}`);
    }
    return {
      family,
      modelType,
      vocabSize: c.vocab_size,
      hiddenSize: c.n_embd,
      numLayers: c.n_layer,
      numHeads: c.n_head,
      numKeyValueHeads: c.n_head,
      headDim: c.n_embd / c.n_head,
      intermediateSize: c.n_inner ?? 4 * c.n_embd,
      maxPositions: c.n_positions,
      normEps: c.layer_norm_epsilon,
      ropeTheta: 0,
      ropeScaling: null,
      tieWordEmbeddings: c.tie_word_embeddings,
      attentionBias: true,
      outputProjectionBias: true,
      mlpBias: true,
      bosTokenId: c.bos_token_id ?? null,
      eosTokenIds: idList(c.eos_token_id),
    };
  }
  const parsed = llamaSchema.safeParse(raw);
  if (!parsed.success) throw new ModelConfigError(`${source}: invalid ${modelType} config: ${formatIssues(parsed.error)}`);
  const c = parsed.data;
  const numKeyValueHeads = c.num_key_value_heads ?? c.num_attention_heads;
  if (c.num_attention_heads % numKeyValueHeads !== 0) {
    throw new ModelConfigError(
      `${source}: num_attention_heads ${c.num_attention_heads} is not a multiple of num_key_value_heads ${numKeyValueHeads}`,
    );
  }
  const headDim = c.head_dim ?? c.hidden_size / c.num_attention_heads;
  if (!Number.isInteger(headDim) || headDim % 2 !== 0) {
    throw new ModelConfigError(`${source}: head size ${headDim} must be an even integer for rotary embeddings`);
  }
  return {
    family,
    modelType,
    vocabSize: c.vocab_size,
    hiddenSize: c.hidden_size,
    numLayers: c.num_hidden_layers,
    numHeads: c.num_attention_heads,
    numKeyValueHeads,
    headDim,
    intermediateSize: c.intermediate_size,
    maxPositions: c.max_position_embeddings,
    normEps: c.rms_norm_eps,
    ropeTheta: c.rope_theta,
    ropeScaling: parseRopeScaling(c.rope_scaling),
    tieWordEmbeddings: c.tie_word_embeddings,
    attentionBias: modelType === 'qwen2' ? true : (c.attention_bias ?? false),
    outputProjectionBias: modelType === 'qwen2' ? false : (c.attention_bias ?? false),
    mlpBias: c.mlp_bias,
    bosTokenId: c.bos_token_id ?? null,
    eosTokenIds: idList(c.eos_token_id),
  };
}

/** Reads and validates `<dir>/config.json`. */
export async function loadModelConfig(dir: string): Promise<ModelConfig> {
  const file = path.join(dir, 'config.json');
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (cause) {
    throw new ModelConfigError(`missing model file ${file}: a model folder needs config.json`, { cause });
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (cause) {
    throw new ModelConfigError(`${file} is not valid JSON`, { cause });
  }
  return parseModelConfig(raw, file);
}
