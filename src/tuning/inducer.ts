/**
 * Inducer-tuning parameters: hyper-parameters, tensor names and shapes, parameter counts and the
 * initialisation of a fresh module.
 *
 * Method: Y. Chen et al., "Inducer-tuning: Connecting Prefix-tuning and Adapter-tuning",
 * EMNLP 2022 (arXiv 2210.14469); initialisation as in the official code
 * (github.com/ychen-stat-ml/kernel-adapters). Per layer and query head h, with q the head's query
 * after LoRA-Q and rotary embedding (row-vector convention):
 *
 *   key inducer    p_k = q + tanh(q A_k[h] + a_k[h]) B_k[h] + b_k[h]      (only when keyRank >= 2)
 *   value path     Δ   = Σ_h λ_h tanh(q A_v[h] + a_v[h]) B_v[h] + b_v   (added after the output projection)
 *   LoRA-Q         ΔQ  = (alpha / rank) ((x L_A^T) L_B^T + ℓ_b)
 * @module
 */
import type { ModelConfig } from '../model/config.js';
import { floatTensor, type HostTensor } from '../model/tensor.js';
import { createRng, type Rng } from '../runtime/rng.js';
import { loraTensorShapes, type LoraSettings } from './lora.js';
import { prefixTensorShapes, type PrefixSettings } from './prefix.js';

/** LoRA on the query projection. */
export interface LoraQSettings {
  /** Rank r of the low-rank update (integer >= 1). */
  rank: number;
  /** Scale numerator: the update is multiplied by alpha / rank (finite, > 0). */
  alpha: number;
  /** Whether the update has a trainable bias ℓ_b of width D_q. */
  bias: boolean;
}

/** Hyper-parameters of one inducer-tuning module. */
export interface InducerHyperParams {
  /** Absent or 'inducer'; it distinguishes inducer settings from the other methods' settings. */
  readonly method?: 'inducer';
  /** Width r_k of the key MLP. 0 and 1 mean no key MLP (p_k = q); >= 2 adds it. */
  keyRank: number;
  /** Width r_v of the value MLP (integer >= 1). */
  valueRank: number;
  /** LoRA on the query projection, or null for none. */
  loraQ: LoraQSettings | null;
}

/** Model dimensions that determine the tensor shapes; a {@link ModelConfig} has them all. */
export type InducerModelDims = Pick<ModelConfig, 'hiddenSize' | 'numLayers' | 'numHeads' | 'headDim'>;

/** Initialisation of a fresh module: the official code's ('default'), or with B_v and b_v at zero. */
export type InducerInit = 'default' | 'zero-value';

/** Error for invalid inducer hyper-parameters; the message names the field. */
export class InducerHyperParamsError extends Error {
  override readonly name = 'InducerHyperParamsError';
}

/** Scale of the wrapped normal: fmod(z, 2) * 0.01 lies within [-0.02, 0.02]. */
const WRAPPED_NORMAL_SCALE = 0.01;

function requireInteger(field: string, value: number, minimum: number): void {
  if (!Number.isSafeInteger(value) || value < minimum) {
    throw new InducerHyperParamsError(`invalid ${field} ${value}: expected an integer >= ${minimum}`);
  }
}

/** Throws {@link InducerHyperParamsError} naming the first invalid field of `hp`. */
export function validateInducerHyperParams(hp: InducerHyperParams): void {
  requireInteger('keyRank', hp.keyRank, 0);
  requireInteger('valueRank', hp.valueRank, 1);
  if (hp.loraQ === null) return;
  requireInteger('loraQ.rank', hp.loraQ.rank, 1);
  if (!Number.isFinite(hp.loraQ.alpha) || hp.loraQ.alpha <= 0) {
    throw new InducerHyperParamsError(`invalid loraQ.alpha ${hp.loraQ.alpha}: expected a finite number > 0`);
  }
  if (typeof hp.loraQ.bias !== 'boolean') {
    throw new InducerHyperParamsError(`invalid loraQ.bias ${String(hp.loraQ.bias)}: expected true or false`);
  }
}

/** Returns whether modules with this key rank have the key MLP. */
export function hasKeyMlp(keyRank: number): boolean {
  return keyRank >= 2;
}

/**
 * Lists every tensor of a module with these settings, with its shape, for all layers: layer by
 * layer, and inside a layer key MLP, value MLP, then LoRA-Q (down before up, weight before bias).
 * Names are `layers.{i}.inducer.key.down.weight` and so on. Throws
 * {@link InducerHyperParamsError} for invalid hyper-parameters.
 */
export function inducerTensorShapes(dims: InducerModelDims, hp: InducerHyperParams): Map<string, number[]>;
/**
 * Lists the tensors of a module of any method: the overload dispatches prefix and LoRA settings
 * to `prefixTensorShapes` and `loraTensorShapes`.
 * NOTE: it exists for callers written before the other methods; new code calls
 * `moduleTensorShapes` from `method.ts`.
 */
