/**
 * Deliberately naive float64 reference decoder (GPT-2 and Llama families) with the hooks of the
 * three tuning methods (inducer-tuning, prefix-tuning, LoRA on query and value), for checking the
 * production ONNX graphs. One token sequence, positions 0..N-1, causal
 * attention, no padding, no KV cache: every call recomputes the whole sequence with plain loops.
 *
 * Weights use the canonical names of the checkpoint loader: GPT-2 names without the
 * `transformer.` prefix (`wte.weight`, `h.0.attn.c_attn.weight`, ...), Llama names as in
 * Hugging Face `LlamaForCausalLM` (`model.layers.0.self_attn.q_proj.weight`, ...).
 * @module
 */
import type { ModelConfig } from '../../src/model/config.js';
import type { HostTensor } from '../../src/model/tensor.js';
import { NaiveReferenceError, naiveInducer, naiveLoraQ, type NaiveInducerParams } from './naive-inducer.js';

/** An inducer module as the reference reads it; tensor names and shapes follow the module file format. */
export interface NaiveInducerModule {
  /** Absent or 'inducer'. */
  readonly method?: 'inducer';
  /** Width r_k of the key MLP. Below 2 there is no key MLP and the inducer key is the query. */
  readonly keyRank: number;
  /** Width r_v of the value MLP. */
  readonly valueRank: number;
  /** LoRA on the query projection, or null when the module has none. */
  readonly loraQ: null | { readonly rank: number; readonly alpha: number; readonly bias: boolean };
  /** Tensors such as `layers.0.inducer.value.up.weight` `[H, rv, D]` and `layers.0.lora_q.A` `[r, D]`. */
  readonly tensors: ReadonlyMap<string, HostTensor>;
}

/** A prefix-tuning module: `layers.{i}.prefix.key` and `layers.{i}.prefix.value`, each `[KVH, P, d]`. */
export interface NaivePrefixModule {
  readonly method: 'prefix';
  readonly prefixLength: number;
  readonly tensors: ReadonlyMap<string, HostTensor>;
}

/** A LoRA module: `layers.{i}.lora.q.A` `[r, D]`, `.q.B` `[H*d, r]`, `.v.A` `[r, D]`, `.v.B` `[KVH*d, r]`. */
export interface NaiveLoraModule {
  readonly method: 'lora';
  readonly rank: number;
  readonly alpha: number;
  readonly tensors: ReadonlyMap<string, HostTensor>;
}

/** A module of any method. */
export type NaiveModule = NaiveInducerModule | NaivePrefixModule | NaiveLoraModule;

type Matrix = number[][];

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((value, index) => value === b[index]);
}

/** Looks up a named tensor, checks its shape and returns its data. */
function tensorData(
  tensors: ReadonlyMap<string, HostTensor>,
  name: string,
  shape: readonly number[],
  owner: string,
): Float32Array {
  const tensor = tensors.get(name);
  if (tensor === undefined) {
    throw new NaiveReferenceError(`naive decoder: ${owner} tensor "${name}" is missing (expected shape [${shape.join(', ')}]); check the name against the canonical names`);
  }
  if (!sameShape(tensor.shape, shape)) {
    throw new NaiveReferenceError(
      `naive decoder: ${owner} tensor "${name}" has shape [${tensor.shape.join(', ')}]; expected [${shape.join(', ')}]`,
    );
  }
  return tensor.data;
}

// ---------------------------------------------------------------------------------------------
// Building blocks, each on [N][width] matrices of numbers.

/** y = x W + b with W stored `[in, out]` (GPT-2 Conv1D layout). */
function matmulInOut(x: Matrix, weight: Float32Array, bias: Float32Array | null, inWidth: number, outWidth: number): Matrix {
  return x.map((row) => {
    const out = new Array<number>(outWidth).fill(0);
    for (let o = 0; o < outWidth; o++) {
      let sum = bias === null ? 0 : bias[o];
      for (let c = 0; c < inWidth; c++) sum += row[c] * weight[c * outWidth + o];
      out[o] = sum;
    }
    return out;
  });
}

