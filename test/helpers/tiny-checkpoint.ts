/**
 * Writers of tiny random checkpoints (GPT-2 and Llama families, Hugging Face layout) and random
 * inducer modules for tests. A local seeded generator makes every output reproducible without
 * depending on production code; only the safetensors writer and the config parser are shared.
 * @module
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseModelConfig, type ModelConfig } from '../../src/model/config.js';
import { serializeSafetensors, type SafetensorsDType } from '../../src/model/safetensors.js';
import { floatTensor, sizeOf, type HostTensor } from '../../src/model/tensor.js';
import type { NaiveModule } from '../reference/naive-decoder.js';

/** Options of {@link writeTinyCheckpoint}. Every size has a small default. */
export interface TinyCheckpointOptions {
  readonly family: 'gpt2' | 'llama';
  /** Seed of the weight generator (default 1). */
  readonly seed?: number;
  /** Default 64. */
  readonly vocabSize?: number;
  /** Model width D (default 32). */
  readonly hiddenSize?: number;
  /** Default 2. */
  readonly numLayers?: number;
  /** Query heads H (default 4). */
  readonly numHeads?: number;
  /** Llama only: key/value heads (default half of `numHeads` when that divides, else `numHeads`). */
  readonly numKeyValueHeads?: number;
  /** MLP hidden width (default 4·D for GPT-2, 2·D for Llama). */
  readonly intermediateSize?: number;
  /** Context length (default 64). */
  readonly maxPositions?: number;
  /** Llama only: q/k/v and o_proj biases, as `attention_bias: true` gives in Hugging Face Llama (default false). */
  readonly attentionBias?: boolean;
  /** Default true for GPT-2, false for Llama. */
  readonly tieWordEmbeddings?: boolean;
  /** GPT-2 only: store names with the `transformer.` prefix, as `GPT2LMHeadModel.save_pretrained` does (default false). */
  readonly transformerPrefix?: boolean;
  /** Storage type of the weights (default F32). */
  readonly dtype?: SafetensorsDType;
  /** Number of weight files. Above 1 it writes `model-0000k-of-0000n.safetensors` plus `model.safetensors.index.json` (default 1). */
  readonly shards?: number;
  /** Standard deviation of the random matrices, biases and embeddings (default 0.08). */
  readonly weightScale?: number;
}

/** Error for tiny-checkpoint options that cannot describe a model. */
export class TinyCheckpointError extends Error {
  override readonly name = 'TinyCheckpointError';
}

// ---------------------------------------------------------------------------------------------
// Seeded random numbers.

/** mulberry32: a small 32-bit generator returning uniform numbers in [0, 1). */
function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Returns a generator of standard normal numbers (Box–Muller) driven by mulberry32. */
function normalGenerator(seed: number): () => number {
  const uniform = mulberry32(seed);
  return () => {
    const u1 = 1 - uniform(); // in (0, 1], so the logarithm is finite
    const u2 = uniform();
    return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
  };
}

function randomTensor(normal: () => number, shape: readonly number[], std: number, mean = 0): HostTensor {
  const data = new Float32Array(sizeOf(shape));
  for (let i = 0; i < data.length; i++) data[i] = mean + std * normal();
  return floatTensor(shape, data);
}

// ---------------------------------------------------------------------------------------------
// Rounding to the storage type, so that the returned weights equal what a reader gets back.