export function inducerTensorShapes(
  dims: InducerModelDims & Pick<ModelConfig, 'numKeyValueHeads'>,
  settings: InducerHyperParams | PrefixSettings | LoraSettings,
): Map<string, number[]>;
export function inducerTensorShapes(
  dims: InducerModelDims & Partial<Pick<ModelConfig, 'numKeyValueHeads'>>,
  settings: InducerHyperParams | PrefixSettings | LoraSettings,
): Map<string, number[]> {
  if (settings.method === 'prefix' || settings.method === 'lora') {
    const withKeyValueHeads = { ...dims, numKeyValueHeads: dims.numKeyValueHeads ?? dims.numHeads };
    return settings.method === 'prefix' ? prefixTensorShapes(withKeyValueHeads, settings) : loraTensorShapes(withKeyValueHeads, settings);
  }
  const hp = settings;
  validateInducerHyperParams(hp);
  const { hiddenSize: D, numHeads: H, headDim: d } = dims;
  const queryWidth = H * d; // D_q; differs from D on some Llama-family models
  const shapes = new Map<string, number[]>();
  for (let layer = 0; layer < dims.numLayers; layer++) {
    const prefix = `layers.${layer}`;
    if (hasKeyMlp(hp.keyRank)) {
      const rk = hp.keyRank;
      shapes.set(`${prefix}.inducer.key.down.weight`, [H, d, rk]); // A_k
      shapes.set(`${prefix}.inducer.key.down.bias`, [H, rk]); // a_k
      shapes.set(`${prefix}.inducer.key.up.weight`, [H, rk, d]); // B_k
      shapes.set(`${prefix}.inducer.key.up.bias`, [H, d]); // b_k
    }
    const rv = hp.valueRank;
    shapes.set(`${prefix}.inducer.value.down.weight`, [H, d, rv]); // A_v
    shapes.set(`${prefix}.inducer.value.down.bias`, [H, rv]); // a_v
    shapes.set(`${prefix}.inducer.value.up.weight`, [H, rv, D]); // B_v
    shapes.set(`${prefix}.inducer.value.up.bias`, [D]); // b_v
    if (hp.loraQ !== null) {
      const r = hp.loraQ.rank;
      shapes.set(`${prefix}.lora_q.A`, [r, D]); // L_A
      shapes.set(`${prefix}.lora_q.B`, [queryWidth, r]); // L_B
      if (hp.loraQ.bias) shapes.set(`${prefix}.lora_q.bias`, [queryWidth]); // ℓ_b
    }
  }
  return shapes;
}

/** Counts the trainable parameters of a module with these settings, all layers together. */
export function inducerParameterCount(dims: InducerModelDims, hp: InducerHyperParams): number {
  let count = 0;
  for (const shape of inducerTensorShapes(dims, hp).values()) {
    count += shape.reduce((product, size) => product * size, 1);
  }
  return count;
}

/** Fills `values` with fmod(z, 2) * 0.01, z ~ N(0, 1); the remainder keeps the sign of z, as C's fmod does. */
function fillWrappedNormal(values: Float32Array, rng: Rng): void {
  for (let i = 0; i < values.length; i++) values[i] = (rng.nextNormal() % 2) * WRAPPED_NORMAL_SCALE;
}

/** Fills `values` from U(-bound, bound). */
function fillUniform(values: Float32Array, rng: Rng, bound: number): void {
  for (let i = 0; i < values.length; i++) values[i] = (2 * rng.nextFloat() - 1) * bound;
}

/**
 * Creates the parameters of a fresh module, in the order of {@link inducerTensorShapes}.
 *
 * Every inducer tensor is fmod(z, 2) * 0.01 with z ~ N(0, 1), so values lie within
 * [-0.02, 0.02] with a standard deviation of about 0.0087. LoRA's L_A is drawn from
 * U(-1/sqrt(D), 1/sqrt(D)), which is PyTorch's Kaiming-uniform init with a = sqrt(5) on an
 * [r, D] tensor; L_B and ℓ_b are zero, so LoRA-Q starts as a no-op. 'zero-value' then sets
 * `value.up.weight` and `value.up.bias` to zero, which makes the untrained module reproduce the
 * frozen model exactly. All other tensors equal the 'default' ones for the same seed.
 * Equal arguments give equal tensors.
 */
export function initInducerTensors(
  dims: InducerModelDims,
  hp: InducerHyperParams,
  init: InducerInit,
  seed: number,
): Map<string, HostTensor> {
  if (init !== 'default' && init !== 'zero-value') {
    throw new InducerHyperParamsError(`invalid init "${String(init)}": expected "default" or "zero-value"`);
  }
  const shapes = inducerTensorShapes(dims, hp);
  const rng = createRng(seed);
  const loraABound = 1 / Math.sqrt(dims.hiddenSize);
  const tensors = new Map<string, HostTensor>();
  for (const [name, shape] of shapes) {
    const tensor = floatTensor(shape);
    const values = tensor.data;
    if (name.includes('.inducer.')) fillWrappedNormal(values, rng);
    else if (name.endsWith('.lora_q.A')) fillUniform(values, rng, loraABound);
    // lora_q.B and lora_q.bias stay zero.

    // Draw before zeroing so that the other tensors match the 'default' init of the same seed.
    if (init === 'zero-value' && (name.endsWith('.inducer.value.up.weight') || name.endsWith('.inducer.value.up.bias'))) {
      values.fill(0);
    }
    tensors.set(name, tensor);
  }
  return tensors;
}