/** y = x Wᵀ + b with W stored `[out, in]` (torch `nn.Linear` layout). */
function matmulOutIn(x: Matrix, weight: Float32Array, bias: Float32Array | null, inWidth: number, outWidth: number): Matrix {
  return x.map((row) => {
    const out = new Array<number>(outWidth).fill(0);
    for (let o = 0; o < outWidth; o++) {
      let sum = bias === null ? 0 : bias[o];
      for (let c = 0; c < inWidth; c++) sum += row[c] * weight[o * inWidth + c];
      out[o] = sum;
    }
    return out;
  });
}

/** LayerNorm with biased variance. */
function layerNorm(x: Matrix, weight: Float32Array, bias: Float32Array, eps: number): Matrix {
  return x.map((row) => {
    const width = row.length;
    let mean = 0;
    for (const value of row) mean += value;
    mean /= width;
    let variance = 0;
    for (const value of row) variance += (value - mean) ** 2;
    variance /= width;
    const inverseStd = 1 / Math.sqrt(variance + eps);
    return row.map((value, c) => (value - mean) * inverseStd * weight[c] + bias[c]);
  });
}

/** RMSNorm: x / sqrt(mean(x²) + eps) * w. */
function rmsNorm(x: Matrix, weight: Float32Array, eps: number): Matrix {
  return x.map((row) => {
    let meanSquare = 0;
    for (const value of row) meanSquare += value * value;
    meanSquare /= row.length;
    const inverseRms = 1 / Math.sqrt(meanSquare + eps);
    return row.map((value, c) => value * inverseRms * weight[c]);
  });
}

/** GPT-2's tanh approximation of GELU. */
function geluNew(x: number): number {
  return 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x)));
}

function silu(x: number): number {
  return x / (1 + Math.exp(-x));
}

function addInPlace(target: Matrix, other: Matrix): void {
  for (let i = 0; i < target.length; i++) {
    for (let c = 0; c < target[i].length; c++) target[i][c] += other[i][c];
  }
}

/** Splits `[N][numHeads * headDim]` into `[numHeads][N][headDim]`. */
function splitHeads(x: Matrix, numHeads: number, headDim: number): Matrix[] {
  const heads: Matrix[] = [];
  for (let h = 0; h < numHeads; h++) heads.push(x.map((row) => row.slice(h * headDim, (h + 1) * headDim)));
  return heads;
}

