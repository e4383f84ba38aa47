/**
 * Random checkpoints for benchmarks: speed does not depend on the weight values, so a model of a
 * real model's size can be measured without its weights.
 * @module
 */
import { expectedTensorShapes } from '../src/model/checkpoint.js';
import type { ModelConfig } from '../src/model/config.js';
import { floatTensor, type HostTensor } from '../src/model/tensor.js';

/** GPT-2 small's dimensions (124M parameters). */
export const GPT2_SMALL_CONFIG = { model_type: 'gpt2', vocab_size: 50257, n_embd: 768, n_layer: 12, n_head: 12, n_positions: 1024 };

/** Creates uniform weights with a standard deviation of about 0.02 (GPT-2's initialisation scale), and norm weights of 1. */
export function randomWeights(config: ModelConfig, seed: number): Map<string, HostTensor> {
  let state = seed >>> 0;
  const weights = new Map<string, HostTensor>();
  for (const [name, shape] of expectedTensorShapes(config)) {
    const t = floatTensor(shape);
    const isNormWeight = /ln_\d\.weight|ln_f\.weight|norm\.weight|layernorm\.weight/.test(name);
    for (let i = 0; i < t.data.length; i++) {
      state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
      const uniform = state / 2 ** 32 - 0.5; // standard deviation 0.289
      t.data[i] = isNormWeight ? 1 : uniform * 0.07;
    }
    weights.set(name, t);
  }
  return weights;
}
