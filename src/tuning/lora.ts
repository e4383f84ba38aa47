/**
 * LoRA on the query and value projections, in the convention of Hugging Face PEFT.
 *
 * Method: E. J. Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022
 * (arXiv 2106.09685). For a frozen projection W, the tuned projection is
 * `W x + (alpha / r) B A x` with A `[r, D]` and B `[D_out, r]`. PEFT initialises A with PyTorch's
 * Kaiming-uniform (a = sqrt(5)), which on an `[r, D]` tensor is U(-1/sqrt(D), 1/sqrt(D)), and B
 * with zeros, so a fresh module equals the frozen model. On GPT-2 the targets are the query and
 * value slices of the fused `c_attn` projection.
 * @module
 */
import type { GraphBuilder } from '../graph/builder.js';
import type { Value } from '../graph/ir.js';
import type { ModelConfig } from '../model/config.js';
import { floatTensor, type HostTensor } from '../model/tensor.js';
import { createRng } from '../runtime/rng.js';

/** Projections that LoRA modules of this program adapt: always the query and the value projection. */
export const LORA_TARGET_MODULES = ['q', 'v'] as const;

/** Settings of one LoRA module. */
export interface LoraSettings {
  readonly method: 'lora';
  /** Rank r of both updates (integer >= 1). */
  readonly rank: number;
  /** Scale numerator: the updates are multiplied by alpha / rank (finite, > 0). */
  readonly alpha: number;
}

/** Model dimensions that determine the LoRA tensor shapes. */
export type LoraModelDims = Pick<ModelConfig, 'hiddenSize' | 'numLayers' | 'numHeads' | 'numKeyValueHeads' | 'headDim'>;

/** Error for invalid LoRA settings; the message names the field. */
export class LoraSettingsError extends Error {
  override readonly name = 'LoraSettingsError';
}

/** Throws {@link LoraSettingsError} naming the first invalid field. */
export function validateLoraSettings(settings: LoraSettings): void {
  if (!Number.isSafeInteger(settings.rank) || settings.rank < 1) {
    throw new LoraSettingsError(`invalid rank ${settings.rank}: expected an integer >= 1`);
  }
  if (!Number.isFinite(settings.alpha) || settings.alpha <= 0) {
    throw new LoraSettingsError(`invalid alpha ${settings.alpha}: expected a finite number > 0`);
  }
}

/**
 * Lists the tensors of a LoRA module with their shapes, layer by layer: `layers.{i}.lora.q.A`
 * `[r, D]`, `layers.{i}.lora.q.B` `[H*d, r]`, `layers.{i}.lora.v.A` `[r, D]` and
 * `layers.{i}.lora.v.B` `[KVH*d, r]`.
 */
export function loraTensorShapes(dims: LoraModelDims, settings: LoraSettings): Map<string, number[]> {
  validateLoraSettings(settings);
  const { hiddenSize: D, numHeads: H, numKeyValueHeads: KVH, headDim: d } = dims;
  const r = settings.rank;
  const shapes = new Map<string, number[]>();
  for (let layer = 0; layer < dims.numLayers; layer++) {
    shapes.set(`layers.${layer}.lora.q.A`, [r, D]);
    shapes.set(`layers.${layer}.lora.q.B`, [H * d, r]);
    shapes.set(`layers.${layer}.lora.v.A`, [r, D]);
    shapes.set(`layers.${layer}.lora.v.B`, [KVH * d, r]);
  }
  return shapes;
}

/**
 * Creates the tensors of a fresh LoRA module, in the order of {@link loraTensorShapes}: every A
 * from U(-1/sqrt(D), 1/sqrt(D)) and every B zero. Equal arguments give equal tensors.
 */
export function initLoraTensors(dims: LoraModelDims, settings: LoraSettings, seed: number): Map<string, HostTensor> {
  const rng = createRng(seed);
  const bound = 1 / Math.sqrt(dims.hiddenSize);
  const tensors = new Map<string, HostTensor>();
  for (const [name, shape] of loraTensorShapes(dims, settings)) {
    const tensor = floatTensor(shape);
    if (name.endsWith('.A')) {
      for (let i = 0; i < tensor.data.length; i++) tensor.data[i] = (2 * rng.nextFloat() - 1) * bound;
    }
    tensors.set(name, tensor);
  }
  return tensors;
}

/**
 * Computes `scale * (x A^T) B^T`, `[B, N, out]`, for per-row A `[B, r, D]`, B `[B, out, r]` and
 * scale `[B]`. In training, `inputDropoutMask` `[B, N, D]` (0 or 1/(1-p)) multiplies x first.
 */
export function loraDelta(b: GraphBuilder, x: Value, down: Value, up: Value, scale: Value, inputDropoutMask?: Value): Value {
  const input = inputDropoutMask ? b.mul(x, inputDropoutMask) : x;
  const hidden = b.matMul(input, b.transpose(down, [0, 2, 1])); // [B, N, r]
  const delta = b.matMul(hidden, b.transpose(up, [0, 2, 1])); // [B, N, out]
  return b.mul(delta, b.reshape(scale, [-1, 1, 1])); // [B, 1, 1] scale per row
}