/** Applies rotate-half RoPE to one head vector at `position`. */
function rotateHalf(vector: readonly number[], position: number, theta: number): number[] {
  const headDim = vector.length;
  const half = headDim / 2;
  const out = new Array<number>(headDim).fill(0);
  for (let i = 0; i < half; i++) {
    const angle = position * theta ** ((-2 * i) / headDim);
    const cos = Math.cos(angle);
    const sin = Math.sin(angle);
    out[i] = vector[i] * cos - vector[i + half] * sin;
    out[i + half] = vector[i + half] * cos + vector[i] * sin;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Attention with the inducer hook, shared by both families.

interface AttentionInputs {
  /** Queries per query head, `[H][N][d]`, final (after LoRA and rotation). */
  readonly q: Matrix[];
  /** Keys per key/value head, `[KVH][N][d]`. */
  readonly k: Matrix[];
  /** Values per key/value head, `[KVH][N][d]`. */
  readonly v: Matrix[];
}

/** Virtual keys and values per key/value head, `[KVH][P][d]` each, that every query also attends to. */
interface NaivePrefix {
  readonly keys: Matrix[];
  readonly values: Matrix[];
}

/**
 * Returns the merged head outputs `[N][H*d]` and the causal masked scores `[H][N][N]` of the
 * token columns. With a prefix, query i takes one softmax over the P prefix columns and the
 * tokens 0..i.
 */
function causalAttention({ q, k, v }: AttentionInputs, prefix: NaivePrefix | null = null): { merged: Matrix; scores: Matrix[] } {
  const numHeads = q.length;
  const headsPerKv = numHeads / k.length;
  const numTokens = q[0].length;
  const headDim = q[0][0].length;
  const scores: Matrix[] = [];
  const merged: Matrix = [];
  for (let i = 0; i < numTokens; i++) merged.push(new Array<number>(numHeads * headDim).fill(0));

  for (let h = 0; h < numHeads; h++) {
    const kvHead = Math.floor(h / headsPerKv);
    const headScores: Matrix = [];
    for (let i = 0; i < numTokens; i++) {
      const row = new Array<number>(numTokens).fill(-Infinity);
      for (let j = 0; j <= i; j++) {
        let dot = 0;
        for (let c = 0; c < headDim; c++) dot += q[h][i][c] * k[kvHead][j][c];
        row[j] = dot / Math.sqrt(headDim);
      }
      headScores.push(row);

      const prefixKeys = prefix === null ? [] : prefix.keys[kvHead];
      const prefixRow = prefixKeys.map((key) => {
        let dot = 0;
        for (let c = 0; c < headDim; c++) dot += q[h][i][c] * key[c];
        return dot / Math.sqrt(headDim);
      });

      let max = -Infinity;
      for (let j = 0; j <= i; j++) max = Math.max(max, row[j]);
      for (const value of prefixRow) max = Math.max(max, value);
      let sum = 0;
      const weights = row.map((value) => Math.exp(value - max));
      const prefixWeights = prefixRow.map((value) => Math.exp(value - max));
      for (const w of weights) sum += w;
      for (const w of prefixWeights) sum += w;
      for (let j = 0; j <= i; j++) {
        const alpha = weights[j] / sum;
        for (let c = 0; c < headDim; c++) merged[i][h * headDim + c] += alpha * v[kvHead][j][c];
      }
      prefixWeights.forEach((weight, p) => {
        const prefixValue = (prefix as NaivePrefix).values[kvHead][p];
        for (let c = 0; c < headDim; c++) merged[i][h * headDim + c] += (weight / sum) * prefixValue[c];
      });
    }
    scores.push(headScores);
  }
  return { merged, scores };
}

/** Reads one layer's inducer parameters from a module, checking every shape. */
function inducerParams(config: ModelConfig, module: NaiveInducerModule, layer: number): NaiveInducerParams {
  const H = config.numHeads;
  const d = config.headDim;
  const D = config.hiddenSize;
  const { keyRank, valueRank } = module;
  const prefix = `layers.${layer}.inducer`;
  const read = (name: string, shape: readonly number[]): Float32Array =>
    tensorData(module.tensors, `${prefix}.${name}`, shape, 'module');
  const params: NaiveInducerParams = {
    keyRank,
    valueRank,
    valueDown: read('value.down.weight', [H, d, valueRank]),
    valueDownBias: read('value.down.bias', [H, valueRank]),
    valueUp: read('value.up.weight', [H, valueRank, D]),
    valueUpBias: read('value.up.bias', [D]),
  };
  if (keyRank < 2) return params;
  return {
    ...params,
    keyDown: read('key.down.weight', [H, d, keyRank]),
    keyDownBias: read('key.down.bias', [H, keyRank]),
    keyUp: read('key.up.weight', [H, keyRank, d]),
    keyUpBias: read('key.up.bias', [H, d]),
  };
}

/** Adds the module's LoRA-Q correction to `q` (`[N][H*d]`, before any rotation) in place. */
function applyLoraQ(config: ModelConfig, module: NaiveInducerModule, layer: number, attentionInput: Matrix, q: Matrix): void {
  const lora = module.loraQ;
  if (lora === null) return;
  const D = config.hiddenSize;
  const Dq = config.numHeads * config.headDim;
  const prefix = `layers.${layer}.lora_q`;
  const A = tensorData(module.tensors, `${prefix}.A`, [lora.rank, D], 'module');
  const B = tensorData(module.tensors, `${prefix}.B`, [Dq, lora.rank], 'module');
  const bias = lora.bias ? tensorData(module.tensors, `${prefix}.bias`, [Dq], 'module') : null;
  addInPlace(q, naiveLoraQ(attentionInput, A, B, bias, lora.alpha, lora.rank));
}

/** Returns `(alpha / r) (x A^T) B^T`, `[N][out]`, for A `[r, D]` and B `[out, r]`, by plain loops. */
function loraUpdate(x: Matrix, A: Float32Array, B: Float32Array, rank: number, alpha: number, outWidth: number): Matrix {
  const width = x[0].length;
  return x.map((row) => {
    const hidden = new Array<number>(rank).fill(0);
    for (let k = 0; k < rank; k++) {
      for (let c = 0; c < width; c++) hidden[k] += row[c] * A[k * width + c];
    }
    const out = new Array<number>(outWidth).fill(0);
    for (let o = 0; o < outWidth; o++) {
      for (let k = 0; k < rank; k++) out[o] += B[o * rank + k] * hidden[k];
      out[o] *= alpha / rank;
    }
    return out;
  });
}

/**
 * Applies the module's changes to the projections (`[N][width]`, before any rotation) in place:
 * LoRA-Q of an inducer module, or the query and value updates of a LoRA module.
 */
function adaptProjections(config: ModelConfig, module: NaiveModule | null, layer: number, attentionInput: Matrix, q: Matrix, v: Matrix): void {
  if (module === null || module.method === 'prefix') return;
  if (module.method === 'lora') {
    const D = config.hiddenSize;
    const Dq = config.numHeads * config.headDim;
    const Dkv = config.numKeyValueHeads * config.headDim;
    const r = module.rank;
    const read = (name: string, shape: readonly number[]): Float32Array => tensorData(module.tensors, `layers.${layer}.lora.${name}`, shape, 'module');
    addInPlace(q, loraUpdate(attentionInput, read('q.A', [r, D]), read('q.B', [Dq, r]), r, module.alpha, Dq));
    addInPlace(v, loraUpdate(attentionInput, read('v.A', [r, D]), read('v.B', [Dkv, r]), r, module.alpha, Dkv));
    return;
  }
  applyLoraQ(config, module, layer, attentionInput, q);
}

/** Reads one layer's prefix as `[KVH][P][d]` keys and values, or returns null for other modules. */
function prefixOf(config: ModelConfig, module: NaiveModule | null, layer: number): NaivePrefix | null {
  if (module === null || module.method !== 'prefix') return null;
  const KVH = config.numKeyValueHeads;
  const d = config.headDim;
  const P = module.prefixLength;
  const read = (name: string): Matrix[] => {
    const data = tensorData(module.tensors, `layers.${layer}.prefix.${name}`, [KVH, P, d], 'module');
    return Array.from({ length: KVH }, (_, head) => Array.from({ length: P }, (_, p) => Array.from(data.subarray((head * P + p) * d, (head * P + p + 1) * d))));
  };
  return { keys: read('key'), values: read('value') };
}

/** Returns the inducer's output delta `[N][D]`, or null for a module of another method. */
function inducerDelta(config: ModelConfig, module: NaiveModule | null, layer: number, q: Matrix[], scores: Matrix[]): Matrix | null {
  if (module === null || module.method === 'prefix' || module.method === 'lora') return null;
  return naiveInducer(q, scores, inducerParams(config, module, layer)).delta;
}

// ---------------------------------------------------------------------------------------------
// Families.

function gpt2Forward(config: ModelConfig, weights: ReadonlyMap<string, HostTensor>, tokenIds: readonly number[], module: NaiveModule | null): Matrix {
  const D = config.hiddenSize;
  const H = config.numHeads;
  const d = config.headDim;
  const I = config.intermediateSize;
  const V = config.vocabSize;
  const w = (name: string, shape: readonly number[]): Float32Array => tensorData(weights, name, shape, 'model');

  const tokenEmbedding = w('wte.weight', [V, D]);
  const positionEmbedding = w('wpe.weight', [config.maxPositions, D]);
  const x: Matrix = tokenIds.map((token, position) => {
    const row = new Array<number>(D).fill(0);
    for (let c = 0; c < D; c++) row[c] = tokenEmbedding[token * D + c] + positionEmbedding[position * D + c];
    return row;
  });

  for (let layer = 0; layer < config.numLayers; layer++) {
    const p = `h.${layer}`;
    const attentionInput = layerNorm(x, w(`${p}.ln_1.weight`, [D]), w(`${p}.ln_1.bias`, [D]), config.normEps);
    const qkv = matmulInOut(attentionInput, w(`${p}.attn.c_attn.weight`, [D, 3 * D]), w(`${p}.attn.c_attn.bias`, [3 * D]), D, 3 * D);
    const q = qkv.map((row) => row.slice(0, D));
    const k = qkv.map((row) => row.slice(D, 2 * D));
    const v = qkv.map((row) => row.slice(2 * D, 3 * D));
    adaptProjections(config, module, layer, attentionInput, q, v);

    const inputs = { q: splitHeads(q, H, d), k: splitHeads(k, H, d), v: splitHeads(v, H, d) };
    const { merged, scores } = causalAttention(inputs, prefixOf(config, module, layer));
    const attentionOutput = matmulInOut(merged, w(`${p}.attn.c_proj.weight`, [D, D]), w(`${p}.attn.c_proj.bias`, [D]), D, D);
    const delta = inducerDelta(config, module, layer, inputs.q, scores);
    if (delta) addInPlace(attentionOutput, delta);
    addInPlace(x, attentionOutput);

    const mlpInput = layerNorm(x, w(`${p}.ln_2.weight`, [D]), w(`${p}.ln_2.bias`, [D]), config.normEps);
    const hidden = matmulInOut(mlpInput, w(`${p}.mlp.c_fc.weight`, [D, I]), w(`${p}.mlp.c_fc.bias`, [I]), D, I);
    const activated = hidden.map((row) => row.map(geluNew));
    addInPlace(x, matmulInOut(activated, w(`${p}.mlp.c_proj.weight`, [I, D]), w(`${p}.mlp.c_proj.bias`, [D]), I, D));
  }

  const final = layerNorm(x, w('ln_f.weight', [D]), w('ln_f.bias', [D]), config.normEps);
  const head = config.tieWordEmbeddings ? tokenEmbedding : w('lm_head.weight', [V, D]);
  return matmulOutIn(final, head, null, D, V);
}

function llamaForward(config: ModelConfig, weights: ReadonlyMap<string, HostTensor>, tokenIds: readonly number[], module: NaiveModule | null): Matrix {
  const D = config.hiddenSize;
  const H = config.numHeads;
  const KVH = config.numKeyValueHeads;
  const d = config.headDim;
  const I = config.intermediateSize;
  const V = config.vocabSize;
  const Dq = H * d;
  const Dkv = KVH * d;
  const w = (name: string, shape: readonly number[]): Float32Array => tensorData(weights, name, shape, 'model');
  const optional = (present: boolean, name: string, shape: readonly number[]): Float32Array | null =>
    present ? w(name, shape) : null;
  // Hugging Face LlamaAttention gives o_proj a bias when attention_bias is set, but Qwen2's o_proj has none.
  const outputBias = config.attentionBias && config.modelType === 'llama';

  const embedding = w('model.embed_tokens.weight', [V, D]);
  const x: Matrix = tokenIds.map((token) => Array.from(embedding.subarray(token * D, (token + 1) * D)));

  for (let layer = 0; layer < config.numLayers; layer++) {
    const p = `model.layers.${layer}`;
    const attentionInput = rmsNorm(x, w(`${p}.input_layernorm.weight`, [D]), config.normEps);
    const bias = config.attentionBias;
    const q = matmulOutIn(attentionInput, w(`${p}.self_attn.q_proj.weight`, [Dq, D]), optional(bias, `${p}.self_attn.q_proj.bias`, [Dq]), D, Dq);
    const k = matmulOutIn(attentionInput, w(`${p}.self_attn.k_proj.weight`, [Dkv, D]), optional(bias, `${p}.self_attn.k_proj.bias`, [Dkv]), D, Dkv);
    const v = matmulOutIn(attentionInput, w(`${p}.self_attn.v_proj.weight`, [Dkv, D]), optional(bias, `${p}.self_attn.v_proj.bias`, [Dkv]), D, Dkv);
    adaptProjections(config, module, layer, attentionInput, q, v);

    // LoRA corrects the query before the rotation, and the inducer takes the rotated query.
    // Prefix keys are used as stored: they carry no position, so they are not rotated.
    const rotate = (heads: Matrix[]): Matrix[] =>
      heads.map((rows) => rows.map((vector, position) => rotateHalf(vector, position, config.ropeTheta)));
    const inputs = { q: rotate(splitHeads(q, H, d)), k: rotate(splitHeads(k, KVH, d)), v: splitHeads(v, KVH, d) };
    const { merged, scores } = causalAttention(inputs, prefixOf(config, module, layer));
    const attentionOutput = matmulOutIn(merged, w(`${p}.self_attn.o_proj.weight`, [D, Dq]), optional(outputBias, `${p}.self_attn.o_proj.bias`, [D]), Dq, D);
    const delta = inducerDelta(config, module, layer, inputs.q, scores);
    if (delta) addInPlace(attentionOutput, delta);
    addInPlace(x, attentionOutput);

    const mlpInput = rmsNorm(x, w(`${p}.post_attention_layernorm.weight`, [D]), config.normEps);
    const mlpBias = config.mlpBias;
    const gate = matmulOutIn(mlpInput, w(`${p}.mlp.gate_proj.weight`, [I, D]), optional(mlpBias, `${p}.mlp.gate_proj.bias`, [I]), D, I);
    const up = matmulOutIn(mlpInput, w(`${p}.mlp.up_proj.weight`, [I, D]), optional(mlpBias, `${p}.mlp.up_proj.bias`, [I]), D, I);
    const product = gate.map((row, i) => row.map((value, c) => silu(value) * up[i][c]));
    addInPlace(x, matmulOutIn(product, w(`${p}.mlp.down_proj.weight`, [D, I]), optional(mlpBias, `${p}.mlp.down_proj.bias`, [D]), I, D));
  }

  const final = rmsNorm(x, w('model.norm.weight', [D]), config.normEps);
  const head = config.tieWordEmbeddings ? embedding : w('lm_head.weight', [V, D]);
  return matmulOutIn(final, head, null, D, V);
}

// ---------------------------------------------------------------------------------------------
// Public entry points.

/**
 * Computes the logits `[N][V]` of one token sequence at positions 0..N-1 with causal attention
 * and no padding, optionally with a module of any method. Throws {@link NaiveReferenceError} for a
 * missing or misshaped tensor, an out-of-range token id, a sequence longer than the model's
 * context, or a config with rotary scaling (which this reference does not implement).
 */
export function naiveLogits(
  config: ModelConfig,
  weights: ReadonlyMap<string, HostTensor>,
  tokenIds: readonly number[],
  module: NaiveModule | null = null,
): number[][] {
  if (tokenIds.length === 0) throw new NaiveReferenceError('naive decoder: the token sequence is empty; pass at least one token id');
  if (tokenIds.length > config.maxPositions) {
    throw new NaiveReferenceError(
      `naive decoder: sequence of ${tokenIds.length} tokens exceeds the model's maximum of ${config.maxPositions} positions`,
    );
  }
  for (const token of tokenIds) {
    if (!Number.isInteger(token) || token < 0 || token >= config.vocabSize) {
      throw new NaiveReferenceError(`naive decoder: token id ${token} is outside the vocabulary [0, ${config.vocabSize})`);
    }
  }
  if (config.ropeScaling !== null) {
    throw new NaiveReferenceError(
      `naive decoder: rope_scaling type "${config.ropeScaling.type}" is not implemented; use a config without rope_scaling`,
    );
  }
  return config.family === 'gpt2'
    ? gpt2Forward(config, weights, tokenIds, module)
    : llamaForward(config, weights, tokenIds, module);
}

/** Computes the log-softmax of {@link naiveLogits} at every position, `[N][V]`. */
export function naiveLogprobs(
  config: ModelConfig,
  weights: ReadonlyMap<string, HostTensor>,
  tokenIds: readonly number[],
  module: NaiveModule | null = null,
): number[][] {
  return naiveLogits(config, weights, tokenIds, module).map((row) => {
    let max = -Infinity;
    for (const value of row) max = Math.max(max, value);
    let sum = 0;
    for (const value of row) sum += Math.exp(value - max);
    const logNormalizer = max + Math.log(sum);
    return row.map((value) => value - logNormalizer);
  });
}
