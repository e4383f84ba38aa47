/**
 * Random prefix and LoRA modules for tests, with every tensor drawn from N(0, scale²), so that
 * both modules change the model's output (a fresh LoRA module has B = 0 and would not).
 */
import type { ModelConfig } from '../../src/model/config.js';
import { floatTensor, type HostTensor } from '../../src/model/tensor.js';
import { createRng } from '../../src/runtime/rng.js';
import type { NaiveLoraModule, NaivePrefixModule } from '../reference/naive-decoder.js';

function randomTensors(shapes: ReadonlyMap<string, number[]>, seed: number, scale: number): Map<string, HostTensor> {
  const rng = createRng(seed);
  const tensors = new Map<string, HostTensor>();
  for (const [name, shape] of shapes) {
    const tensor = floatTensor(shape);
    for (let i = 0; i < tensor.data.length; i++) tensor.data[i] = rng.nextNormal() * scale;
    tensors.set(name, tensor);
  }
  return tensors;
}

/** A prefix module of `prefixLength` virtual tokens; the shapes are written out here, independent of `prefixTensorShapes`. */
export function randomPrefixModule(config: ModelConfig, prefixLength: number, seed: number, scale = 1): NaivePrefixModule {
  const shapes = new Map<string, number[]>();
  for (let layer = 0; layer < config.numLayers; layer++) {
    shapes.set(`layers.${layer}.prefix.key`, [config.numKeyValueHeads, prefixLength, config.headDim]);
    shapes.set(`layers.${layer}.prefix.value`, [config.numKeyValueHeads, prefixLength, config.headDim]);
  }
  return { method: 'prefix', prefixLength, tensors: randomTensors(shapes, seed, scale) };
}

/** A LoRA module with random A and B; the shapes are written out here, independent of `loraTensorShapes`. */
export function randomLoraModule(config: ModelConfig, rank: number, alpha: number, seed: number, scale = 0.3): NaiveLoraModule {
  const { hiddenSize: D, numHeads: H, numKeyValueHeads: KVH, headDim: d } = config;
  const shapes = new Map<string, number[]>();
  for (let layer = 0; layer < config.numLayers; layer++) {
    shapes.set(`layers.${layer}.lora.q.A`, [rank, D]);
    shapes.set(`layers.${layer}.lora.q.B`, [H * d, rank]);
    shapes.set(`layers.${layer}.lora.v.A`, [rank, D]);
    shapes.set(`layers.${layer}.lora.v.B`, [KVH * d, rank]);
  }
  return { method: 'lora', rank, alpha, tensors: randomTensors(shapes, seed, scale) };
}
