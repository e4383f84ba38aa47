/**
 * Prefix-tuning parameters and its attention hook.
 *
 * Method: X. L. Li and P. Liang, "Prefix-Tuning: Optimizing Continuous Prompts for Generation",
 * ACL 2021 (arXiv 2101.00190). Every layer gets P trainable key rows and P value rows per
 * key/value head, prepended to that head's keys and values, so each query takes one softmax over
 * P + M columns. The virtual keys carry no position: on Llama-family models they are not rotated.
 * The prefix is trained directly, without the reparameterisation MLP of the paper.
 * @module
 */
import type { GraphBuilder } from '../graph/builder.js';
import type { Value } from '../graph/ir.js';
import type { ModelConfig } from '../model/config.js';
import { floatTensor, type HostTensor } from '../model/tensor.js';
import { createRng } from '../runtime/rng.js';

/** Settings of one prefix-tuning module. */
export interface PrefixSettings {
  readonly method: 'prefix';
  /** Virtual tokens P per layer (integer >= 1). */
  readonly prefixLength: number;
}

/** Model dimensions that determine the prefix tensor shapes. */
export type PrefixModelDims = Pick<ModelConfig, 'numLayers' | 'numKeyValueHeads' | 'headDim'>;

/** Error for invalid prefix-tuning settings; the message names the field. */
export class PrefixSettingsError extends Error {
  override readonly name = 'PrefixSettingsError';
}

/** Standard deviation of the normal distribution that fresh prefix keys and values are drawn from. */
export const PREFIX_INIT_STD = 0.02;

/** Throws {@link PrefixSettingsError} when `prefixLength` is not an integer >= 1. */
export function validatePrefixSettings(settings: PrefixSettings): void {
  if (!Number.isSafeInteger(settings.prefixLength) || settings.prefixLength < 1) {
    throw new PrefixSettingsError(`invalid prefixLength ${settings.prefixLength}: expected an integer >= 1`);
  }
}

/**
 * Lists the tensors of a prefix module with their shapes, layer by layer:
 * `layers.{i}.prefix.key` and `layers.{i}.prefix.value`, each `[KVH, P, d]`.
 */
export function prefixTensorShapes(dims: PrefixModelDims, settings: PrefixSettings): Map<string, number[]> {
  validatePrefixSettings(settings);
  const shape = [dims.numKeyValueHeads, settings.prefixLength, dims.headDim];
  const shapes = new Map<string, number[]>();
  for (let layer = 0; layer < dims.numLayers; layer++) {
    shapes.set(`layers.${layer}.prefix.key`, [...shape]);
    shapes.set(`layers.${layer}.prefix.value`, [...shape]);
  }
  return shapes;
}

/**
 * Creates the tensors of a fresh prefix module, in the order of {@link prefixTensorShapes}: every
 * value is drawn from N(0, 0.02²). Equal arguments give equal tensors.
 */
export function initPrefixTensors(dims: PrefixModelDims, settings: PrefixSettings, seed: number): Map<string, HostTensor> {
  const rng = createRng(seed);
  const tensors = new Map<string, HostTensor>();
  for (const [name, shape] of prefixTensorShapes(dims, settings)) {
    const tensor = floatTensor(shape);
    for (let i = 0; i < tensor.data.length; i++) tensor.data[i] = rng.nextNormal() * PREFIX_INIT_STD;
    tensors.set(name, tensor);
  }
  return tensors;
}

/** One layer's prefix for every batch row, gathered by slot. */
export interface LayerPrefix {
  /** [B, KVH, P, d] */
  readonly key: Value;
  /** [B, KVH, P, d] */
  readonly value: Value;
  /** [B, P]: 1 for a real prefix column of the row's module, 0 for padding or a module without a prefix. */
  readonly mask: Value;
}

/**
 * Computes the masked attention logits of the prefix columns, `[B, KVH, (G,) N, P]` like
 * `query` `[B, KVH, (G,) N, d]`. A column whose mask is 0 gets `maskedLogit` in place of its
 * logit, so no gradient reaches its key. With `maskedLogit` below the token columns' mask logit,
 * the column gets softmax weight 0 even in a row whose token columns are all masked.
 */
export function prefixScores(b: GraphBuilder, query: Value, prefix: LayerPrefix, grouped: boolean, scale: number, maskedLogit: number): Value {
  const keysT = b.transpose(prefix.key, [0, 1, 3, 2]); // [B, KVH, d, P]
  const keysForGroups = grouped ? b.unsqueeze(keysT, [2]) : keysT; // [B, KVH, (1,) d, P]
  const scores = b.mul(b.matMul(query, keysForGroups), b.constFloat([scale], [])); // [B, KVH, (G,) N, P]
  const visible = b.equal(prefix.mask, b.constFloat([1], [])); // [B, P]
  const visibleShape = grouped ? [0, 1, 1, 1, -1] : [0, 1, 1, -1];
  return b.where(b.reshape(visible, visibleShape), scores, b.constFloat([maskedLogit], [])); // broadcast over KVH, (G,) N
}