/** Rounds to the nearest integer, ties to even. */
function roundHalfToEven(value: number): number {
  const floor = Math.floor(value);
  const fraction = value - floor;
  if (fraction > 0.5) return floor + 1;
  if (fraction < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

/** Rounds a finite number to the nearest IEEE half-precision value (ties to even), overflowing to ±Infinity. */
function roundToFloat16(value: number): number {
  if (value === 0 || !Number.isFinite(value)) return value;
  const magnitude = Math.abs(value);
  let exponent = Math.floor(Math.log2(magnitude));
  if (2 ** exponent > magnitude) exponent--;
  if (2 ** (exponent + 1) <= magnitude) exponent++;
  // Half precision has 10 fraction bits; below 2^-14 the spacing stays at the subnormal 2^-24.
  const spacing = 2 ** (Math.max(exponent, -14) - 10);
  const rounded = roundHalfToEven(magnitude / spacing) * spacing;
  return Math.sign(value) * (rounded > 65504 ? Infinity : rounded);
}

/** Rounds a float32 value to bfloat16 (the upper 16 bits, ties to even). */
function roundToBfloat16(value: number): number {
  const bits = new Uint32Array(new Float32Array([value]).buffer)[0];
  const lower = bits & 0xffff;
  let upper = bits >>> 16;
  if (lower > 0x8000 || (lower === 0x8000 && (upper & 1) === 1)) upper++;
  return new Float32Array(new Uint32Array([(upper << 16) >>> 0]).buffer)[0];
}

function roundToStorage(tensor: HostTensor, dtype: SafetensorsDType): HostTensor {
  if (dtype === 'F32') return tensor;
  const round = dtype === 'F16' ? roundToFloat16 : roundToBfloat16;
  return floatTensor(tensor.shape, Float32Array.from(tensor.data, round));
}

// ---------------------------------------------------------------------------------------------
// Model weights.

interface ResolvedSizes {
  readonly vocabSize: number;
  readonly hiddenSize: number;
  readonly numLayers: number;
  readonly numHeads: number;
  readonly numKeyValueHeads: number;
  readonly intermediateSize: number;
  readonly maxPositions: number;
  readonly attentionBias: boolean;
  readonly tieWordEmbeddings: boolean;
}

function resolveSizes(options: TinyCheckpointOptions): ResolvedSizes {
  const hiddenSize = options.hiddenSize ?? 32;
  const numHeads = options.numHeads ?? 4;
  const isGpt2 = options.family === 'gpt2';
  const defaultKeyValueHeads = numHeads % 2 === 0 ? numHeads / 2 : numHeads;
  return {
    vocabSize: options.vocabSize ?? 64,
    hiddenSize,
    numLayers: options.numLayers ?? 2,
    numHeads,
    numKeyValueHeads: isGpt2 ? numHeads : (options.numKeyValueHeads ?? defaultKeyValueHeads),
    intermediateSize: options.intermediateSize ?? (isGpt2 ? 4 * hiddenSize : 2 * hiddenSize),
    maxPositions: options.maxPositions ?? 64,
    attentionBias: isGpt2 ? true : (options.attentionBias ?? false),
    tieWordEmbeddings: options.tieWordEmbeddings ?? isGpt2,
  };
}

function gpt2ConfigJson(sizes: ResolvedSizes): Record<string, unknown> {
  return {
    architectures: ['GPT2LMHeadModel'],
    model_type: 'gpt2',
    vocab_size: sizes.vocabSize,
    n_embd: sizes.hiddenSize,
    n_layer: sizes.numLayers,
    n_head: sizes.numHeads,
    n_positions: sizes.maxPositions,
    n_ctx: sizes.maxPositions,
    n_inner: sizes.intermediateSize,
    layer_norm_epsilon: 1e-5,
    activation_function: 'gelu_new',
    tie_word_embeddings: sizes.tieWordEmbeddings,
    bos_token_id: sizes.vocabSize - 1,
    eos_token_id: sizes.vocabSize - 1,
  };
}

function llamaConfigJson(sizes: ResolvedSizes): Record<string, unknown> {
  return {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    vocab_size: sizes.vocabSize,
    hidden_size: sizes.hiddenSize,
    intermediate_size: sizes.intermediateSize,
    num_hidden_layers: sizes.numLayers,
    num_attention_heads: sizes.numHeads,
    num_key_value_heads: sizes.numKeyValueHeads,
    max_position_embeddings: sizes.maxPositions,
    rms_norm_eps: 1e-5,
    rope_theta: 10000.0,
    hidden_act: 'silu',
    tie_word_embeddings: sizes.tieWordEmbeddings,
    attention_bias: sizes.attentionBias,
    mlp_bias: false,
    bos_token_id: 1,
    eos_token_id: 2,
    torch_dtype: 'float32',
  };
}

/** Creates random canonical-named GPT-2 weights with norm weights near 1. */
function gpt2Weights(config: ModelConfig, normal: () => number, std: number): Map<string, HostTensor> {
  const D = config.hiddenSize;
  const I = config.intermediateSize;
  const weights = new Map<string, HostTensor>();
  weights.set('wte.weight', randomTensor(normal, [config.vocabSize, D], std));
  weights.set('wpe.weight', randomTensor(normal, [config.maxPositions, D], std));
  for (let layer = 0; layer < config.numLayers; layer++) {
    const p = `h.${layer}`;
    weights.set(`${p}.ln_1.weight`, randomTensor(normal, [D], 0.1, 1));
    weights.set(`${p}.ln_1.bias`, randomTensor(normal, [D], std));
    weights.set(`${p}.attn.c_attn.weight`, randomTensor(normal, [D, 3 * D], std));
    weights.set(`${p}.attn.c_attn.bias`, randomTensor(normal, [3 * D], std));
    weights.set(`${p}.attn.c_proj.weight`, randomTensor(normal, [D, D], std));
    weights.set(`${p}.attn.c_proj.bias`, randomTensor(normal, [D], std));
    weights.set(`${p}.ln_2.weight`, randomTensor(normal, [D], 0.1, 1));
    weights.set(`${p}.ln_2.bias`, randomTensor(normal, [D], std));
    weights.set(`${p}.mlp.c_fc.weight`, randomTensor(normal, [D, I], std));
    weights.set(`${p}.mlp.c_fc.bias`, randomTensor(normal, [I], std));
    weights.set(`${p}.mlp.c_proj.weight`, randomTensor(normal, [I, D], std));
    weights.set(`${p}.mlp.c_proj.bias`, randomTensor(normal, [D], std));
  }
  weights.set('ln_f.weight', randomTensor(normal, [D], 0.1, 1));
  weights.set('ln_f.bias', randomTensor(normal, [D], std));
  if (!config.tieWordEmbeddings) weights.set('lm_head.weight', randomTensor(normal, [config.vocabSize, D], std));
  return weights;
}

/** Creates random Llama weights (Hugging Face names, which are canonical) with norm weights near 1. */
function llamaWeights(config: ModelConfig, normal: () => number, std: number): Map<string, HostTensor> {
  const D = config.hiddenSize;
  const I = config.intermediateSize;
  const Dq = config.numHeads * config.headDim;
  const Dkv = config.numKeyValueHeads * config.headDim;
  const weights = new Map<string, HostTensor>();
  weights.set('model.embed_tokens.weight', randomTensor(normal, [config.vocabSize, D], std));
  for (let layer = 0; layer < config.numLayers; layer++) {
    const p = `model.layers.${layer}`;
    weights.set(`${p}.input_layernorm.weight`, randomTensor(normal, [D], 0.1, 1));
    weights.set(`${p}.self_attn.q_proj.weight`, randomTensor(normal, [Dq, D], std));
    weights.set(`${p}.self_attn.k_proj.weight`, randomTensor(normal, [Dkv, D], std));
    weights.set(`${p}.self_attn.v_proj.weight`, randomTensor(normal, [Dkv, D], std));
    weights.set(`${p}.self_attn.o_proj.weight`, randomTensor(normal, [D, Dq], std));
    if (config.attentionBias) {
      weights.set(`${p}.self_attn.q_proj.bias`, randomTensor(normal, [Dq], std));
      weights.set(`${p}.self_attn.k_proj.bias`, randomTensor(normal, [Dkv], std));
      weights.set(`${p}.self_attn.v_proj.bias`, randomTensor(normal, [Dkv], std));
      weights.set(`${p}.self_attn.o_proj.bias`, randomTensor(normal, [D], std));
    }
    weights.set(`${p}.post_attention_layernorm.weight`, randomTensor(normal, [D], 0.1, 1));
    weights.set(`${p}.mlp.gate_proj.weight`, randomTensor(normal, [I, D], std));
    weights.set(`${p}.mlp.up_proj.weight`, randomTensor(normal, [I, D], std));
    weights.set(`${p}.mlp.down_proj.weight`, randomTensor(normal, [D, I], std));
  }
  weights.set('model.norm.weight', randomTensor(normal, [D], 0.1, 1));
  if (!config.tieWordEmbeddings) weights.set('lm_head.weight', randomTensor(normal, [config.vocabSize, D], std));
  return weights;
}

/** Maps a canonical name to the name stored in the file. */
function storedName(name: string, options: TinyCheckpointOptions): string {
  if (options.family === 'gpt2' && options.transformerPrefix && name !== 'lm_head.weight') return `transformer.${name}`;
  return name;
}

function shardFileName(index: number, count: number): string {
  const pad = (n: number): string => String(n).padStart(5, '0');
  return `model-${pad(index + 1)}-of-${pad(count)}.safetensors`;
}

/**
 * Writes `config.json` (Hugging Face field names) and random weights in Hugging Face layout into
 * `dir`, creating it if needed. Returns the parsed config and the canonical-named float32
 * weights as stored, i.e. already rounded to `dtype`. Throws {@link TinyCheckpointError} when
 * the options cannot describe a model.
 */
export async function writeTinyCheckpoint(
  dir: string,
  options: TinyCheckpointOptions,
): Promise<{ config: ModelConfig; weights: Map<string, HostTensor> }> {
  const sizes = resolveSizes(options);
  if (sizes.hiddenSize % sizes.numHeads !== 0) {
    throw new TinyCheckpointError(`tiny checkpoint: hiddenSize ${sizes.hiddenSize} is not divisible by numHeads ${sizes.numHeads}`);
  }
  const configJson = options.family === 'gpt2' ? gpt2ConfigJson(sizes) : llamaConfigJson(sizes);
  const config = parseModelConfig(configJson, 'tiny checkpoint config.json');

  const normal = normalGenerator(options.seed ?? 1);
  const std = options.weightScale ?? 0.08;
  const generated = options.family === 'gpt2' ? gpt2Weights(config, normal, std) : llamaWeights(config, normal, std);
  const dtype = options.dtype ?? 'F32';
  const weights = new Map<string, HostTensor>();
  for (const [name, tensor] of generated) weights.set(name, roundToStorage(tensor, dtype));

  const stored = [...weights].map(([name, tensor]) => [storedName(name, options), tensor] as const);
  const numShards = options.shards ?? 1;
  if (!Number.isInteger(numShards) || numShards < 1 || numShards > stored.length) {
    throw new TinyCheckpointError(
      `tiny checkpoint: shards ${numShards} must be an integer between 1 and the number of tensors (${stored.length})`,
    );
  }

  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, 'config.json'), JSON.stringify(configJson, null, 2) + '\n');
  const metadata = { format: 'pt' };
  if (numShards === 1) {
    await writeFile(path.join(dir, 'model.safetensors'), serializeSafetensors(new Map(stored), metadata, dtype));
    return { config, weights };
  }

  // Tensor k goes to shard floor(k·n / count), so every shard gets at least one tensor.
  const bytesPerElement = dtype === 'F32' ? 4 : 2;
  const weightMap: Record<string, string> = {};
  let totalSize = 0;
  for (let shard = 0; shard < numShards; shard++) {
    const fileName = shardFileName(shard, numShards);
    const members = stored.filter((_, k) => Math.floor((k * numShards) / stored.length) === shard);
    for (const [name, tensor] of members) {
      weightMap[name] = fileName;
      totalSize += tensor.data.length * bytesPerElement;
    }
    await writeFile(path.join(dir, fileName), serializeSafetensors(new Map(members), metadata, dtype));
  }
  const index = { metadata: { total_size: totalSize }, weight_map: weightMap };
  await writeFile(path.join(dir, 'model.safetensors.index.json'), JSON.stringify(index, null, 2) + '\n');
  return { config, weights };
}

/**
 * Creates a random inducer module for `config` with tensors named and shaped as in the module
 * file format. Values are N(0, scale²) with scale 0.3 by default, large enough that the module
 * visibly changes the logits.
 */
export function randomModule(
  config: ModelConfig,
  options: {
    keyRank: number;
    valueRank: number;
    loraQ?: { rank: number; alpha: number; bias: boolean } | null;
    seed: number;
    scale?: number;
  },
): NaiveModule {
  const { keyRank, valueRank, seed } = options;
  const loraQ = options.loraQ ?? null;
  const scale = options.scale ?? 0.3;
  const H = config.numHeads;
  const d = config.headDim;
  const D = config.hiddenSize;
  const Dq = H * d;
  const normal = normalGenerator(seed);
  const tensors = new Map<string, HostTensor>();
  for (let layer = 0; layer < config.numLayers; layer++) {
    const p = `layers.${layer}`;
    if (keyRank >= 2) {
      tensors.set(`${p}.inducer.key.down.weight`, randomTensor(normal, [H, d, keyRank], scale));
      tensors.set(`${p}.inducer.key.down.bias`, randomTensor(normal, [H, keyRank], scale));
      tensors.set(`${p}.inducer.key.up.weight`, randomTensor(normal, [H, keyRank, d], scale));
      tensors.set(`${p}.inducer.key.up.bias`, randomTensor(normal, [H, d], scale));
    }
    tensors.set(`${p}.inducer.value.down.weight`, randomTensor(normal, [H, d, valueRank], scale));
    tensors.set(`${p}.inducer.value.down.bias`, randomTensor(normal, [H, valueRank], scale));
    tensors.set(`${p}.inducer.value.up.weight`, randomTensor(normal, [H, valueRank, D], scale));
    tensors.set(`${p}.inducer.value.up.bias`, randomTensor(normal, [D], scale));
    if (loraQ !== null) {
      tensors.set(`${p}.lora_q.A`, randomTensor(normal, [loraQ.rank, D], scale));
      tensors.set(`${p}.lora_q.B`, randomTensor(normal, [Dq, loraQ.rank], scale));
      if (loraQ.bias) tensors.set(`${p}.lora_q.bias`, randomTensor(normal, [Dq], scale));
    }
  }
  return { keyRank, valueRank, loraQ, tensors };
}
